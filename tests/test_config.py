"""Settings declared once: the generated commands have one option per config field, every flag of before the generation
still exists, and a run's config resolves as defaults < --config YAML < flags given on the command line."""

import dataclasses
import re

import pytest
import typer
from typer.testing import CliRunner

import rewardlab.rl.ppo
import rewardlab.train_rm
from rewardlab.choices import AGGREGATES
from rewardlab.cli import app
from rewardlab.config import DEFAULT_LORA_TARGETS, BatchingSpec, LoraSpec, RunSpec
from rewardlab.rl.bon import BonConfig
from rewardlab.rl.ppo_config import PPOConfig
from rewardlab.train_rm import RewardTrainingConfig

runner = CliRunner()
CONFIGS = {"train-rm": RewardTrainingConfig, "ppo": PPOConfig, "bon": BonConfig}

# Every option string of these commands before they were generated from the dataclasses (`rewardlab CMD --help` at
# 8f8206e); each must still parse.
FLAGS_BEFORE = {
    "train-rm": "--alpha --attention --batch-size --beta --bf16 --center-rewards-coefficient --config --device "
    "--early-stopping-patience --ensemble-aggregate --ensemble-size --epochs --eval-data --eval-steps --format "
    "--freeze-backbone --grad-accum --gradient-checkpointing --group-by-length --head --head-dropout --label-smoothing "
    "--logging-steps --logprob-backend --logprob-chunk-size --lora --lora-alpha --lora-dropout --lora-r --loss --lr "
    "--max-length --max-steps --model --no-bf16 --no-gradient-checkpointing --no-group-by-length --no-lora "
    "--no-padding-free --no-progress --output-dir --padding-free --pairs --progress --reg --report-to --resume "
    "--save-steps --seed --select-best-on --skip-invalid --train-data --truncation --warmup-ratio",
    "ppo": "--adaptive-kl --algo --batch-size --beta-c --bf16 --config --critic-init --critic-lr --device --fixed-kl "
    "--gamma --gold --kl-coef --kl-estimator --kl-target --lam --limit --lora --lora-alpha --lora-r --lr "
    "--max-new-tokens --minibatch-size --missing-eos-penalty --no-bf16 --no-lora --no-normalize-reward --no-progress "
    "--no-whiten-advantages --normalize-reward --output --policy --ppo-epochs --progress --prompts "
    "--reinforce-baseline --reward-model --reward-shaping --rloo-k --seed --steps --temperature --top-p --vf-coef "
    "--whiten-advantages",
    "bon": "--batch-size --device --dtype --gold --limit --max-new-tokens --n --no-progress --output --policy --progress "
    "--prompts --proxy --samples --score-batch-size --seed --temperature --top-p --unbiased",
}


def click_command(name: str):
    return typer.main.get_command(app).commands[name]


def options(name: str) -> dict[str, object]:
    return {p.name: p for p in click_command(name).params if p.name not in ("help", "config")}


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_one_option_per_field_and_every_old_flag_kept(command):
    params = options(command)
    assert set(params) == {f.name for f in dataclasses.fields(CONFIGS[command])}
    flags = {flag for p in click_command(command).params for flag in (*p.opts, *p.secondary_opts)}
    missing = set(FLAGS_BEFORE[command].split()) - flags
    assert not missing, f"{command} lost {sorted(missing)}"


def test_flags_that_differ_from_field_names():
    rm, ppo, bon = options("train-rm"), options("ppo"), options("bon")
    assert rm["learning_rate"].opts == ["--lr"] and rm["per_device_train_batch_size"].opts == ["--batch-size"]
    assert rm["num_train_epochs"].opts == ["--epochs"] and rm["gradient_accumulation_steps"].opts == ["--grad-accum"]
    assert rm["skip_invalid"].secondary_opts == [] and rm["lora"].secondary_opts == ["--no-lora"]
    assert ppo["output_dir"].opts == ["--output"] and ppo["adaptive_kl"].secondary_opts == ["--fixed-kl"]
    assert bon["proxies"].opts == ["--proxy"] and bon["proxies"].required and bon["output_dir"].required


