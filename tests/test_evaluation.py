"""Pair scoring for evaluation: padding-free and padded batches give the same rewards, for single models and ensembles."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import perturb
from rewardlab.data.pairs import encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.evaluation import preference_metrics, score_pairs
from rewardlab.modeling.ensemble import EnsembleRewardModel
from rewardlab.modeling.reward_model import build_reward_model

EXAMPLES = [  # lengths differ within and across pairs, so the padded batches carry real padding
    PreferenceExample(prompt="reverse: abcd", chosen="dcba", rejected="abdc and a much longer tail"),
    PreferenceExample(prompt="hi", chosen="a fairly long answer to a short prompt", rejected="no"),
    PreferenceExample(prompt="sort: ba", chosen="ab", rejected="ba"),
    PreferenceExample(prompt="copy: hgfedcba, then say something", chosen="hgfedcba", rejected="hgfedcb"),
    PreferenceExample(prompt="x", chosen="y", rejected="z"),
]


@pytest.mark.parametrize("ensemble", [False, True], ids=["single", "ensemble"])
def test_packed_scoring_equals_padded(ensemble):
    members = []
    for seed in range(2 if ensemble else 1):
        member = build_reward_model("tiny-llama", seed=seed)
        perturb(member, seed)
        members.append(member)
    model = EnsembleRewardModel(members, "min") if ensemble else members[0]
    pairs, _ = encode_pairs(model.tokenizer, EXAMPLES, max_length=None)
    padded = score_pairs(model, pairs, batch_size=2, packed=False)
    packed = score_pairs(model, pairs, batch_size=2, packed=True)
    assert torch.equal(padded[2], packed[2]) and padded[2].tolist() == list(range(len(EXAMPLES)))
    for a, b in zip(padded[:2], packed[:2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # and each pair's rewards are those of its sequences scored alone (no batch effects at all)
    alone = score_pairs(model, pairs[3:4], batch_size=1, packed=False)
    torch.testing.assert_close(alone[0], packed[0][3:4], atol=1e-5, rtol=0)


def test_preference_metrics_loss_is_the_mean_pairwise_log_loss():
    chosen, rejected = torch.tensor([2.0, 1.0, 0.5, 30.0]), torch.tensor([1.0, 1.0, 0.7, -30.0])
    by_hand = [math.log(1.0 + math.exp(-(c - r))) for c, r in zip(chosen.tolist(), rejected.tolist(), strict=True)]
    assert preference_metrics(chosen, rejected)["loss"] == pytest.approx(sum(by_hand) / 4, rel=1e-12)


def test_preference_metrics_count_ties_as_half():
    chosen, rejected = torch.tensor([2.0, 1.0, 0.5, 3.0]), torch.tensor([1.0, 1.0, 0.7, 0.0])
    metrics = preference_metrics(chosen, rejected, ["a", "a", "b", "b"])
    assert metrics["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert metrics["per_subset"] == {"a": {"accuracy": 0.75, "n": 2}, "b": {"accuracy": 0.5, "n": 2}}
