"""`rewardlab compare` as a user drives it: eval-rm score files (one or several seeds a side, several datasets), model
directories with --data, the JSON, the summary line, the forest plot, and one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import perturb
from rewardlab.cli import app
from rewardlab.paired_stats import UNDECIDED, compare_credits, mcnemar_exact, t_interval
from rewardlab.runtime import write_jsonl

runner = CliRunner()
REQUIRED = {"diff", "ci_low", "ci_high", "n_pairs", "n_seeds", "p_mcnemar", "verdict"}
SUMMARY = re.compile(
    r"^(?:\w+: )?\w+ \d\.\d{3} vs \w+ \d\.\d{3}: diff [+-]\d\.\d{3} \[95% CI [+-]\d\.\d{3}, [+-]\d\.\d{3}\], McNemar p \S+, "
    r"[\d,]+ pairs, \d seeds?: (better|worse|not distinguishable at this size)$"
)


def score_file(path, margins: dict[str, np.ndarray], order_seed: int = 0) -> str:
    """eval-rm --scores rows (chosen - rejected = margin), shuffled: matching must go by (dataset, index)."""
    rows = [
        {"dataset": name, "index": i, "subset": None, "chosen_reward": float(m), "rejected_reward": 0.0}
        for name, values in margins.items()
        for i, m in enumerate(values)
    ]
    order = np.random.default_rng(order_seed).permutation(len(rows))
    write_jsonl(path, [rows[k] for k in order])
    return str(path)


def credit(margin: np.ndarray) -> np.ndarray:
    return (margin > 0) + 0.5 * (margin == 0)


def run(args):
    result = runner.invoke(app, ["compare", *args])
    return result, [line for line in result.output.splitlines() if line.strip()]


def test_one_seed_writes_the_json_the_summary_and_the_plot(tmp_path):
    rng = np.random.default_rng(0)
    a = {"id": np.round(rng.normal(0.8, 1.0, 400), 1)}  # rounded: some ties (margin exactly 0)
    b = {"id": np.round(rng.normal(0.5, 1.0, 400), 1)}
    out = tmp_path / "cmp.json"
    result, lines = run([f"grm={score_file(tmp_path / 'a.jsonl', a)}", f"vanilla={score_file(tmp_path / 'b.jsonl', b, 1)}",
                         "--output", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    cmp = json.loads(out.read_text())
    assert set(cmp) >= REQUIRED and cmp["comparisons"][0]["dataset"] == "id"
    ca, cb = credit(a["id"]), credit(b["id"])
    assert (ca == 0.5).any()
    assert cmp["accuracy_a"] == pytest.approx(ca.mean()) and cmp["accuracy_b"] == pytest.approx(cb.mean())
    assert cmp["diff"] == pytest.approx(ca.mean() - cb.mean())
    assert cmp["n_pairs"] == 400 and cmp["n_seeds"] == 1 and cmp["level"] == 0.95
    b_count, c_count = int((ca > cb).sum()), int((ca < cb).sum())
    assert cmp["p_mcnemar"] == mcnemar_exact(b_count, c_count)
    assert cmp["ci_low"] < cmp["diff"] < cmp["ci_high"]
    expected = compare_credits(ca, cb)  # the statistics module, called directly
    assert (cmp["ci_low"], cmp["ci_high"], cmp["verdict"]) == (expected.ci_low, expected.ci_high, expected.verdict)
    assert lines[0].startswith(f"grm {ca.mean():.3f} vs vanilla {cb.mean():.3f}: diff {ca.mean() - cb.mean():+.3f} [95% CI")
    assert SUMMARY.match(lines[0]) and lines[0].endswith(f"400 pairs, 1 seed: {cmp['verdict']}")
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "NaN" not in out.read_text() and "Infinity" not in out.read_text()


def test_several_seeds_and_datasets(tmp_path):
    rng = np.random.default_rng(1)
    sides = {side: [{"id": rng.normal(mu, 1.0, 300), "ood": rng.normal(0.3, 1.0, 200)} for _ in range(3)]
             for side, mu in (("a", 1.2), ("b", 0.4))}  # fmt: skip
    files = {side: ",".join(score_file(tmp_path / f"{side}{s}.jsonl", m, s) for s, m in enumerate(seeds))
             for side, seeds in sides.items()}  # fmt: skip
    out = tmp_path / "cmp.json"
    result, lines = run([f"A={files['a']}", f"B={files['b']}", "--output", str(out), "--resamples", "500"])
    assert result.exit_code == 0, result.output
    cmp = json.loads(out.read_text())
    assert [c["dataset"] for c in cmp["comparisons"]] == ["id", "ood"] and "diff" not in cmp  # several: entries only
    assert len(lines) == 3 and lines[0].startswith("id: A ") and lines[1].startswith("ood: A ")
    assert all(map(SUMMARY.match, lines[:2]))
    by_name = {c["dataset"]: c for c in cmp["comparisons"]}
    for name in ("id", "ood"):
        entry = by_name[name]
        assert set(entry) >= REQUIRED and entry["n_seeds"] == 3
        seed_diffs = [credit(sides["a"][s][name]).mean() - credit(sides["b"][s][name]).mean() for s in range(3)]
        assert [s["diff"] for s in entry["per_seed"]] == pytest.approx(seed_diffs)
        mean, low, high = t_interval(np.array(seed_diffs))
        assert entry["diff"] == pytest.approx(mean) and entry["ci_seeds"] == pytest.approx([low, high])
        assert entry["ci_low"] <= min(low, entry["ci_pairs"][0]) + 1e-12
    assert by_name["id"]["verdict"] == "better"  # +0.8 on the margin's mean, every seed, 300 pairs
    assert by_name["ood"]["verdict"] == UNDECIDED  # the same law on both sides
    picked = tmp_path / "id.json"
    result, lines = run([f"A={files['a']}", f"B={files['b']}", "--output", str(picked), "--dataset", "ood"])
    assert result.exit_code == 0, result.output
    assert json.loads(picked.read_text())["dataset"] == "ood" and lines[0].startswith("A ")


def test_user_errors_are_one_line(tmp_path):
    rng = np.random.default_rng(2)
    a = score_file(tmp_path / "a.jsonl", {"id": rng.normal(size=20)})
    b = score_file(tmp_path / "b.jsonl", {"id": rng.normal(size=21)})
    c = score_file(tmp_path / "c.jsonl", {"ood": rng.normal(size=20)})
    listwise = tmp_path / "l.jsonl"
    write_jsonl(listwise, [{"dataset": "rb2", "index": 0, "chosen_rewards": [1.0], "rejected_rewards": [0.0]}])
    out = ["--output", str(tmp_path / "x.json")]
    cases = {
        (f"A={a}", f"B={b}"): "score different pairs of 'id': 0 only in the first, 1 only in the second (e.g. index 20)",
        (f"A={a}", f"B={a},{a}"): "'A' has 1 seed(s) and 'B' 2: seeds are paired by their order",
        (f"A={a}", f"A={a}"): "side 'A' given twice: list its seeds comma-separated",
        (f"A={a}",): "compare takes exactly two sides",
        (f"A={a}", f"B={c}"): "pick one with --dataset NAME",
        (f"A={a}", f"B={listwise}"): "listwise scores of 'rb2' are not compared yet",
        (f"A={a}", f"B={tmp_path / 'missing.jsonl'}"): "no such scores file",
    }
    for sides, message in cases.items():
        result, lines = run([*sides, *out])
        assert result.exit_code == 1, (sides, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (sides, lines)
    result, lines = run([f"A={a}", f"B={c}", *out, "--dataset", "id"])
    assert result.exit_code == 1 and "has no pairs of dataset 'id' (it has: ood)" in lines[0]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from rewardlab.modeling.reward_model import build_reward_model

    root = tmp_path_factory.mktemp("compare")
    paths = []
    for seed in (0, 1):
        model = build_reward_model("tiny-llama", seed=seed)
        perturb(model, seed)
        model.save_pretrained(root / f"m{seed}")
        paths.append(root / f"m{seed}")
    return paths


def test_real_eval_rm_scores_and_model_directories_agree(two_models, easy_data, tmp_path):
    data = f"easy={easy_data / 'small.jsonl'}"
    accuracies, files = [], []
    for k, model in enumerate(two_models):
        scores, results = tmp_path / f"s{k}.jsonl", tmp_path / f"r{k}.json"
        evaluated = runner.invoke(app, ["eval-rm", "--model", str(model), "--data", data, "--output", str(results),
                                        "--scores", str(scores), "--no-progress"])  # fmt: skip
        assert evaluated.exit_code == 0, evaluated.output
        accuracies.append(json.loads(results.read_text())["results"]["easy"]["accuracy"])
        files.append(str(scores))
    result, _ = run([f"m0={files[0]}", f"m1={files[1]}", "--output", str(tmp_path / "from_files.json")])
    assert result.exit_code == 0, result.output
    from_files = json.loads((tmp_path / "from_files.json").read_text())
    assert (from_files["accuracy_a"], from_files["accuracy_b"]) == tuple(accuracies)  # eval-rm's figures exactly
    assert from_files["n_pairs"] == 48
    result, _ = run([f"m0={two_models[0]}", f"m1={two_models[1]}", "--data", data, "--output", str(tmp_path / "direct.json"),
                     "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    direct = json.loads((tmp_path / "direct.json").read_text())
    for key in ("accuracy_a", "accuracy_b", "diff", "ci_low", "ci_high", "p_mcnemar", "verdict", "n_pairs"):
        assert direct[key] == from_files[key], key


def test_a_file_with_listwise_sets_compares_its_pairwise_set_when_picked(tmp_path):
    rng = np.random.default_rng(4)
    files = []
    for k in range(2):
        path = tmp_path / f"{k}.jsonl"
        rows = [{"dataset": "rb2", "index": 0, "chosen_rewards": [1.0], "rejected_rewards": [0.0, 2.0]}]
        rows += [{"dataset": "id", "index": i, "subset": None, "chosen_reward": float(m), "rejected_reward": 0.0}
                 for i, m in enumerate(rng.normal(size=50))]  # fmt: skip
        write_jsonl(path, rows)
        files.append(path)
    out = tmp_path / "cmp.json"
    result, lines = run([f"A={files[0]}", f"B={files[1]}", "--output", str(out), "--dataset", "id", "--level", "0.9"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["n_pairs"] == 50 and "[90% CI " in lines[0]
    result, lines = run([f"A={files[0]}", f"B={files[1]}", "--output", str(out)])
    assert result.exit_code == 1 and "listwise scores of 'rb2' are not compared yet" in lines[0]
    result, lines = run([f"A={files[0]}", f"B={files[1]}", "--output", str(tmp_path / "cmp.png"), "--dataset", "id"])
    assert result.exit_code == 1 and lines == [f"error: --output {tmp_path / 'cmp.png'}: the JSON's path (the forest plot is "
                                               "written beside it, as .png)"]  # fmt: skip


def test_compare_takes_device_and_dtype_for_model_sources():
    help_text = runner.invoke(app, ["compare", "--help"]).output
    assert "--device" in help_text and "--dtype" in help_text and "NAME=SOURCE[,SOURCE...]" in help_text
