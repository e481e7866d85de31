"""rewardlab.study (`rewardlab study`): a tiny grid on tiny-llama end to end (in 2 worker processes), its table against the
cells' own files and against `rewardlab compare`, resuming after a kill, refusals, and one smollm2-135m cell."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.runtime import OUTPUT_MARKER
from rewardlab.study import Cell, StudyConfig, grid, run_cell, run_study, subset

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
GRID = {"variants": ["vanilla", "grm-sft"], "alphas": [0.01, 0.3], "seeds": 2, "sizes": [64]}
TRAINING = {"max_steps": 4, "eval_steps": 2, "per_device_train_batch_size": 16, "learning_rate": 8e-5, "head_dropout": 0.0,
            "max_length": 64, "progress": False}  # fmt: skip


def study_args(easy_data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "study", "--train-data", str(easy_data / "train.jsonl"), "--eval-data", f"val={easy_data / 'small.jsonl'}",
        "--eval-data", f"ood={easy_data / 'test.jsonl'}", "--select-on", "val", "--variants", "vanilla,grm-sft",
        "--alphas", "0.01,0.3", "--seeds", "2", "--sizes", "64", "--max-steps", "4", "--eval-steps", "2", "--batch-size",
        "16", "--lr", "8e-5", "--head-dropout", "0", "--max-length", "64", "--no-progress", "--output-dir", str(out), *extra,
    ]  # fmt: skip


def config(easy_data: Path, out: Path, **changes) -> StudyConfig:
    eval_data = [f"val={easy_data / 'small.jsonl'}", f"ood={easy_data / 'test.jsonl'}"]
    values = {"train_data": str(easy_data / "train.jsonl"), "eval_data": eval_data, "select_best_on": "val", **GRID, **TRAINING}
    values["output_dir"] = str(out)
    return StudyConfig(**(values | changes))


@pytest.fixture(scope="module")
def study(easy_data, tmp_path_factory) -> Path:
    """The tiny grid run by the command line, its cells trained in 2 processes."""
    out = tmp_path_factory.mktemp("study") / "out"
    result = runner.invoke(app, study_args(easy_data, out, "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert "comparisons pass with Holm's adjustment" in result.output
    return out


def cell_names() -> list[str]:
    return [
        "vanilla-n64-s0", "vanilla-n64-s1", "grm-sft-a0.01-n64-s0", "grm-sft-a0.01-n64-s1", "grm-sft-a0.3-n64-s0",
        "grm-sft-a0.3-n64-s1",
    ]  # fmt: skip


def test_every_cell_is_a_train_rm_run_scored_on_every_eval_set(study):
    assert sorted(p.name for p in (study / "cells").iterdir()) == sorted(cell_names())
    results = json.loads((study / "results.json").read_text())
    for name in cell_names():
        cell = study / "cells" / name
        run_config = json.loads((cell / "config.json").read_text())
        variant, seed = results["cells"][name]["variant"], results["cells"][name]["seed"]
        assert run_config["seed"] == seed and run_config["reg"] == ("sft" if variant == "grm-sft" else "none")
        assert run_config["select_best_on"] == "val" and run_config["learning_rate"] == 8e-5
        if variant == "grm-sft":
            assert run_config["alpha"] == results["cells"][name]["alpha"]
        rows = [json.loads(line) for line in (cell / "scores.jsonl").read_text().splitlines()]
        assert {r["dataset"] for r in rows} == {"val", "ood"} and len(rows) == 48 + 300
        metrics = json.loads((cell / "metrics.json").read_text())
        for split in ("val", "ood"):  # the table's accuracy (from the scores) is train-rm's own on the kept weights
            assert results["cells"][name]["accuracy"][split] == pytest.approx(metrics["eval"][split]["accuracy"], abs=1e-9)
            credit = [(r["chosen_reward"] > r["rejected_reward"]) + 0.5 * (r["chosen_reward"] == r["rejected_reward"])
                      for r in rows if r["dataset"] == split]  # fmt: skip
            assert results["cells"][name]["accuracy"][split] == pytest.approx(sum(credit) / len(credit))
    for name in ("table.md", "alpha_curve.png", "id_vs_ood.png", "study.json"):
        assert (study / name).stat().st_size > 0


def test_the_table_holds_every_seed_and_the_mean(study):
    results = json.loads((study / "results.json").read_text())
    rows = results["table"]
    assert len(rows) == 3 * 2  # (vanilla, grm-sft x 2 alphas) x (val, ood)
    for row in rows:
        members = [c for c in results["cells"].values() if (c["variant"], c["alpha"], c["size"]) == (row["variant"],
                   row["alpha"], row["size"])]  # fmt: skip
        values = [c["accuracy"][row["eval_set"]] for c in sorted(members, key=lambda c: c["seed"])]
        assert [s["accuracy"] for s in row["per_seed"]] == values and row["n_seeds"] == 2
        assert row["mean"] == pytest.approx(sum(values) / 2)
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    curve = results["alpha_curve"]["grm-sft"]["64"]["ood"]
    assert [p["alpha"] for p in curve] == [0.01, 0.3]
    assert "| grm-sft a=0.3 | 64 |" in (study / "table.md").read_text()


def test_comparisons_are_what_rewardlab_compare_computes_on_the_cells_scores(study, tmp_path):
    results = json.loads((study / "results.json").read_text())
    assert [(c["alpha"], c["eval_set"]) for c in results["comparisons"]] == [(0.01, "ood"), (0.3, "ood")]  # not on val
    for c in results["comparisons"]:
        grm = ",".join(str(study / "cells" / Cell("grm-sft", c["alpha"], 64, s).name / "scores.jsonl") for s in (0, 1))
        vanilla = ",".join(str(study / "cells" / Cell("vanilla", None, 64, s).name / "scores.jsonl") for s in (0, 1))
        out = tmp_path / f"cmp-{c['alpha']:g}.json"
        result = runner.invoke(app, ["compare", f"grm={grm}", f"vanilla={vanilla}", "--dataset", "ood", "--output", str(out)])
        assert result.exit_code == 0, result.output
        expected = json.loads(out.read_text())
        for key in ("diff", "ci_low", "ci_high", "n_pairs", "n_seeds", "p_mcnemar", "verdict", "per_seed"):
            assert c[key] == expected[key], key
    family = results["family"]
    assert family["method"] == "holm" and family["size"] == 2
    p = sorted(c["p_mcnemar"] for c in results["comparisons"])  # Holm with two tests: 2 p_(1), max(that, p_(2))
    assert sorted(c["p_holm"] for c in results["comparisons"]) == pytest.approx([min(1, 2 * p[0]), max(min(1, 2 * p[0]), p[1])])


def test_a_rerun_resumes_and_trains_only_unfinished_cells(study, easy_data, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(study, out)
    (out / "cells" / "vanilla-n64-s1" / "metrics.json").unlink()  # killed before its metrics
    marker = out / "cells" / "grm-sft-a0.3-n64-s0" / OUTPUT_MARKER  # killed before it was sealed
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "entries"}))
    untouched = out / "cells" / "grm-sft-a0.01-n64-s1" / "scores.jsonl"
    before = untouched.stat().st_mtime_ns
    trained = []

    def counting(run_cfg, data):
        trained.append(Path(run_cfg.output_dir).name)
        assert run_cfg.overwrite  # rewardlab's own unfinished cell is replaced, that cell only
        return run_cell(run_cfg, data)

    results = run_study(config(easy_data, out), cell_runner=counting)
    assert sorted(trained) == ["grm-sft-a0.3-n64-s0", "vanilla-n64-s1"]
    assert untouched.stat().st_mtime_ns == before
    assert (out / "cells" / "vanilla-n64-s1" / "metrics.json").is_file()
    assert len(results["comparisons"]) == 2
    trained.clear()
    run_study(config(easy_data, out, workers=3, progress=True), cell_runner=counting)  # how it runs is not what it is
    assert trained == []


def test_another_config_into_the_same_directory_is_refused(study, easy_data):
    before = (study / "study.json").read_text()
    result = runner.invoke(app, study_args(easy_data, study, "--lr", "1e-3"))
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1
    assert "holds a study with other settings (learning_rate: 8e-05 there, 0.001 now)" in message
    assert (study / "study.json").read_text() == before


def test_a_directory_that_is_not_a_study_is_refused(easy_data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    result = runner.invoke(app, study_args(easy_data, tmp_path / "mine"))
    assert result.exit_code == 1 and "was not written by rewardlab" in result.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--variants", "vanilla,grm-foo"), "--variants 'grm-foo': expected one of"),
        (("--alphas", "0.1,x"), "--alphas 'x': not a number"),
        (("--alphas", "1.5"), "--alphas 1.5: must be >= 0 and <= 1"),
        (("--select-on", "test"), "--select-on test: not an --eval-data NAME (val, ood)"),
        (("--sizes", "5000"), "--sizes 5000: the training data has 1200 pairs"),
    ],
)
def test_bad_settings_are_one_line_errors_before_any_training(easy_data, tmp_path, extra, message):
    result = runner.invoke(app, study_args(easy_data, tmp_path / "out", *extra))
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out" / "cells").exists()


def test_sizes_are_nested_subsets_of_one_seeded_shuffle(easy_data):
    from rewardlab.data.loading import load_preferences

    train = load_preferences(str(easy_data / "train.jsonl"))
    small, large = subset(train, 50, 0), subset(train, 200, 0)
    position = {id(e): i for i, e in enumerate(train.examples)}
    small_ids = {position[id(e)] for e in small.examples}
    large_ids = {position[id(e)] for e in large.examples}
    assert len(small_ids) == 50 and small_ids < large_ids
    assert small_ids != set(range(50))  # a shuffle, not the first pairs of the file
    assert [e.prompt for e in subset(train, 50, 0).examples] == [e.prompt for e in small.examples]
    assert {position[id(e)] for e in subset(train, 50, 1).examples} != small_ids


def test_the_grid_runs_vanilla_first_and_alphas_for_grm_variants_only(tmp_path):
    cfg = StudyConfig(variants="grm-dpo,margin", alphas="0.1,1", seeds=2, sizes=[10, 20], seed=5, output_dir=str(tmp_path))
    cells = grid(cfg)
    assert cells[0].name == "vanilla-n10-s5" and len(cells) == (1 + 2 + 1) * 2 * 2
    assert {c.alpha for c in cells if c.variant != "grm-dpo"} == {None}
    assert "grm-dpo-a1-n20-s6" in {c.name for c in cells}
    assert math.isclose(cfg.identity()["alphas"][0], 0.1) and "workers" not in cfg.identity()


@pytest.mark.slow
def test_one_smollm2_cell(tmp_path):
    """One LoRA cell on the real SmolLM2-135M (offline), 2 steps of 2 pairs."""
    fixtures = Path(__file__).parent / "fixtures" / "data" / "plain_pairs.jsonl"
    cfg = StudyConfig(
        model="smollm2-135m", lora=True, lora_r=8, lora_alpha=16, train_data=str(fixtures), eval_data=[f"val={fixtures}"],
        select_best_on="val", variants=["vanilla"], seeds=1, max_steps=2, eval_steps=2, per_device_train_batch_size=2,
        per_device_eval_batch_size=8, max_length=96, progress=False, output_dir=str(tmp_path / "study"),
    )  # fmt: skip
    results = run_study(cfg)
    [cell] = results["cells"].values()
    assert cell["variant"] == "vanilla" and 0.0 <= cell["accuracy"]["val"] <= 1.0
    assert (tmp_path / "study" / "cells" / "vanilla-nall-s0" / "model").is_dir()
    assert results["comparisons"] == [] and results["family"]["size"] == 0


def test_the_cells_share_train_rms_own_declarations():
    """Each train-rm setting the study takes is train-rm's field (default, help, flags), declared once."""
    import dataclasses

    from rewardlab.config import RewardTrainingFields, StudyFields

    rm = {f.name: f for f in dataclasses.fields(RewardTrainingFields)}
    shared = [f for f in dataclasses.fields(StudyFields) if f.name in rm]
    assert len(shared) > 40
    restated = {"output_dir", "seed", "overwrite", "eval_steps", "select_best_on"}  # the study's own meaning or default
    for f in shared:
        if f.name not in restated:
            assert (f.default, f.default_factory, dict(f.metadata)) == (
                rm[f.name].default, rm[f.name].default_factory, dict(rm[f.name].metadata)), f.name  # fmt: skip
    per_cell = {"loss", "reg", "alpha", "freeze_backbone", "ensemble_size", "resume", "save_steps", "save_total_limit"}
    assert not per_cell & {f.name for f in shared}  # set by the study per cell (or meaningless for it): no such flags


