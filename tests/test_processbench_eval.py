"""ProcessBench evaluation (rewardlab.processbench_eval) on the real ProcessBench rows: the figures per subset are
recomputed exactly from the rows (as `--scores` writes them), and agree with figures worked out from the predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardlab.data.steps import load_steps
from rewardlab.errors import UserError
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.service import ScoringService
from rewardlab.processbench_eval import default_threshold, evaluate_processbench, figures_from_rows, summary_lines
from rewardlab.step_scoring import score_steps, steps_prompt

pytestmark = pytest.mark.usefixtures("one_thread")

REAL = Path(__file__).parent / "fixtures" / "data" / "processbench_real.json"


@pytest.fixture(scope="module")
def service():
    return ScoringService(build_reward_model("tiny-llama", head_dropout=0.0, seed=1).eval(), batch_size=4, max_length=1024)


@pytest.fixture(scope="module")
def dataset():
    return load_steps(str(REAL))


def by_hand(rows: list[dict]) -> dict:
    """ProcessBench's three figures per subset, counted directly from the rows' labels and predictions."""
    out = {}
    for subset in dict.fromkeys(r["subset"] for r in rows):
        mine = [r for r in rows if r["subset"] == subset]
        error = [r["prediction"] == r["label"] for r in mine if r["label"] != -1]
        correct = [r["prediction"] == -1 for r in mine if r["label"] == -1]
        acc1 = sum(error) / len(error) if error else None
        acc2 = sum(correct) / len(correct) if correct else None
        f1 = None if acc1 is None or acc2 is None else (2 * acc1 * acc2 / (acc1 + acc2) if acc1 + acc2 else 0.0)
        out[subset] = (acc1, acc2, f1)
    return out


@pytest.mark.parametrize(("view", "threshold"), [("prm", None), ("r3hf", None), ("prm", 0.55), ("r3hf", -0.1)])
def test_figures_are_recomputed_exactly_from_the_rows(service, dataset, view, threshold, tmp_path) -> None:
    figures, rows = evaluate_processbench(service, dataset, view, threshold=threshold)
    assert figures["threshold"] == default_threshold(view, threshold)
    assert figures["view"] == view and figures["n"] == 8 and figures["truncated"] == 0
    assert list(figures["subsets"]) == ["gsm8k", "math", "olympiadbench", "omnimath"]  # from the ids
    # the rows as `--scores` writes them (JSONL), read back: the same figures, exactly
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = [json.loads(line) for line in path.read_text().splitlines()]
    again = figures_from_rows(read, figures["threshold"])
    for key in ("subsets", "average_f1", "threshold"):
        assert again[key] == figures[key]
    for subset, (acc1, acc2, f1) in by_hand(read).items():
        f = figures["subsets"][subset]
        assert (f["error_accuracy"], f["correct_accuracy"], f["f1"]) == (acc1, acc2, f1)
    assert [r["label"] for r in rows] == [e.first_error for e in dataset.examples]
    assert [r["id"] for r in rows] == [e.metadata["id"] for e in dataset.examples]
    lines = summary_lines("pb", figures)
    assert lines[0].startswith("pb/gsm8k: error acc") and lines[-1].startswith("pb: average F1")


def test_rows_hold_the_view_scores(service, dataset) -> None:
    _, prm_rows = evaluate_processbench(service, dataset, "prm")
    items = [(e.prompt, e.steps) for e in dataset.examples]
    for row, scored in zip(prm_rows, score_steps(service, items, "prm"), strict=True):
        assert row["step_scores"] == scored.step_probabilities and row["step_logits"] == scored.step_rewards
        below = [i for i, p in enumerate(row["step_scores"]) if p < 0.5]
        assert row["prediction"] == (below[0] if below else -1)
    _, r3hf_rows = evaluate_processbench(service, dataset, "r3hf")
    items = [(steps_prompt(e.prompt), e.steps) for e in dataset.examples]  # ProcessBench's problem + "\n"
    for row, scored in zip(r3hf_rows, score_steps(service, items, "r3hf"), strict=True):
        assert row["step_scores"] == scored.step_rewards and "step_logits" not in row


def test_default_thresholds() -> None:
    assert default_threshold("prm") == 0.5 and default_threshold("r3hf") == 0.0 and default_threshold("prm", 0.3) == 0.3
    with pytest.raises(UserError, match="expected one of prm, r3hf"):
        default_threshold("orm")


def cli(*args: str):
    from typer.testing import CliRunner

    from rewardlab.cli import app

    return CliRunner().invoke(app, [*args, "--no-progress"])


@pytest.mark.parametrize("extra", [[], ["--step-rewards", "prm"], ["--step-rewards", "r3hf", "--threshold", "-0.05"]])
def test_cli_eval_rm_processbench_figures_from_the_scores_rows(tmp_path, extra) -> None:
    """`eval-rm --format processbench` on the real ProcessBench rows: the three figures per subset in results.json are
    recomputed exactly from the `--scores` rows."""
    out, rows_path = tmp_path / "pb.json", tmp_path / "rows.jsonl"
    result = cli(
        "eval-rm", "--model", "tiny-llama", "--data", f"pb={REAL}", "--format", "processbench",
        "--output", str(out), "--scores", str(rows_path), *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pb/gsm8k: error acc" in result.output and "pb: average F1" in result.output
    figures = json.loads(out.read_text())["results"]["pb"]
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    view = extra[1] if extra else "r3hf"  # tiny-llama is a sequence reward model: r3hf unless asked
    assert ("is not a PRM" in result.output) == (view == "prm")
    assert figures["view"] == view and figures["threshold"] == (float(extra[-1]) if len(extra) > 2 else default_threshold(view))
    again = figures_from_rows(rows, figures["threshold"])
    assert again["subsets"] == figures["subsets"] and again["average_f1"] == figures["average_f1"]
    for subset, (acc1, acc2, f1) in by_hand(rows).items():
        f = figures["subsets"][subset]
        assert (f["error_accuracy"], f["correct_accuracy"], f["f1"]) == (acc1, acc2, f1)


def test_cli_eval_rm_processbench_refusals(tmp_path) -> None:
    args = ["eval-rm", "--model", "tiny-llama", "--data", f"pb={REAL}", "--output", str(tmp_path / "pb.json")]
    refused = cli(*args, "--format", "processbench", "--step-rewards", "orm")
    assert refused.exit_code != 0 and "orm" in refused.output
    refused = cli(*args, "--step-rewards", "r3hf")  # without --format processbench
    assert refused.exit_code != 0 and "--format processbench" in refused.output


@pytest.fixture(scope="module")
def prm_run(tmp_path_factory):
    """A PRM (`train-rm --objective prm`, two steps on a TRL stepwise file): its saved config says it is one."""
    out = tmp_path_factory.mktemp("prm") / "run"
    result = cli(
        "train-rm", "--objective", "prm", "--train-data", str(REAL.parent / "trl_stepwise.jsonl"), "--max-steps", "2",
        "--batch-size", "2", "--output-dir", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_a_saved_prm_is_read_in_the_prm_view_with_the_trainers_numbers(prm_run, dataset, tmp_path) -> None:
    """eval-rm on a saved PRM defaults to the prm view; its step probabilities and figures are those of train-rm's own
    step evaluation (rewardlab.step_evaluation, batched apart from the scoring service)."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.step_evaluation import evaluate_steps, probability

    out, rows_path = tmp_path / "pb.json", tmp_path / "rows.jsonl"
    result = cli(
        "eval-rm", "--model", str(prm_run), "--data", f"pb={REAL}", "--format", "processbench", "--output", str(out),
        "--scores", str(rows_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output and "(prm step scores, threshold 0.5)" in result.output
    figures = json.loads(out.read_text())["results"]["pb"]
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    trainer_metrics, logits = evaluate_steps(load_reward_model(prm_run), dataset.examples, max_length=1024)
    for row in rows:
        assert row["step_scores"] == pytest.approx([probability(x) for x in logits[row["index"]]], abs=1e-5)
    assert figures["subsets"] == trainer_metrics["processbench"]["subsets"]
    assert figures["average_f1"] == trainer_metrics["processbench"]["average_f1"]
    r3hf = cli(
        "eval-rm", "--model", str(prm_run), "--data", f"pb={REAL}", "--format", "processbench", "--output",
        str(tmp_path / "r3hf.json"), "--step-rewards", "r3hf",
    )  # fmt: skip
    assert r3hf.exit_code == 0 and "is a PRM" in r3hf.output
