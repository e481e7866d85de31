"""eval-rm on listwise sets (RewardBench 2, RM-Bench) end to end: every completion scored alone, the figures in
results.json recomputed independently from the --scores rows, truncation, data inspect, and training on rated lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import perturb
from reference_benchmarks import reference_reroll, reference_rm_bench, reference_ties
from rewardlab.cli import app
from rewardlab.data.loading import load_dataset
from rewardlab.data.templates import encode_prompt_response
from rewardlab.listwise_eval import score_listwise
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.scoring import score_completions

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def model():
    rm = build_reward_model("tiny-llama", seed=3)
    perturb(rm, 3)  # off the random head's initial values, so rewards spread and rankings mean something
    return rm.eval()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("listwise") / "rm"
    model.save_pretrained(path)
    return path


def raw(name: str) -> list[dict]:
    text = (FIXTURES / name).read_text()
    return json.loads(text) if name.endswith(".json") else [json.loads(line) for line in text.splitlines() if line.strip()]


def test_each_completion_is_scored_alone(model):
    """Pooled, length-sorted, padding-free batches give each completion the reward it gets alone (batch of one)."""
    ds = load_dataset(str(FIXTURES / "rewardbench2.jsonl"), listwise_eval=True)
    kept, chosen, rejected, counts = score_listwise(model, ds.examples, batch_size=3)
    assert kept == list(range(len(ds))) and counts == {"truncated": 0, "dropped": 0}
    for i, c, r in zip(kept, chosen, rejected, strict=True):
        example = ds.examples[i]
        alone = [score_completions(model, [(example.prompt, x)], batch_size=1)[0].reward for x in example.completions]
        torch.testing.assert_close(torch.tensor(c + r), torch.tensor(alone), atol=1e-5, rtol=0)
        assert len(c) == len(example.chosen) and len(r) == len(example.rejected)


def run_eval(model_dir, tmp_path, *extra):
    out, scores = tmp_path / "results.json", tmp_path / "scores.jsonl"
    args = ["eval-rm", "--model", str(model_dir), "--output", str(out), "--scores", str(scores), "--no-progress", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    return json.loads(out.read_text())["results"], rows, result.output


def test_rewardbench2_figures_recomputed_from_scores_rows(model_dir, tmp_path):
    results, rows, output = run_eval(model_dir, tmp_path, "--data", f"rb2={FIXTURES / 'rewardbench2.jsonl'}")
    source = raw("rewardbench2.jsonl")
    assert len(rows) == len(source) and results["rb2"]["n"] == len(source)
    for row, record in zip(rows, source, strict=True):  # rows in file order, each list in the file's order and length
        assert row["dataset"] == "rb2" and row["id"] == record["id"] and row["subset"] == record["subset"]
        assert len(row["chosen_rewards"]) == len(record["chosen"]) and len(row["rejected_rewards"]) == len(record["rejected"])
    # every subset score recomputed from the rows with the reference rules
    expected = {}
    for subset in sorted({r["subset"] for r in rows}):
        members = [r for r in rows if r["subset"] == subset]
        if subset == "Ties":
            expected[subset] = reference_ties(
                [(r["id"], r["chosen_rewards"] + r["rejected_rewards"], len(r["chosen_rewards"])) for r in members]
            )
        else:
            expected[subset] = float(np.mean([reference_reroll(r["chosen_rewards"] + r["rejected_rewards"]) for r in members]))
    reported = results["rb2"]["rewardbench2"]
    assert set(reported) == set(expected) | {"score"}
    for subset, value in expected.items():
        assert reported[subset] == pytest.approx(value, abs=1e-12), subset
    assert reported["score"] == pytest.approx(float(np.mean(list(expected.values()))), abs=1e-12)
    assert results["rb2"]["subset_counts"] == {s: sum(r["subset"] == s for r in source) for s in expected}
    assert "RewardBench 2 score" in output
    # the Focus prompt lists its chosen answer again among the rejected ones: identical text, identical reward
    focus = next(r for r in rows if r["subset"] == "Focus")
    assert focus["chosen_rewards"][0] == focus["rejected_rewards"][1]


def test_rm_bench_figures_recomputed_from_scores_rows(model_dir, tmp_path):
    results, rows, output = run_eval(model_dir, tmp_path, "--data", f"rmb={FIXTURES / 'rm_bench.json'}")
    source = raw("rm_bench.json")
    assert [r["id"] for r in rows] == [r["id"] for r in source] and [r["domain"] for r in rows] == [r["domain"] for r in source]
    reference = reference_rm_bench(
        [{"domain": r["domain"], "chosen": r["chosen_rewards"], "rejected": r["rejected_rewards"]} for r in rows]
    )
    reported = results["rmb"]["rm_bench"]
    assert set(reported) == {"easy", "normal", "hard", "avg", "matrix", "domains"}
    for key in ("easy", "normal", "hard", "avg"):
        assert reported[key] == pytest.approx(reference["overall"][key], abs=1e-12)
    assert set(reported["domains"]) == {"chat", "math", "code", "safety"}  # safety-refuse and safety-response merge
    for domain, figures in reference["domains"].items():
        np.testing.assert_allclose(reported["domains"][domain]["matrix"], figures["matrix"], atol=1e-12)
        assert reported["domains"][domain]["hard"] == pytest.approx(figures["hard"], abs=1e-12)
        assert reported["domains"][domain]["n"] == sum(r["domain"].startswith(domain) for r in source)
    assert "RM-Bench avg" in output


def test_listwise_and_pairwise_sets_together(model_dir, tmp_path):
    """One eval-rm call: benchmark sets, rated lists (evaluated as their pairs) and plain pairs; rows of each shape."""
    results, rows, _ = run_eval(
        model_dir, tmp_path,
        "--data", f"rb2={FIXTURES / 'rewardbench2.jsonl'}", "--data", f"uf={FIXTURES / 'ultrafeedback.jsonl'}",
        "--data", f"trl={FIXTURES / 'trl_standard.jsonl'}",
    )  # fmt: skip
    assert list(results) == ["rb2", "uf", "trl"]
    assert results["uf"]["n"] == results["uf"]["data"]["loaded"] == 5 + 6  # 6 pairs each less one tie; the third ties
    uf_rows = [r for r in rows if r["dataset"] == "uf"]
    accuracy = np.mean(
        [(r["chosen_reward"] > r["rejected_reward"]) + 0.5 * (r["chosen_reward"] == r["rejected_reward"]) for r in uf_rows]
    )
    assert results["uf"]["accuracy"] == pytest.approx(float(accuracy), abs=1e-7)  # eval-rm averages in float32
    assert {"chosen_rewards", "rejected_rewards", "subset"} <= set(next(r for r in rows if r["dataset"] == "rb2"))


def test_scores_do_not_depend_on_batch_size(model_dir, tmp_path):
    _, small_batches, _ = run_eval(model_dir, tmp_path / "a", "--data", f"rmb={FIXTURES / 'rm_bench.json'}", "--batch-size", "1")
    _, large_batches, _ = run_eval(model_dir, tmp_path / "b", "--data", f"rmb={FIXTURES / 'rm_bench.json'}", "--batch-size", "64")
    for a, b in zip(small_batches, large_batches, strict=True):
        np.testing.assert_allclose(
            a["chosen_rewards"] + a["rejected_rewards"], b["chosen_rewards"] + b["rejected_rewards"], atol=1e-5
        )


def test_truncation_drop_leaves_out_whole_prompts(model, tmp_path):
    ds = load_dataset(str(FIXTURES / "rm_bench.json"), listwise_eval=True)
    longest = [
        max(len(encode_prompt_response(model.tokenizer, e.prompt, c).input_ids) for c in e.completions) for e in ds.examples
    ]
    limit = sorted(longest)[3]
    over = [i for i, n in enumerate(longest) if n > limit]
    kept, _, _, counts = score_listwise(model, ds.examples, max_length=limit, truncation="drop")
    assert over and kept == [i for i in range(len(ds)) if i not in over]
    assert counts == {"dropped": len(over), "truncated": 0}
    kept_keep_end, _, _, counts_keep_end = score_listwise(model, ds.examples, max_length=limit, truncation="keep_end")
    assert kept_keep_end == list(range(len(ds))) and counts_keep_end == {"dropped": 0, "truncated": len(over)}


def test_data_inspect_listwise(tmp_path):
    result = runner.invoke(app, ["data", "inspect", str(FIXTURES / "rewardbench2.jsonl")])
    assert result.exit_code == 0, result.output
    assert "format rewardbench2" in result.output and "loaded 10" in result.output and "Ties 4" in result.output
    result = runner.invoke(app, ["data", "inspect", str(FIXTURES / "ultrafeedback.jsonl"), "--pairs", "best-worst"])
    assert result.exit_code == 0, result.output
    assert "format ultrafeedback" in result.output and "loaded 2, prompts 2, excluded 1" in result.output
    result = runner.invoke(app, ["data", "inspect", str(FIXTURES / "ultrafeedback.jsonl")])
    assert "loaded 11" in result.output and "tied_pairs 2" in result.output


def test_bad_listwise_record_is_one_line(model_dir, tmp_path):
    record = raw("rewardbench2.jsonl")[0] | {"num_rejected": 7}
    path = tmp_path / "rb2.jsonl"
    path.write_text(json.dumps(record) + "\n")
    result = runner.invoke(app, ["eval-rm", "--model", str(model_dir), "--data", str(path), "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 1
    assert f"{path}:1: field 'num_rejected': says 7 but there are 3 rejected completions" in result.output
    assert not (tmp_path / "r.json").exists()


def test_train_rm_on_ultrafeedback_best_worst(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train-rm", "--train-data", str(FIXTURES / "ultrafeedback.jsonl"), "--pairs", "best-worst", "--max-steps", "1",
         "--batch-size", "2", "--output-dir", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["train"]["loaded"] == 2 and metrics["data"]["train"]["prompts"] == 2
    assert json.loads((out / "config.json").read_text())["pairs"] == "best-worst"