@pytest.mark.parametrize("command", ["train-rm", "ppo"])
def test_every_option_has_help_and_help_defaults_match_the_fields(command):
    """The help texts state defaults by hand ("(default 1e-5)"): each stated number must be the field's default."""
    for f in dataclasses.fields(CONFIGS[command]):
        text = f.metadata.get("help")
        assert text, f"{command}: --{f.name} has no help"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        stated = re.search(r"(?:[Dd]efault:? |\()([-+]?\d[\d.e+-]*)(?=[);:. ]|$)", text)
        if stated and isinstance(default, int | float) and not isinstance(default, bool):
            assert float(stated.group(1)) == pytest.approx(default), (command, f.name, text)
        if isinstance(default, bool) and re.search(r"default (on|off)", text):
            assert ("default on" in text) == default, (command, f.name, text)


def test_shared_defaults_are_declared_once():
    assert RewardTrainingConfig().lora_target_modules == DEFAULT_LORA_TARGETS == PPOConfig().lora_target_modules
    assert RewardTrainingConfig().lora_target_modules is not RewardTrainingConfig().lora_target_modules  # not shared
    assert issubclass(RewardTrainingConfig, RunSpec) and issubclass(PPOConfig, RunSpec) and issubclass(PPOConfig, LoraSpec)
    assert (RewardTrainingConfig().seed, PPOConfig().seed) == (42, 0)  # restated defaults stay per config
    assert (RewardTrainingConfig().lora_dropout, PPOConfig().lora_dropout) == (0.05, 0.0)
    eval_rm = {p.name: p for p in click_command("eval-rm").params}
    assert eval_rm["max_length"].default == BatchingSpec.max_length == RewardTrainingConfig().max_length
    for command in ("eval-rm", "diagnose", "score", "serve"):
        help_text = {p.name: p for p in click_command(command).params}["aggregate"].help
        assert " | ".join(AGGREGATES) in help_text, command
    assert (
        " | ".join(AGGREGATES).split(" | ")[0] in RewardTrainingConfig.__dataclass_fields__["ensemble_aggregate"].metadata["help"]
    )


@pytest.fixture
def captured(monkeypatch):
    """Run the real train-rm and ppo commands up to the trainer, which records the config it was given."""
    seen = []

    def fake_train_reward_model(cfg):
        seen.append(cfg)
        return {"eval": {}, "train": {}}

    def fake_train_ppo(cfg):
        seen.append(cfg)
        point = {"proxy_reward": 0.0, "kl": 0.0}
        return {"initial": point, "final": point, "steps": 0}

    monkeypatch.setattr(rewardlab.train_rm, "train_reward_model", fake_train_reward_model)
    monkeypatch.setattr(rewardlab.rl.ppo, "train_ppo", fake_train_ppo)
    return seen


def test_flags_override_yaml_override_defaults(captured, tmp_path):
    config = tmp_path / "rm.yaml"
    config.write_text("train_data: a.jsonl\nlearning_rate: 0.003\nseed: 7\ngroup_by_length: false\nprogress: false\n")
    result = runner.invoke(
        app, ["train-rm", "--config", str(config), "--lr", "0.5", "--group-by-length", "--eval-data", "x=a", "--eval-data", "y=b"]
    )
    assert result.exit_code == 0, result.output
    cfg = captured[-1]
    assert isinstance(cfg, RewardTrainingConfig)
    assert cfg.learning_rate == 0.5 and cfg.group_by_length is True  # flags over the file
    assert cfg.seed == 7 and cfg.progress is False and cfg.train_data == "a.jsonl"  # the file over the defaults
    assert cfg.reg == "none" and cfg.max_length == 1024 and cfg.output_dir == "runs/reward-model"  # defaults
    assert cfg.eval_data == ["x=a", "y=b"]