def test_yaml_then_flags_reach_the_study(monkeypatch, tmp_path):
    import rewardlab.study

    seen = []
    monkeypatch.setattr(rewardlab.study, "run_study", lambda cfg: seen.append(cfg) or {"comparisons": [], "family": {
        "verdicts_holm": 0, "size": 0, "verdicts_alone": 0}})  # fmt: skip
    config_file = tmp_path / "study.yaml"
    config_file.write_text("train_data: a.jsonl\nalphas: [0.01, 0.1]\nsizes: 100,400\nlearning_rate: 0.003\nseeds: 5\n")
    flags = ["--seeds", "2", "--variants", "vanilla,grm-dpo", "--select-on", "val", "--eval-data", "val=v.jsonl"]
    result = runner.invoke(app, ["study", "--config", str(config_file), *flags, "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    [cfg] = seen
    assert isinstance(cfg, StudyConfig) and cfg.alphas == [0.01, 0.1] and cfg.sizes == [100, 400]
    assert cfg.learning_rate == 0.003 and cfg.seeds == 2 and cfg.variants == ["vanilla", "grm-dpo"]
    assert cfg.select_best_on == "val" and cfg.max_length == 1024 and cfg.workers == 1


def test_a_study_killed_mid_grid_resumes_where_it_stopped(easy_data, tmp_path):
    """`rewardlab study` in its own process, killed (SIGKILL) once its first cell is finished: the rerun keeps every cell
    finished before the kill, trains the rest, and writes the table."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from rewardlab.study import cell_finished

    out = tmp_path / "killed"
    code = "import sys; from rewardlab.cli import main; sys.argv[0] = 'rewardlab'; main()"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *study_args(easy_data, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    cells = [out / "cells" / name for name in cell_names()]
    deadline = time.monotonic() + 240
    while not any(cell_finished(c) for c in cells):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no cell finished in 240 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {c.name: (c / "scores.jsonl").stat().st_mtime_ns for c in cells if cell_finished(c)}
    assert 0 < len(finished) < len(cells)  # killed mid-grid
    assert not (out / "results.json").exists()

    result = runner.invoke(app, study_args(easy_data, out))
    assert result.exit_code == 0, result.output
    assert f"{len(finished)} of {len(cells)} cells already finished, resuming" in result.output
    assert all(cell_finished(c) for c in cells) and (out / "results.json").is_file()
    assert {name: (out / "cells" / name / "scores.jsonl").stat().st_mtime_ns for name in finished} == finished
