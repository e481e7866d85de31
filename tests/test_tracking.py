"""Experiment tracking (rewardlab.tracking): `--report-to` names and errors, and what reaches the trackers.

The scalars are read back with each tracker's own reader (tensorboard's EventAccumulator, trackio's SQLite storage) or,
for wandb, whose offline run keeps its history only in the run's .wandb file, by reading that file's records (LevelDB's
log format framing wandb's protobuf `Record`, from wandb's own package), and compared with the run's metrics.jsonl /
log.jsonl rows. conftest.py keeps wandb offline and both wandb's and trackio's files in the session's temp directory.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rewardlab.commands.demo import demo
from rewardlab.commands.ppo import ppo
from rewardlab.commands.train_rm import train_rm
from rewardlab.demo.config import DemoConfig
from rewardlab.demo.ppo_comparisons import ppo_run_config
from rewardlab.demo.reward_models import RMCell, rm_run_config
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.tracking import TRACKERS, parse_report_to, resolve_report_to, tracker_scalars
from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    [{"role": "user", "content": "copy: abc"}],
    [{"role": "user", "content": "please reverse abcdefg"}],
    [{"role": "user", "content": "sort: hgf"}],
    [{"role": "user", "content": "rotate: bcda"}],
]
# what PPO's metrics rows must carry for the trackers (value_loss and the grad norms: rows with an update)
PPO_KEYS = {"proxy_reward", "gold_reward", "kl", "entropy", "value_explained_variance", "response_length", "tokens_per_second"}
PPO_UPDATE_KEYS = {"value_loss", "policy_loss", "policy_grad_norm", "critic_grad_norm"}
RM_KEYS = {"loss", "reward_loss", "reg_loss", "accuracy", "margin", "reward_mean", "reward_std", "lr", "grad_norm",
           "reward_term", "reg_term", "reward_grad_norm", "reg_grad_norm"}  # fmt: skip


def cli(*commands) -> typer.Typer:
    app = typer.Typer()
    for name, command in commands:
        app.command(name)(command)
    app.command("noop")(lambda: None)  # two commands at least, so each stays a subcommand
    return app


def numbers(record: dict) -> dict[str, float]:
    """A log row's numeric entries but the step, written out here (not with tracker_scalars, which is under test)."""
    return {k: v for k, v in record.items() if type(v) in (int, float) and k not in ("step", "kind")}


# ----------------------------------------------------------------------------------------------------------------------
# names


def test_report_to_takes_repeats_and_comma_lists_with_transformers_none_and_all():
    assert parse_report_to(["tensorboard,wandb", " Trackio ", "wandb"]) == ["tensorboard", "wandb", "trackio"]
    assert parse_report_to("wandb") == ["wandb"] and parse_report_to([]) == parse_report_to(None) == []
    assert resolve_report_to(["none"]) == resolve_report_to("none") == []
    assert resolve_report_to(["all"], is_installed=lambda name: name != "wandb") == ["tensorboard", "trackio"]
    assert resolve_report_to("all", is_installed=lambda name: False) == []  # all: what is there, nothing is no error
    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'.*tensorboard, wandb, trackio, all, none"):
        parse_report_to(["tensorbord"])
    with pytest.raises(ValueError, match="stand alone"):
        parse_report_to(["none,wandb"])
    with pytest.raises(ValueError, match="stand alone"):
        parse_report_to(["all", "tensorboard"])


def test_a_named_tracker_that_is_not_installed_is_an_error():
    with pytest.raises(ValueError, match=r"^report_to: trackio is not installed \(pip install 'rewardlab\[trackio\]'\)$"):
        resolve_report_to(["tensorboard", "trackio"], is_installed=lambda name: name == "tensorboard")
    with pytest.raises(ValueError, match=r"wandb, trackio are not installed \(pip install 'rewardlab\[wandb,trackio\]'\)"):
        resolve_report_to("wandb,trackio", is_installed=lambda name: False)


def test_tracker_scalars_are_the_record_numbers_under_their_keys():
    record = {"kind": "train", "step": 3, "loss": 0.5, "n": 2, "ok": True, "note": "x", "none": None, "acc": {"a": 0.25}}
    assert tracker_scalars(record, "train/") == {"train/loss": 0.5, "train/n": 2, "train/acc/a": 0.25}


@pytest.mark.parametrize("command", ["ppo", "train-rm", "demo"])
def test_cli_refuses_an_uninstalled_or_unknown_tracker_before_loading_anything(tmp_path, monkeypatch, command):
    """One line, exit 1, before the (missing) reward model, training data or the demo's output directory is touched."""
    monkeypatch.setitem(TRACKERS, "wandb", "rewardlab_no_such_module")  # wandb, as if not installed
    app = cli(("ppo", ppo), ("train-rm", train_rm), ("demo", demo))
    first = {
        "ppo": ["ppo", "--reward-model", str(tmp_path / "no-rm")],
        "train-rm": ["train-rm", "--train-data", str(tmp_path / "no-data.jsonl"), "--output-dir", str(tmp_path / "rm")],
        "demo": ["demo", "--quick", "--output", str(tmp_path / "demo")],
    }[command]
    for flags, message in (
        (["--report-to", "tensorboard,wandb"], "error: report_to: wandb is not installed (pip install 'rewardlab[wandb]')"),
        (["--report-to", "tensorbord"], "error: report_to: unknown tracker 'tensorbord'"),
    ):
        result = CliRunner().invoke(app, [*first, *flags])
        assert result.exit_code == 1, result.output
        assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "demo").exists() and not (tmp_path / "rm").exists()


