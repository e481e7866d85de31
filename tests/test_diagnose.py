"""The prefix-signal diagnostic: prefix lengths and gathers by hand, prefix rewards from one pass equal to scoring each
prefix alone, every figure recomputed independently, and the full-length point equal to eval-rm's accuracy exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import perturb
from rewardlab.cli import app
from rewardlab.data.loading import load_preferences
from rewardlab.data.pairs import encode_pairs
from rewardlab.diagnose import (
    average_ranks,
    fractions,
    pearson,
    prefix_lengths,
    prefix_rewards,
    prefix_signal_metrics,
    rewards_before_last,
    score_prefixes,
    spearman,
    token_reward_spread,
)
from rewardlab.modeling.ensemble import EnsembleRewardModel
from rewardlab.modeling.reward_model import build_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def model():
    rm = build_reward_model("tiny-llama", seed=5)
    perturb(rm, 5)
    return rm.eval()


# ----------------------------------------------------------------------------------------------------------------------
# pure pieces


def test_prefix_lengths_by_hand():
    lengths = prefix_lengths(torch.tensor([10, 3, 1, 6]))
    assert lengths[0].tolist() == list(range(1, 11))
    assert lengths[1].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]  # ceil(0.3), ceil(0.6), ..., ceil(2.7), 3
    assert lengths[2].tolist() == [1] * 10
    assert lengths[3].tolist() == [1, 2, 2, 3, 3, 4, 5, 5, 6, 6]


def test_prefix_lengths_are_exact_ceilings():
    """Integer arithmetic: 0.3 * 10 must give 3 tokens, not ceil(3.0000000000000004) = 4."""
    n = torch.arange(1, 300)
    lengths = prefix_lengths(n)
    expected = [[math.ceil(i * int(k) / 10) for i in range(1, 11)] for k in n]  # exact: integer numerator
    assert lengths.tolist() == expected
    with pytest.raises(ValueError, match="at least one token"):
        prefix_lengths(torch.tensor([0]))


def test_prefix_rewards_gathers_the_right_positions():
    positions = torch.arange(20, dtype=torch.float32).view(2, 10)  # value = row * 10 + column
    start, n = torch.tensor([3, 0]), torch.tensor([5, 10])
    got = prefix_rewards(positions, start, n)
    # row 0: response at columns 3..7, prefix k ends at column 3 + k - 1; row 1: columns 0..9
    assert got[0].tolist() == [3 + k - 1 for k in [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]
    assert got[1].tolist() == [10 + k - 1 for k in range(1, 11)]


def test_rewards_before_last_by_hand():
    positions = torch.arange(1, 17, dtype=torch.float32).view(2, 8)  # value = 1 + row * 8 + column
    mask = torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])  # row 1 left-padded by two
    start, n = torch.tensor([5, 2]), torch.tensor([3, 1])
    # row 0: response at 5..7, before its last token = column 6; row 1: one response token, no prompt left -> 0
    assert rewards_before_last(positions, mask, start, n).tolist() == [7.0, 0.0]
    assert rewards_before_last(positions, mask, torch.tensor([5, 4]), torch.tensor([1, 4])).tolist() == [5.0, 15.0]


def test_ranks_and_correlations():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y[:25] += x[:25]
    assert pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    # Spearman = Pearson of the ranks; without ties the ranks are the inverse permutation of the sort order
    rx, ry = np.argsort(np.argsort(x)) + 1, np.argsort(np.argsort(y)) + 1
    assert spearman(torch.tensor(x), torch.tensor(y)) == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    assert math.isnan(pearson(torch.ones(5), torch.arange(5.0)))  # a constant side: undefined


def test_token_reward_spread_by_hand():
    tokens = [torch.tensor([1.0, -1.0, 2.0]), torch.tensor([0.0, 4.0])]
    spread = token_reward_spread(tokens, torch.tensor([1.0, 3.0]))
    pooled = np.array([1.0, -1.0, 2.0, 0.0, 4.0])
    assert spread["tokens"] == 5 and spread["mean"] == pytest.approx(pooled.mean())
    assert spread["std"] == pytest.approx(pooled.std()) and spread["mean_abs"] == pytest.approx(np.abs(pooled).mean())
    assert spread["p05"] == pytest.approx(np.quantile(pooled, 0.05)) and spread["p95"] == pytest.approx(np.quantile(pooled, 0.95))
    assert spread["last_token_share"] == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert spread["sequence_reward_std"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------------------
# one pass vs each prefix alone


@pytest.fixture(scope="module")
def examples(easy_data):
    return (
        load_preferences(str(easy_data / "small.jsonl")).examples[:12] + load_preferences(str(FIXTURES / "hh.jsonl.gz")).examples
    )


def alone(model, ids: list[int]) -> float:
    """R(tokens): the sequence scored by itself, one row, padded path."""
    with torch.no_grad():
        out = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    return out.sequence_rewards.item()


def test_prefix_rewards_equal_scoring_each_prefix_alone(model, examples):
    scores = score_prefixes(model, examples, batch_size=4)
    pairs, _ = encode_pairs(model.tokenizer, examples, 1024)
    assert scores.index.tolist() == list(range(len(examples)))
    for p, pair in enumerate(pairs):
        for side, seq, prefix, n in (
            ("chosen", pair.chosen, scores.chosen[p], scores.chosen_tokens[p]),
            ("rejected", pair.rejected, scores.rejected[p], scores.rejected_tokens[p]),
        ):
            response = len(seq.input_ids) - seq.response_start
            assert n == response, side
            for s, fraction in enumerate(fractions()):
                k = math.ceil(round(fraction * 10) * response / 10)
                expected = alone(model, seq.input_ids[: seq.response_start + k])
                assert prefix[s].item() == pytest.approx(expected, abs=1e-5), (p, side, fraction)
            before_last = getattr(scores, f"{side}_before_last")[p].item()  # every response token but the last
            assert before_last == pytest.approx(alone(model, seq.input_ids[:-1]), abs=1e-5), (p, side)


def test_token_rewards_are_differences_of_prefix_scores(model, examples):
    scores = score_prefixes(model, examples[:6], batch_size=3)
    pairs, _ = encode_pairs(model.tokenizer, examples[:6], 1024)
    for p, pair in enumerate(pairs):
        seq = pair.chosen
        prefix_scores = [alone(model, seq.input_ids[:t]) for t in range(seq.response_start, len(seq.input_ids) + 1)]
        expected = np.diff(prefix_scores)  # r_t = R(x, y<=t) - R(x, y<t), the first against R(x)
        np.testing.assert_allclose(scores.token_rewards[p].numpy(), expected, atol=2e-5)
        assert scores.token_rewards[p].sum().item() == pytest.approx(prefix_scores[-1] - prefix_scores[0], abs=2e-5)


def test_figures_recomputed_independently(model, examples):
    scores = score_prefixes(model, examples, batch_size=5)
    metrics = prefix_signal_metrics(
        scores.chosen, scores.rejected, scores.token_rewards, scores.chosen_before_last, scores.rejected_before_last
    )
    c, r = scores.chosen.double().numpy(), scores.rejected.double().numpy()
    final = np.concatenate([c[:, -1], r[:, -1]])
    for s, point in enumerate(metrics["prefix_accuracy"]):
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(c[:, s], r[:, s], strict=True)]
        assert point["fraction"] == (s + 1) / 10 and point["accuracy"] == pytest.approx(np.mean(wins), abs=1e-6)
        corr = metrics["prefix_correlation"][s]
        assert corr["pearson"] == pytest.approx(np.corrcoef(np.concatenate([c[:, s], r[:, s]]), final)[0, 1], abs=1e-9)
        assert corr["margin_pearson"] == pytest.approx(np.corrcoef(c[:, s] - r[:, s], c[:, -1] - r[:, -1])[0, 1], abs=1e-9)
    assert metrics["prefix_correlation"][-1]["pearson"] == pytest.approx(1.0)
    before = [
        1.0 if a > b else 0.5 if a == b else 0.0
        for a, b in zip(scores.chosen_before_last, scores.rejected_before_last, strict=True)
    ]
    assert metrics["accuracy_before_last_token"] == pytest.approx(np.mean(before), abs=1e-6)
    assert metrics["mean_prefix_accuracy"] == pytest.approx(np.mean([p["accuracy"] for p in metrics["prefix_accuracy"][:-1]]))
    pooled = torch.cat(scores.token_rewards).double().numpy()
    assert metrics["r3hf_token_rewards"]["std"] == pytest.approx(pooled.std(), abs=1e-9)
    assert metrics["r3hf_token_rewards"]["tokens"] == int(scores.chosen_tokens.sum() + scores.rejected_tokens.sum())


# ----------------------------------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module", params=["single", "ensemble"])
def model_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("diagnose") / request.param
    members = []
    for seed in range(2 if request.param == "ensemble" else 1):
        member = build_reward_model("tiny-llama", seed=seed)
        perturb(member, seed)
        members.append(member)
    (EnsembleRewardModel(members, "mean") if len(members) > 1 else members[0]).save_pretrained(path)
    return path


def test_full_length_point_equals_eval_rm_accuracy_exactly(model_dir, easy_data, tmp_path):
    data = [
        "--data", f"easy={easy_data / 'test.jsonl'}", "--data", f"hh={FIXTURES / 'hh.jsonl.gz'}",
        "--data", f"uf={FIXTURES / 'ultrafeedback.jsonl'}",
    ]  # fmt: skip
    evaluated = runner.invoke(
        app,
        ["eval-rm", "--model", str(model_dir), *data, "--output", str(tmp_path / "r.json"), "--batch-size", "7", "--no-progress"],
    )
    assert evaluated.exit_code == 0, evaluated.output
    out = tmp_path / "diag"
    diagnosed = runner.invoke(
        app, ["diagnose", "--model", str(model_dir), *data, "--output", str(out), "--batch-size", "7", "--no-progress"]
    )
    assert diagnosed.exit_code == 0, diagnosed.output
    accuracy = {name: m["accuracy"] for name, m in json.loads((tmp_path / "r.json").read_text())["results"].items()}
    results = json.loads((out / "diagnose.json").read_text())
    assert list(results) == ["easy", "hh", "uf"]
    for name, m in results.items():
        assert m["prefix_accuracy"][-1] == {"fraction": 1.0, "accuracy": accuracy[name]}  # exactly, not approximately
        assert m["accuracy"] == accuracy[name] and [p["fraction"] for p in m["prefix_accuracy"]] == fractions()
        assert len(m["prefix_correlation"]) == 10 and m["r3hf_token_rewards"]["tokens"] > 0
    assert results["easy"]["n"] == 300 and results["uf"]["data"]["loaded"] == 11
    assert (out / "prefix_signal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "diagnose" and config["batch_size"] == 7
    assert "prefix accuracy 0.1:" in diagnosed.output


def test_diagnose_bad_data_is_one_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "Q", "chosen": " a"}\n')
    args = ["diagnose", "--model", "tiny-llama", "--data", str(path), "--format", "trl", "--output", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and f"{path}:1: field 'rejected': missing field" in result.output
    assert not (tmp_path / "o").exists()