def test_ppo_flags_and_yaml_reach_the_config(captured, tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text("reward_model: rm\nlr: 0.001\nkl_coef: 0.2\nclip_range: 0.1\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["ppo", "--config", str(config), "--kl-coef", "0.3", "--output", str(out), "--fixed-kl"])
    assert result.exit_code == 0, result.output
    cfg = captured[-1]
    assert isinstance(cfg, PPOConfig) and cfg.output_dir == str(out)
    assert (cfg.lr, cfg.kl_coef, cfg.clip_range, cfg.adaptive_kl, cfg.steps) == (0.001, 0.3, 0.1, False, 100)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("reg: sft\nlearning_rat: 0.1\n", ":2: unknown config keys: learning_rat (not RewardTrainingConfig fields)"),
        ("- a\n- b\n", "expected a mapping of RewardTrainingConfig fields"),
        ("reg: [unclosed\n", "not valid YAML"),
    ],
    ids=["unknown-key", "not-a-mapping", "bad-yaml"],
)
def test_bad_config_files_are_one_line_errors(captured, tmp_path, text, expected):
    config = tmp_path / "rm.yaml"
    config.write_text(text)
    result = runner.invoke(app, ["train-rm", "--config", str(config), "--train-data", "a.jsonl"])
    assert result.exit_code == 1 and not captured
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}") and expected in lines[0], result.output


