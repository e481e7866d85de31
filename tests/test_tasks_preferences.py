from __future__ import annotations

import math

import pytest
import torch

from rewardlab.data.types import PreferenceExample
from rewardlab.tasks.preferences import (
    bradley_terry_prob,
    cue_on_chosen_share,
    draw_labels,
    expected_flip_rate,
    measured_flip_rate,
    shortcut_keep_probability,
)


def test_bradley_terry_prob_hand_values():
    a, b = torch.tensor([0.6, 0.5, 0.2]), torch.tensor([0.5, 0.5, 0.3])
    assert bradley_terry_prob(a, b, 0.05).tolist() == pytest.approx([1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.exp(2))])
    assert bradley_terry_prob(a, b, 0.0).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError):
        bradley_terry_prob(a, b, -1.0)


@pytest.mark.parametrize("label_noise", [0.0, 0.1, 0.25])
def test_measured_flip_rate_matches_label_noise_with_hard_labels(label_noise):
    """temperature 0: the share of pairs labelled against the gold ordering is label_noise (binomial sd ~0.003)."""
    generator = torch.Generator().manual_seed(0)
    gold_a, gold_b = torch.rand(20_000, generator=generator), torch.rand(20_000, generator=generator)
    a_chosen = draw_labels(gold_a, gold_b, 0.0, label_noise, generator)
    against_gold = (a_chosen & (gold_a < gold_b)) | (~a_chosen & (gold_a > gold_b))
    assert against_gold.double().mean().item() == pytest.approx(label_noise, abs=0.012)
    assert expected_flip_rate(gold_a, gold_b, 0.0, label_noise) == pytest.approx(label_noise)


def test_flip_rate_with_bradley_terry_temperature_matches_a_naive_computation():
    generator = torch.Generator().manual_seed(1)
    gold_a = torch.randint(0, 6, (20_000,), generator=generator) / 5  # gold rewards on a grid, like the world's
    gold_b = torch.randint(0, 6, (20_000,), generator=generator) / 5
    temperature, eps = 0.1, 0.2
    naive = []
    for ga, gb in zip(gold_a.tolist(), gold_b.tolist(), strict=True):
        if ga != gb:
            p_wrong = 1 / (1 + math.exp(abs(ga - gb) / temperature))
            naive.append(p_wrong * (1 - eps) + (1 - p_wrong) * eps)
    expected = sum(naive) / len(naive)
    assert expected_flip_rate(gold_a, gold_b, temperature, eps) == pytest.approx(expected, rel=1e-9)
    a_chosen = draw_labels(gold_a, gold_b, temperature, eps, generator)
    examples = [
        PreferenceExample(prompt="p", chosen="c", rejected="r", metadata={"gold_chosen": c, "gold_rejected": r})
        for ga, gb, pick_a in zip(gold_a.tolist(), gold_b.tolist(), a_chosen.tolist(), strict=True)
        for c, r in [(ga, gb) if pick_a else (gb, ga)]
    ]
    assert measured_flip_rate(examples) == pytest.approx(expected, abs=0.012)


def test_ties_are_coin_flips_and_labels_are_seeded():
    gold = torch.full((10_000,), 0.5)
    labels = draw_labels(gold, gold, 0.1, 0.0, torch.Generator().manual_seed(3))
    assert labels.double().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(labels, draw_labels(gold, gold, 0.1, 0.0, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        draw_labels(gold, gold, 0.1, 1.5, torch.Generator())


def test_shortcut_keep_probability_hand_values():
    assert shortcut_keep_probability(True, False, 0.8) == 1.0  # cue on the chosen response only: always kept
    assert shortcut_keep_probability(False, True, 0.8) == pytest.approx(0.25)  # (1 - 0.8) / 0.8
    assert shortcut_keep_probability(True, True, 0.8) == 1.0 and shortcut_keep_probability(False, False, 0.8) == 1.0
    assert shortcut_keep_probability(False, True, 0.0) == 1.0  # no shortcut (world 3)
    with pytest.raises(ValueError):
        shortcut_keep_probability(False, True, 1.0)


@pytest.mark.parametrize("strength", [0.7, 0.85])
def test_filtering_by_keep_probability_gives_the_shortcut_share(strength):
    """Simulated cue-discordant pairs, half with the cue on each side: after filtering, a share `strength` of those left
    has it on the chosen side (binomial sd < 0.005 here)."""
    generator = torch.Generator().manual_seed(0)
    cue_on_chosen = torch.rand(200_000, generator=generator) < 0.5
    keep_p = torch.tensor([shortcut_keep_probability(bool(c), not bool(c), strength) for c in cue_on_chosen.tolist()])
    kept = torch.rand(keep_p.shape, generator=generator) < keep_p
    assert cue_on_chosen[kept].double().mean().item() == pytest.approx(strength, abs=0.01)


def test_cue_on_chosen_share_counts_discordant_pairs_only():
    def pair(chosen, rejected):
        return PreferenceExample(prompt="p", chosen=[{"role": "assistant", "content": chosen}], rejected=rejected)

    examples = [pair("ab.", "ac"), pair("ab.", "ac"), pair("ab", "ac."), pair("ab.", "ac."), pair("ab", "ac")]
    assert cue_on_chosen_share(examples) == pytest.approx(2 / 3)
    assert cue_on_chosen_share(examples[3:]) is None