def test_the_demo_passes_report_to_to_its_reward_models_and_ppo_runs(tmp_path):
    cfg = DemoConfig.make(True, report_to=["tensorboard", "wandb"])
    cell = RMCell("grm-sft", 0.1, "small", 0)
    rm = rm_run_config(cfg, tmp_path / "policy", tmp_path / "train.jsonl", 64, tmp_path / "rm", cell)
    ppo_cfg = ppo_run_config(cfg, "rloo", "r3hf", None, 0, 4, tmp_path / "ppo", tmp_path / "policy", tmp_path / "rm")
    assert rm.report_to == ppo_cfg.report_to == ["tensorboard", "wandb"]
    assert (rm.reg, rm.alpha, rm.seed) == ("sft", 0.1, 0)
    assert DemoConfig.make(True).report_to == []


# ----------------------------------------------------------------------------------------------------------------------
# the trackers' own records


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value, from the event files of `log_dir` (tensorboard's reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file: a 7-byte header (':W&B', magic, version), then LevelDB log blocks of 32 KiB
    holding records as (crc32, length, type) + data, a record possibly split FIRST / MIDDLE / LAST across blocks."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", "not a wandb transaction log"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_offline_history(wandb_dir: Path, run_name: str) -> dict[int, dict[str, float]]:
    """step -> {key: value} of the offline run named `run_name` under `wandb_dir`."""
    for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
        records = wandb_records(path)
        if not any(r.WhichOneof("record_type") == "run" and r.run.display_name == run_name for r in records):
            continue
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                history[r.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
        return history
    raise AssertionError(f"no offline wandb run named {run_name} under {wandb_dir}")


@pytest.fixture(scope="module")
def ppo_tracked(tmp_path_factory) -> Path:
    """`rewardlab ppo --report-to tensorboard,wandb --report-to trackio`: two steps on the tiny world (and gold)."""
    for module in TRACKERS.values():  # the dev extra installs all three
        pytest.importorskip(module)
    root = tmp_path_factory.mktemp("tracked")
    build_reward_model("tiny-llama", head_dropout=0.0, seed=3).save_pretrained(root / "rm")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = root / "run"
    args = [
        "ppo", "--policy", "tiny-llama", "--reward-model", str(root / "rm"), "--gold", "builtin", "--prompts", str(prompts),
        "--output", str(out), "--steps", "2", "--batch-size", "4", "--minibatch-size", "2", "--ppo-epochs", "1",
        "--max-new-tokens", "4", "--no-progress", "--no-save-policy",
        "--report-to", "tensorboard,wandb", "--report-to", "trackio",
    ]  # fmt: skip
    result = CliRunner().invoke(cli(("ppo", ppo)), args)
    assert result.exit_code == 0, result.output
    return out


def ppo_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[-1]) >= PPO_KEYS and set(rows[0]) >= PPO_KEYS | PPO_UPDATE_KEYS
    return rows


def test_ppo_tensorboard_scalars_equal_metrics_jsonl(ppo_tracked):
    rows = ppo_rows(ppo_tracked)
    scalars = tensorboard_scalars(ppo_tracked / "rewardlab")
    assert set(scalars) == {key for row in rows for key in numbers(row)}
    for row in rows:
        for key, value in numbers(row).items():
            assert scalars[key][row["step"]] == np.float32(value), (key, row["step"])  # event files hold float32


def test_ppo_wandb_offline_history_equals_metrics_jsonl(ppo_tracked, trackers_offline):
    rows = ppo_rows(ppo_tracked)
    history = wandb_offline_history(trackers_offline, str(ppo_tracked))
    assert history == {row["step"]: numbers(row) for row in rows}


def test_ppo_trackio_logs_equal_metrics_jsonl(ppo_tracked):
    from trackio.sqlite_storage import SQLiteStorage

    rows = ppo_rows(ppo_tracked)
    logs = SQLiteStorage.get_logs("rewardlab", run=str(ppo_tracked))
    logged = {log["step"]: {k: v for k, v in log.items() if k not in ("step", "timestamp")} for log in logs}
    assert logged == {row["step"]: numbers(row) for row in rows}


def test_train_rm_tensorboard_scalars_equal_log_jsonl(easy_data, tmp_path):
    """Every train row of log.jsonl (losses, accuracy, margin, reward mean / std, lr, grad norm, tokens/s) is in the
    event files as train/KEY at its step; the eval accuracy and loss as eval/NAME/accuracy and eval/NAME/loss."""
    pytest.importorskip("tensorboard")
    cfg = RewardTrainingConfig(
        train_data=str(easy_data / "small.jsonl"), eval_data=[f"small={easy_data / 'small.jsonl'}"],
        output_dir=str(tmp_path / "run"), reg="sft", max_steps=3, logging_steps=1, per_device_train_batch_size=8,
        learning_rate=1e-3, progress=False, report_to=["tensorboard"],
    )  # fmt: skip
    train_reward_model(cfg)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and RM_KEYS | {"tokens_per_second"} <= set(train[0])
    assert all(r["tokens_per_second"] > 0 for r in train)
    scalars = tensorboard_scalars(tmp_path / "run" / "rewardlab")
    expected = {f"train/{k}" for r in train for k in numbers(r)} | {"eval/small/accuracy", "eval/small/loss"}
    assert set(scalars) == expected
    for row in train:
        for key, value in numbers(row).items():
            assert scalars[f"train/{key}"][row["step"]] == np.float32(value), (key, row["step"])
    final_eval = next(r for r in log if r["kind"] == "eval")
    assert scalars["eval/small/accuracy"][final_eval["step"]] == np.float32(final_eval["accuracy"]["small"])
    assert scalars["eval/small/loss"][final_eval["step"]] == np.float32(final_eval["loss"]["small"])