def test_missing_or_empty_config_file_and_unknown_key_in_python(captured, tmp_path):
    result = runner.invoke(app, ["ppo", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "no such config file" in result.output and not captured
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    result = runner.invoke(app, ["ppo", "--config", str(tmp_path / "empty.yaml"), "--reward-model", "rm"])
    assert result.exit_code == 0, result.output
    assert dataclasses.asdict(captured[-1]) == dataclasses.asdict(PPOConfig(reward_model="rm"))
    with pytest.raises(ValueError, match="unknown config keys: bogus"):
        PPOConfig.from_dict({"bogus": 1})


def test_bon_proxies_are_parsed_and_duplicates_refused(monkeypatch, tmp_path):
    import rewardlab.rl.bon

    seen = []
    monkeypatch.setattr(rewardlab.rl.bon, "run_bon", lambda cfg: seen.append(cfg) or {"curves": {}})
    ok = runner.invoke(app, ["bon", "--proxy", "a=x", "--proxy", "b=y", "--output", str(tmp_path), "--n", "4"])
    assert ok.exit_code == 0, ok.output
    assert seen[-1].proxies == {"a": "x", "b": "y"} and seen[-1].n == 4 and seen[-1].top_p == 0.95
    assert seen[-1].output_dir == str(tmp_path)
    duplicate = runner.invoke(app, ["bon", "--proxy", "a=x", "--proxy", "a=y", "--output", str(tmp_path)])
    assert duplicate.exit_code == 1 and "duplicate name 'a'" in duplicate.output and len(seen) == 1


def test_help_panels_follow_the_declaring_spec_class():
    from rewardlab.config import EvaluationSpec, OptimisationSpec, RewardDataSpec, RewardModelSpec, TrackingSpec, help_panel

    rm = rewardlab.train_rm.RewardTrainingConfig
    specs = (RewardDataSpec, RewardModelSpec, LoraSpec, BatchingSpec, OptimisationSpec, EvaluationSpec, RunSpec, TrackingSpec)
    for spec in specs:
        for f in dataclasses.fields(spec):
            assert help_panel(rm, f.name) == spec.help_panel, (spec.__name__, f.name)
    assert help_panel(rm, "output_dir") == "Run" and help_panel(rm, "lora_r") == "Model"  # restated / inherited mixin fields


@pytest.mark.parametrize("cls", [PPOConfig, BonConfig])
def test_a_configs_own_panels_name_each_of_its_own_fields_once(cls):
    listed = [name for names in cls.help_panels.values() for name in names]
    own = set(cls.__annotations__) - {"help_panels"}
    assert sorted(listed) == sorted(set(listed)) and set(listed) == own


# ----------------------------------------------------------------------------------------------------------------------
# every command generated from a config; choice lists from one Literal

# The options of the commands written by hand before they were generated (`rewardlab CMD --help` at fe158da): each must
# still parse, with the same defaults (checked by hand against that commit's click parameters when they were generated).
GENERATED_FLAGS_BEFORE = {
    ("eval-rm",): "--aggregate --batch-size --data --device --dtype --format --max-length --model --no-progress --output "
    "--overwrite --progress --scores --skip-invalid --truncation",
    ("compare",): "--batch-size --data --dataset --device --dtype --format --level --max-length --no-progress --output "
    "--progress --resamples --seed --truncation",
    ("diagnose",): "--aggregate --batch-size --data --device --dtype --format --max-length --model --no-progress --output "
    "--overwrite --pairs --progress --seed --skip-invalid --truncation",
    ("export",): "--device --model --normalize --output --overwrite",
    ("doctor",): "--batch-size --data --device --format --limit --max-length --output",
    ("score",): "--abc-beta --aggregate --batch-size --beta-c --data --device --dtype --html --limit --max-length --model "
    "--no-progress --normalize --output --overwrite --progress --skip-invalid --token-rewards",
    ("serve",): "--abc-beta --aggregate --api-key --beta-c --device --dtype --host --log-level --max-batch-size "
    "--max-body-bytes --max-length --model --normalize --port",
    ("demo",): "--no-progress --output --overwrite --progress --quick --report-to --seeds --workers --world",
    ("data", "easy"): "--n-test --n-train --output-dir --overwrite --seed",
    ("data", "inspect"): "--format --max-length --model --pairs --seed --show --skip-invalid",
}


def generated_configs() -> dict[tuple[str, ...], type]:
    from rewardlab.commands.compare import CompareConfig
    from rewardlab.commands.data import EasyDataConfig, InspectDataConfig
    from rewardlab.commands.diagnose import DiagnoseConfig
    from rewardlab.commands.doctor import DoctorConfig
    from rewardlab.commands.eval_rm import EvalRmConfig
    from rewardlab.commands.export import ExportConfig
    from rewardlab.commands.score import ScoreConfig
    from rewardlab.commands.serve import ServeConfig
    from rewardlab.config import DemoSpec

    return {
        ("eval-rm",): EvalRmConfig, ("compare",): CompareConfig, ("diagnose",): DiagnoseConfig, ("export",): ExportConfig,
        ("doctor",): DoctorConfig, ("score",): ScoreConfig, ("serve",): ServeConfig, ("demo",): DemoSpec,
        ("data", "easy"): EasyDataConfig, ("data", "inspect"): InspectDataConfig,
    }  # fmt: skip


@pytest.mark.parametrize("path", sorted(GENERATED_FLAGS_BEFORE), ids=" ".join)
def test_hand_written_commands_are_generated_and_keep_their_flags(path):
    from rewardlab.config import is_setting

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    params = {p.name for p in command.params if p.name != "help"}
    cls = generated_configs()[path]
    assert params == {f.name for f in dataclasses.fields(cls) if is_setting(f)}
    flags = {flag for p in command.params for flag in (*p.opts, *p.secondary_opts)}
    missing = set(GENERATED_FLAGS_BEFORE[path].split()) - flags
    assert not missing, f"{' '.join(path)} lost {sorted(missing)}"


def test_every_command_is_one_generated_from_a_config():
    top = typer.main.get_command(app)
    generated = {"train-rm", "ppo", "bon", "study"} | {p[0] for p in GENERATED_FLAGS_BEFORE}
    assert set(top.commands) == generated | {"data"}
    assert set(top.commands["data"].commands) == {p[1] for p in GENERATED_FLAGS_BEFORE if p[0] == "data"}


def test_each_choice_list_is_its_literal_and_the_tables_keyed_by_it_agree():
    import typing

    from rewardlab import choices
    from rewardlab.config import choices_of
    from rewardlab.losses import REGULARIZER_TABLE, REWARD_LOSS_TABLE
    from rewardlab.runtime import DTYPES
    from rewardlab.tasks.world import WORLDS

    assert tuple(REWARD_LOSS_TABLE) == choices.REWARD_LOSSES and tuple(REGULARIZER_TABLE) == choices.REGULARIZERS
    assert tuple(DTYPES) == choices.DTYPE_NAMES and tuple(sorted(WORLDS)) == choices.WORLD_VERSIONS
    hints = typing.get_type_hints(RewardTrainingConfig)
    for name, values in [("loss", choices.REWARD_LOSSES), ("reg", choices.REGULARIZERS), ("head", choices.HEAD_CHOICES),
                         ("truncation", choices.TRUNCATION_CHOICES), ("ensemble_aggregate", choices.AGGREGATES),
                         ("pairs", choices.PAIR_MODES), ("attention", choices.PACKED_ATTENTION_CHOICES),
                         ("logprob_backend", choices.LOGPROB_BACKENDS)]:  # fmt: skip
        assert choices_of(hints[name]) == values, name
        help_text = RewardTrainingConfig.__dataclass_fields__[name].metadata["help"]
        assert all(str(v) in help_text for v in values), (name, help_text)  # --help lists them from the same Literal
    assert "bt (default) | margin | label-smooth" in RewardTrainingConfig.__dataclass_fields__["loss"].metadata["help"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["eval-rm", "--model", "m", "--data", "d", "--output", "o.json", "--truncation", "middle"],
            "truncation = 'middle' is not one of keep_end, drop",
        ),
        (
            ["diagnose", "--model", "m", "--data", "d", "--output", "o", "--dtype", "fp8"],
            "dtype = 'fp8' is not one of auto, fp32, bf16, fp16",
        ),
        (
            ["score", "--model", "m", "--data", "d", "--output", "o.jsonl", "--aggregate", "max"],
            "aggregate = 'max' is not one of mean, min",
        ),
        (["demo", "--world", "5"], "world_version = 5 is not one of 3, 4 (--world)"),
        (
            ["data", "inspect", "x.jsonl", "--pairs", "best"],
            "pairs_mode = 'best' is not one of all, best-worst, best-random (--pairs)",
        ),
        (["serve", "--model", "m", "--port", "70000"], "--port 70000: must be >= 0 and <= 65535"),
        (["compare", "a=x", "b=y", "--output", "c.json", "--level", "0.2"], "--level 0.2: must be >= 0.5 and <= 0.999"),
    ],  # fmt: skip
    ids=["eval-rm", "diagnose", "score", "demo", "data-inspect", "serve", "compare"],
)
def test_a_bad_choice_or_range_is_one_line_from_every_generated_command(argv, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, argv)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and lines == [f"error: {expected}"], result.output


