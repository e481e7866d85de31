"""Process reward models end to end: `train-rm --objective prm` on the built-in world's step data and on TRL stepwise
files, its scores.jsonl against ProcessBench's figures recomputed by hand, the export in plain transformers, and a few
steps on SmolLM2."""

import json
import math

import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.step_encoding import encode_steps
from rewardlab.data.steps import load_steps
from rewardlab.modeling.loader import load_reward_model, saved_objective
from rewardlab.tasks.steps import write_step_data

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "data"


def train(*args: str) -> None:
    result = runner.invoke(app, ["train-rm", "--objective", "prm", "--no-progress", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_step_data(tmp_path_factory.mktemp("steps"), sizes={"train": 96, "validation": 24, "test_ood": 24}, seed=0)


@pytest.fixture(scope="module")
def prm_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("prm") / "run"
    train(
        "--train-data", str(world["train_stepwise"]), "--eval-data", f"val={world['validation_processbench']}",
        "--eval-data", f"ood={world['test_ood_processbench']}", "--reg", "sft", "--max-steps", "6", "--batch-size", "8",
        "--lr", "1e-3", "--output-dir", str(out),
    )  # fmt: skip
    return out


def test_prm_training_writes_processbench_figures_that_its_score_rows_reproduce(prm_run, world):
    metrics = json.loads((prm_run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (prm_run / "scores.jsonl").read_text().splitlines()]
    assert json.loads((prm_run / "config.json").read_text())["objective"] == "prm"
    assert saved_objective(prm_run) == "prm" and metrics["reward_statistics"] is None
    examples = load_steps(str(world["test_ood_processbench"])).examples
    ood = [r for r in rows if r["dataset"] == "ood"]
    assert len(ood) == len(examples) == metrics["eval"]["ood"]["n"]
    # by hand: the prediction is the first step under P = 1/2; per subset the accuracy on samples with an error, without,
    # and their harmonic mean
    by_subset: dict[str, list] = {}
    for r in ood:
        assert r["label"] == examples[r["index"]].first_error and len(r["step_scores"]) == len(examples[r["index"]].steps)
        first_low = next((k for k, p in enumerate(r["step_scores"]) if p < 0.5), -1)
        assert r["prediction"] == first_low
        by_subset.setdefault(r["subset"], []).append((r["label"], first_low))
    for subset, pairs in by_subset.items():
        figures = metrics["eval"]["ood"]["processbench"]["subsets"][subset]
        errors = [p == lab for lab, p in pairs if lab != -1]
        corrects = [p == -1 for lab, p in pairs if lab == -1]
        acc_e, acc_c = sum(errors) / len(errors), sum(corrects) / len(corrects)
        assert figures["error_accuracy"] == pytest.approx(acc_e) and figures["correct_accuracy"] == pytest.approx(acc_c)
        f1 = 0.0 if acc_e + acc_c == 0 else 2 * acc_e * acc_c / (acc_e + acc_c)
        assert figures["f1"] == pytest.approx(f1)
    # the step accuracy: labelled steps on the right side of 1/2
    right = total = 0
    for r in ood:
        for p, label in zip(r["step_scores"], examples[r["index"]].labels, strict=True):
            if label is not None:
                right, total = right + ((p > 0.5) == label), total + 1
    assert metrics["eval"]["ood"]["accuracy"] == pytest.approx(right / total)
    log = [json.loads(line) for line in (prm_run / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(e["loss"]) for e in log if e.get("kind") == "train")


def test_the_prm_export_gives_rewardlabs_step_probabilities_in_plain_transformers(prm_run, world, tmp_path):
    result = runner.invoke(app, ["export", "--model", str(prm_run), "--output", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert "ForTokenClassification" in result.output
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    rows = [json.loads(line) for line in (prm_run / "scores.jsonl").read_text().splitlines()][:5]
    examples = load_steps(str(world["validation_processbench"])).examples
    for row in rows:
        example = examples[row["index"]]
        encoded = encode_steps(tokenizer, example.prompt, example.steps)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([encoded.input_ids])).logits[0]
        theirs = logits.softmax(-1)[encoded.step_ends, 1].tolist()
        assert theirs == pytest.approx(row["step_scores"], abs=1e-4)


def test_prm_trains_on_a_trl_stepwise_file_with_its_quirks(tmp_path):
    out = tmp_path / "run"
    train("--train-data", str(FIXTURES / "trl_stepwise.jsonl"), "--max-steps", "2", "--batch-size", "2",
          "--output-dir", str(out))  # fmt: skip
    model = load_reward_model(out)
    assert model.config.objective == "prm"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--reg", "dpo"], "has no pairs"),
        (["--loss", "margin"], "preference loss"),
        (["--ensemble-size", "2"], "ensemble_size must be 1"),
    ],
)
def test_settings_that_need_pairs_are_refused_in_one_line(flags, said, tmp_path):
    result = runner.invoke(app, ["train-rm", "--objective", "prm", "--train-data", str(FIXTURES / "trl_stepwise.jsonl"),
                                 "--output-dir", str(tmp_path / "x"), *flags])  # fmt: skip
    assert result.exit_code == 1 and said in result.output and not (tmp_path / "x").exists()


def test_preference_data_under_objective_prm_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["train-rm", "--objective", "prm", "--train-data", str(FIXTURES / "hh_quirks.jsonl"),
                                 "--output-dir", str(tmp_path / "x")])  # fmt: skip
    assert result.exit_code == 1 and result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_a_prm_on_smollm2_with_lora_trains_a_few_steps_and_exports_exactly(tmp_path):
    """Real contact: SmolLM2-135M-Instruct (pad == eos, chat template), LoRA + sft, 2 steps on TRL stepwise rows."""
    out = tmp_path / "run"
    train("--model", "smollm2-135m", "--lora", "--lora-r", "8", "--lora-alpha", "16", "--reg", "sft",
          "--train-data", str(FIXTURES / "trl_stepwise.jsonl"), "--eval-data", f"pb={FIXTURES / 'processbench.jsonl'}",
          "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--max-length", "256", "--output-dir", str(out))  # fmt: skip
    result = runner.invoke(app, ["export", "--model", str(out), "--output", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "scores.jsonl").read_text().splitlines()[0])
    example = load_steps(str(FIXTURES / "processbench.jsonl")).examples[row["index"]]
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    encoded = encode_steps(tokenizer, example.prompt, example.steps, max_length=256)
    with torch.no_grad():
        probabilities = model(input_ids=torch.tensor([encoded.input_ids])).logits[0].softmax(-1)[encoded.step_ends, 1]
    assert probabilities.tolist() == pytest.approx(row["step_scores"], abs=1e-4)


def test_a_prm_scores_responses_by_its_steps_for_best_of_n(prm_run, world):
    """`resolve_scorer` on a PRM gives a StepScorer: a response split on newlines, each step's P(correct) (the same numbers
    the trainer's evaluation wrote to scores.jsonl, an independent path), aggregated."""
    from rewardlab.rl.scorers import StepScorer, resolve_scorer

    rows = [json.loads(line) for line in (prm_run / "scores.jsonl").read_text().splitlines() if '"val"' in line][:6]
    examples = load_steps(str(world["validation_processbench"])).examples
    prompts = [examples[r["index"]].prompt for r in rows]
    responses = ["\n".join(examples[r["index"]].steps) for r in rows]
    for how, by_hand in (("min", min), ("last", lambda p: p[-1]), ("product", math.prod)):
        scorer = resolve_scorer(str(prm_run), device="cpu", step_aggregate=how)
        assert isinstance(scorer, StepScorer)
        assert scorer.score(prompts, responses) == pytest.approx([by_hand(r["step_scores"]) for r in rows], abs=1e-5)
