"""Tests for rewardlab.rl.bon_math against hand-computed values and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rewardlab.rl.bon_math import (
    best_of_n,
    bon_curve,
    empirical_outcomes,
    fit_gao_bon,
    kl_bon,
    kl_bon_discrete,
    n_grid,
    normalise_curve,
    unbiased_bon_weights,
)


def test_kl_bon_values() -> None:
    assert kl_bon(1) == 0.0
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5, abs=1e-15)
    assert kl_bon(405) == pytest.approx(math.log(405) - 404 / 405, abs=1e-12)
    np.testing.assert_allclose(kl_bon(np.array([1, 2, 4])), [0.0, math.log(2) - 0.5, math.log(4) - 0.75], atol=1e-15)
    assert isinstance(kl_bon(3), float)
    with pytest.raises(ValueError):
        kl_bon(0)


def test_n_grid() -> None:
    assert n_grid(1) == [1]
    assert n_grid(5) == [1, 2, 3, 4, 5]
    assert n_grid(16) == [1, 2, 3, 4, 6, 8, 12, 16]
    grid = n_grid(405)
    assert grid[:10] == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert grid[-3:] == [256, 384, 405]
    assert all(b / a <= 2 for a, b in zip(grid[:-1], grid[1:], strict=True))
    assert grid == sorted(set(grid))
    with pytest.raises(ValueError):
        n_grid(0)


def test_best_of_n_uses_first_n_and_breaks_ties_to_first() -> None:
    scores = np.array(
        [
            [0.1, 0.5, 0.5, 9.0],  # tie between 1 and 2 -> 1; the 9.0 is only seen with n = 4
            [2.0, 1.0, 3.0, 3.0],
        ]
    )
    np.testing.assert_array_equal(best_of_n(scores, 1), [0, 0])
    np.testing.assert_array_equal(best_of_n(scores, 2), [1, 0])
    np.testing.assert_array_equal(best_of_n(scores, 3), [1, 2])
    np.testing.assert_array_equal(best_of_n(scores, 4), [3, 2])
    np.testing.assert_array_equal(best_of_n(torch.tensor(scores), 3), [1, 2])
    with pytest.raises(ValueError):
        best_of_n(scores, 5)


def test_bon_curve_hand_computed() -> None:
    proxy = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    gold = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    curve = bon_curve(proxy, gold, [1, 2, 3])
    # N=1: picks (0, 0); N=2: picks (1, 0); N=3: picks (1, 2)
    assert curve["n"] == [1, 2, 3]
    np.testing.assert_allclose(curve["kl"], [kl_bon(1), kl_bon(2), kl_bon(3)])
    np.testing.assert_allclose(curve["proxy"], [0.5, 1.5, 4.0])
    np.testing.assert_allclose(curve["gold"], [25.0, 30.0, 40.0])
    # SEM over 2 prompts = |x1 - x2| / 2  (std with ddof=1 is |x1 - x2| / sqrt 2, divided by sqrt 2)
    np.testing.assert_allclose(curve["proxy_sem"], [0.5, 1.5, 1.0])
    np.testing.assert_allclose(curve["gold_sem"], [15.0, 10.0, 20.0])


def test_unbiased_weights_match_combinatorics() -> None:
    weights = unbiased_bon_weights(10, 3)
    expected = [math.comb(i, 2) / math.comb(10, 3) for i in range(10)]
    np.testing.assert_allclose(weights, expected, atol=1e-12)
    for n_total, n in [(5, 1), (405, 1), (405, 200), (405, 405)]:
        assert unbiased_bon_weights(n_total, n).sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(unbiased_bon_weights(4, 4), [0, 0, 0, 1], atol=1e-12)


def test_unbiased_bon_curve_matches_brute_force_over_subsets() -> None:
    rng = np.random.default_rng(0)
    num_prompts, num_samples = 3, 6
    proxy = rng.integers(0, 3, size=(num_prompts, num_samples)).astype(float)  # small integers: many ties
    gold = rng.normal(size=(num_prompts, num_samples))
    grid = [1, 2, 3, 6]
    curve = bon_curve(proxy, gold, grid, unbiased=True)
    for k, n in enumerate(grid):
        proxy_means, gold_means = [], []
        for p in range(num_prompts):
            picks = []
            for subset in itertools.combinations(range(num_samples), n):  # ascending indices
                best = max(subset, key=lambda j: (proxy[p, j], -j))  # highest score, ties -> lowest index
                picks.append(best)
            proxy_means.append(np.mean([proxy[p, j] for j in picks]))
            gold_means.append(np.mean([gold[p, j] for j in picks]))
        assert curve["proxy"][k] == pytest.approx(np.mean(proxy_means), abs=1e-12)
        assert curve["gold"][k] == pytest.approx(np.mean(gold_means), abs=1e-12)
    # With N = n every subset is the full set: equal to the plain curve.
    plain = bon_curve(proxy, gold, [num_samples])
    assert plain["gold"][0] == pytest.approx(curve["gold"][-1], abs=1e-12)


def test_fit_gao_bon_recovers_coefficients() -> None:
    d = np.sqrt(kl_bon(np.array(n_grid(405))))
    rewards = d * (1.3 - 0.4 * d)
    a, b = fit_gao_bon(d, rewards)
    assert a == pytest.approx(1.3, abs=1e-9)
    assert b == pytest.approx(0.4, abs=1e-9)


def test_normalise_curve() -> None:
    np.testing.assert_allclose(normalise_curve([2.0, 2.5, 1.0]), [0.0, 0.5, -1.0])
    np.testing.assert_allclose(normalise_curve(torch.tensor([-1.0, 0.0])), [0.0, 1.0])


def enumerated_bon_kl(outcome_of_draw: list, draw_probs: list[float], draw_scores: list[float], n: int) -> float:
    """Exact KL(best-of-n || base) by enumerating every ordered n-tuple of draws: the pick is `best_of_n`'s (highest
    score, first among ties); probabilities are accumulated per OUTCOME (draws with the same outcome are one response)."""
    base: dict = {}
    for outcome, prob in zip(outcome_of_draw, draw_probs, strict=True):
        base[outcome] = base.get(outcome, 0.0) + prob
    picked: dict = {}
    for draws in itertools.product(range(len(draw_probs)), repeat=n):
        prob = math.prod(draw_probs[d] for d in draws)
        best = int(best_of_n(np.array([[draw_scores[d] for d in draws]]), n)[0])
        outcome = outcome_of_draw[draws[best]]
        picked[outcome] = picked.get(outcome, 0.0) + prob
    assert sum(picked.values()) == pytest.approx(1.0, abs=1e-12)
    return sum(q * math.log(q / base[o]) for o, q in picked.items() if q > 0)


def test_kl_bon_discrete_matches_enumeration_with_ties() -> None:
    """F(y)^N - F(y-)^N with tied rewards grouped, against brute force over all N-tuples of draws."""
    values = [0.5, 1.0, 1.0, -0.2, 0.5]  # two ties: outcomes 1 and 2 at the top, 0 and 4 in the middle
    counts = [3, 1, 2, 2, 1]
    total = sum(counts)
    for n in range(1, 6):
        expected = enumerated_bon_kl(list(range(5)), [c / total for c in counts], values, n)
        assert kl_bon_discrete(values, counts, n) == pytest.approx(expected, abs=1e-12), n
    assert kl_bon_discrete(values, counts, 1) == 0.0
    assert kl_bon_discrete([3.0], [7], 16) == 0.0  # one response: best-of-N changes nothing
    with pytest.raises(ValueError):
        kl_bon_discrete([1.0, 2.0], [1.0], 2)


def test_empirical_kl_of_samples_with_repeats_matches_enumeration() -> None:
    """The curve's kl_empirical: each prompt's samples as an empirical distribution (repeated texts are one response,
    two texts tie in the proxy), checked against enumerating draws of sample indices; averaged over prompts."""
    texts = [["a", "b", "a", "c", "a", "b"], ["x", "y", "z", "x", "w", "v"]]
    score_of = {"a": 0.2, "b": 0.9, "c": 0.2, "x": -1.0, "y": 0.3, "z": 2.0, "w": 0.3, "v": 0.1}
    proxy = np.array([[score_of[t] for t in row] for row in texts])
    gold = np.zeros_like(proxy)
    grid = [1, 2, 3, 4]
    curve = bon_curve(proxy, gold, grid, responses=texts)
    for k, n in enumerate(grid):
        per_prompt = [enumerated_bon_kl(row, [1 / 6] * 6, [score_of[t] for t in row], n) for row in texts]
        assert curve["kl_empirical"][k] == pytest.approx(np.mean(per_prompt), abs=1e-12)
        assert curve["kl_empirical"][k] <= curve["kl"][k] + 1e-12
    assert curve["kl_empirical"][0] == 0.0 and curve["kl_empirical"][-1] > 0.1
    rewards, counts = empirical_outcomes(texts[0], proxy[0])
    assert rewards.tolist() == [0.2, 0.9, 0.2] and counts.tolist() == [3.0, 2.0, 1.0]
    assert "kl_empirical" not in bon_curve(proxy, gold, grid)
    with pytest.raises(ValueError, match="responses"):
        bon_curve(proxy, gold, grid, responses=texts[:1])


def test_kl_bon_discrete_is_below_the_analytic_formula_and_reaches_it_without_repeats() -> None:
    """Beirami et al.: log N - (N-1)/N bounds the discrete KL and is its limit for many equally likely outcomes."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        k = int(rng.integers(1, 12))
        n = int(rng.integers(1, 300))
        assert kl_bon_discrete(rng.normal(size=k), rng.integers(1, 9, size=k), n) <= kl_bon(n) + 1e-12
    for n in (2, 16, 64):
        outcomes = 200_000
        assert kl_bon_discrete(np.arange(outcomes), np.ones(outcomes), n) == pytest.approx(kl_bon(n), abs=2e-3)