def test_the_demos_options_are_restated_in_its_config_and_building_the_cli_imports_no_trainer():
    import subprocess
    import sys

    from rewardlab.config import DemoSpec
    from rewardlab.demo.config import DemoConfig

    for f in dataclasses.fields(DemoSpec):
        assert DemoConfig.__dataclass_fields__[f.name].metadata == f.metadata, f.name
    assert DemoConfig.make(quick=True).seeds == 1 and DemoConfig.make(seeds=2).seeds == 2
    code = "import sys, rewardlab.cli; print(sorted({'transformers', 'accelerate', 'rewardlab.demo'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_bon_restates_the_run_settings_and_the_head_defaults_live_on_the_config():
    from rewardlab.config import PlacementSpec, RewardModelSpec
    from rewardlab.modeling.head import RewardHead
    from rewardlab.modeling.reward_model import RewardModelConfig

    bon, run = BonConfig.__dataclass_fields__, RunSpec.__dataclass_fields__
    for name in ("seed", "progress"):
        assert bon[name].metadata == run[name].metadata and bon[name].default == run[name].default
    assert bon["device"].metadata["help"] == PlacementSpec.__dataclass_fields__["device"].metadata["help"]
    assert not hasattr(BonConfig(), "bf16")  # restated, not inherited: best-of-N has no autocast
    head = RewardHead(8)
    saved = RewardModelConfig(base_model="x")
    rm = RewardTrainingConfig()
    assert (head.kind, head.dropout.p) == (rm.head, rm.head_dropout) == (RewardModelSpec.head, RewardModelSpec.head_dropout)
    assert (saved.head, saved.head_hidden, saved.head_dropout) == (rm.head, rm.head_hidden, rm.head_dropout)


def test_each_generated_commands_body_takes_exactly_its_configs_fields():
    import importlib
    import inspect

    bodies = {("eval-rm",): "eval_rm:run", ("compare",): "compare:run", ("diagnose",): "diagnose:run",
              ("export",): "export:run", ("doctor",): "doctor:run", ("score",): "score:run", ("serve",): "serve:run",
              ("data", "easy"): "data:make_easy", ("data", "inspect"): "data:inspect_data"}  # fmt: skip
    for path, spec in bodies.items():
        module, name = spec.split(":")
        body = getattr(importlib.import_module(f"rewardlab.commands.{module}"), name)
        fields = {f.name for f in dataclasses.fields(generated_configs()[path])}
        assert set(inspect.signature(body).parameters) == fields, path
