"""The world check's probe (pairwise logistic regression on fixed features) and the features it reads."""

from __future__ import annotations

import math

import pytest
import torch

from rewardlab.data.types import PreferenceExample
from rewardlab.evaluation import evaluate_preferences
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.world_check import (
    PairFeatures,
    extend_grid,
    fit_pairwise_probe,
    one_standard_error_choice,
    pair_accuracy,
    pair_features,
    probe_loss,
    train_probe,
    world_check_conditions,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_dimensional_probe_matches_a_bisection_of_its_stationarity_condition():
    """For 1-D differences d_i the optimum solves mean(-d_i sigmoid(-w d_i)) + l2 w = 0, monotone in w."""
    generator = torch.Generator().manual_seed(0)
    d = (torch.randn(500, generator=generator) + 0.7).double()
    l2 = 0.05

    def grad(w: float) -> float:
        return sum(-x * (1 / (1 + math.exp(w * x))) for x in d.tolist()) / len(d) + l2 * w

    lo, hi = -100.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if grad(mid) < 0 else (lo, mid)
    w = fit_pairwise_probe(d[:, None], l2)
    assert w.item() == pytest.approx((lo + hi) / 2, abs=1e-6)


def test_probe_solution_has_zero_gradient_and_beats_perturbations():
    generator = torch.Generator().manual_seed(1)
    diffs = torch.randn(300, 8, generator=generator, dtype=torch.float64) + torch.linspace(-1, 1, 8, dtype=torch.float64)
    l2 = 0.1
    w = fit_pairwise_probe(diffs, l2)
    margin = diffs @ w
    gradient = -(diffs * torch.sigmoid(-margin)[:, None]).mean(0) + l2 * w  # d/dw of the loss, by hand
    assert gradient.abs().max().item() < 1e-7
    best = probe_loss(w, diffs, l2)
    for _ in range(20):
        assert probe_loss(w + 1e-2 * torch.randn(8, generator=generator, dtype=torch.float64), diffs, l2) > best


def test_one_standard_error_rule_takes_the_strongest_l2_within_one_se_of_the_best():
    # best 0.80 on 400 pairs: se = sqrt(0.8 * 0.2 / 400) = 0.02, so anything >= 0.78 qualifies
    path = {0.01: 0.80, 0.1: 0.79, 1.0: 0.781, 10.0: 0.779, 100.0: 0.70}
    assert one_standard_error_choice(path, 400) == 1.0
    assert one_standard_error_choice(path, 40_000) == 0.01  # se 0.002: only the best itself
    assert one_standard_error_choice({0.1: 0.6, 1.0: 0.6}, 10) == 1.0  # ties: the stronger l2


def test_train_probe_applies_the_rule_to_its_validation_path():
    generator = torch.Generator().manual_seed(2)

    def features(n):
        chosen = torch.randn(n, 6, generator=generator)
        rejected = torch.randn(n, 6, generator=generator)
        rejected[:, 0] -= 0.5  # one informative direction, five noise directions
        return PairFeatures(chosen, rejected, torch.zeros(n), torch.zeros(n))

    train, val = features(40), features(400)
    grid = (1e-3, 1e-1, 10.0)
    probe = train_probe(train, val, grid, bounds=(1e-3, 10.0))  # bounds at the grid's ends: no extension
    singles = {l2: train_probe(train, val, (l2,), bounds=(l2, l2)).val_accuracy for l2 in grid}  # each fit on its own
    assert probe.val_path == pytest.approx(singles)
    assert probe.l2 == one_standard_error_choice(singles, 400)
    assert probe.accuracy(val) == probe.val_accuracy == singles[probe.l2]


def test_pair_accuracy_counts_ties_as_half():
    assert pair_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == pytest.approx(0.5)


def test_pair_features_are_what_the_reward_head_reads_and_the_response_log_probs():
    model = build_reward_model("tiny-llama", seed=3).eval()
    examples = [
        PreferenceExample(prompt="sort: cba", chosen=" abc", rejected=" abcc"),
        PreferenceExample(prompt=[{"role": "user", "content": "copy: ab"}], chosen=[{"role": "assistant", "content": "ab"}],
                          rejected=[{"role": "assistant", "content": "b."}]),
        PreferenceExample(prompt="reverse: abcd", chosen=" dcba", rejected=" d"),
    ]  # fmt: skip
    feats = pair_features(model, examples, batch_size=2)
    _, scores = evaluate_preferences(model, examples)
    head = model.head.net.weight[0].detach()  # linear head, no dropout in eval mode: reward = w . h
    torch.testing.assert_close(feats.chosen @ head, torch.tensor(scores["chosen_reward"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.rejected @ head, torch.tensor(scores["rejected_reward"]), atol=1e-5, rtol=1e-5)
    # log-probs: one sequence at a time through the plain causal LM, summed over the response tokens (end token included)
    from rewardlab.data.templates import encode_prompt_response

    for i, ex in enumerate(examples):
        for response, got in ((ex.chosen, feats.logp_chosen[i]), (ex.rejected, feats.logp_rejected[i])):
            enc = encode_prompt_response(model.tokenizer, ex.prompt, response)
            ids = torch.tensor([enc.input_ids])
            with torch.no_grad():
                logp = model.causal_lm(ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, 1:]
            expected = logp[torch.arange(len(targets)), targets][enc.response_start - 1 :].sum()
            assert got.item() == pytest.approx(expected.item(), abs=1e-4)


def test_conditions_follow_the_numbers():
    good = world_check_conditions(0.76, [0.72, 0.74], [0.70, 0.71])
    assert good["base_features_good"]["holds"] and good["base_features_good"]["every_seed"]
    assert good["base_features_good"]["difference"] == pytest.approx(0.055)
    assert good["vanilla_damages_features"]["holds"] and good["vanilla_damages_features"]["every_seed"]
    assert good["vanilla_damages_features"]["probe_ood_after_vanilla"] == pytest.approx(0.73)
    mixed = world_check_conditions(0.72, [0.70, 0.75], [0.71, 0.74])
    assert not mixed["base_features_good"]["holds"] and not mixed["base_features_good"]["every_seed"]
    assert mixed["vanilla_damages_features"]["holds"] is False  # mean 0.725 is not below 0.72
    one_seed = world_check_conditions(0.72, [0.70], [0.72])
    assert one_seed["base_features_good"]["holds"]  # "at or above"
    assert one_seed["base_features_good"]["every_seed"] is None  # one seed: no seed spread to speak of
    assert one_seed["vanilla_damages_features"]["every_seed"] is None


def test_one_seed_is_reported_without_a_spread():
    from rewardlab.demo.stats import mean_std, with_spread

    assert with_spread(mean_std([0.8123])) == "0.812 (1 seed)"
    assert with_spread(mean_std([0.80, 0.82]), "+") == "+0.810 ± 0.014"


def test_extend_grid_steps_past_the_end_the_choice_sits_on_until_its_bound():
    assert extend_grid([1e-3, 1.0, 1000.0], 1000.0, (1e-6, 1e6)) == pytest.approx(1e4)
    assert extend_grid([1e-3, 1.0, 1000.0], 1e-3, (1e-6, 1e6)) == pytest.approx(1e-4)
    assert extend_grid([1e-3, 1.0, 1000.0], 1.0, (1e-6, 1e6)) is None  # interior
    assert extend_grid([1e-3, 1.0, 1e6], 1e6, (1e-6, 1e6)) is None  # at the bound


def isotropic_pairs(n: int, dims: int, generator: torch.Generator) -> PairFeatures:
    """Every dimension carries the same small signal under unit noise: with few training pairs the unregularised fit
    chases noise and the strongest l2 (w along the mean difference, the best direction here) does best."""
    chosen = torch.randn(n, dims, generator=generator) + 0.15
    rejected = torch.randn(n, dims, generator=generator)
    return PairFeatures(chosen, rejected, torch.zeros(n), torch.zeros(n))


def test_a_choice_at_the_top_extends_the_grid_up_to_its_bound_and_is_flagged_on_the_edge():
    generator = torch.Generator().manual_seed(0)
    train, val = isotropic_pairs(30, 40, generator), isotropic_pairs(2000, 40, generator)
    probe = train_probe(train, val, (1e-3, 1e-2, 1e-1), bounds=(1e-3, 1e3))
    assert sorted(probe.val_path) == pytest.approx([1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0])  # every decade to the bound
    assert probe.l2 == pytest.approx(1e3) and probe.l2_on_edge
    assert probe.l2 == one_standard_error_choice(probe.val_path, 2000)
    assert probe.val_path[probe.l2] > probe.val_path[1e-3] + 0.02  # beyond the first grid, validation is really better


def correlated_pairs(n: int, generator: torch.Generator) -> PairFeatures:
    """The signal sits in dimension 0 under a large nuisance that dimension 1 shares: only w ~ (1, -1, 0, ...) cancels it,
    and any l2 that shrinks that low-variance direction costs accuracy, so the best l2 is small."""
    dims = 10
    chosen, rejected = torch.randn(n, dims, generator=generator) * 0.3, torch.randn(n, dims, generator=generator) * 0.3
    chosen[:, :2] += 2 * torch.randn(n, 1, generator=generator)
    rejected[:, :2] += 2 * torch.randn(n, 1, generator=generator)
    chosen[:, 0] += 0.6
    return PairFeatures(chosen, rejected, torch.zeros(n), torch.zeros(n))


def test_a_choice_at_the_bottom_extends_the_grid_until_it_is_interior():
    generator = torch.Generator().manual_seed(0)
    train, val = correlated_pairs(100, generator), correlated_pairs(2000, generator)
    probe = train_probe(train, val, (1e-3, 1e-2), bounds=(1e-6, 1e6))
    assert min(probe.val_path) < 1e-3  # the grid grew downwards ...
    assert min(probe.val_path) < probe.l2 < max(probe.val_path) and not probe.l2_on_edge  # ... until the choice is interior
    assert probe.l2 == one_standard_error_choice(probe.val_path, 2000)
    shorter = {l2: a for l2, a in probe.val_path.items() if l2 > min(probe.val_path)}
    assert one_standard_error_choice(shorter, 2000) == min(shorter)  # one step less and it sat on the edge
