"""rewardlab.paired_stats: exact McNemar, Student's t quantile, the paired bootstrap, and the verdict's calibration by
simulation (the null fires at no more than its stated rate; a planted effect is found)."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from rewardlab.losses import pairwise_accuracy
from rewardlab.paired_stats import (
    BETTER,
    EXACT_UP_TO,
    UNDECIDED,
    WORSE,
    binomial_cdf_half,
    compare_credits,
    discordant_counts,
    family_verdict,
    holm_adjust,
    mcnemar_exact,
    pair_credit,
    paired_bootstrap,
    student_t_cdf,
    student_t_quantile,
    t_interval,
    verdict,
)

LEVEL = 0.95
REPLICATES = 2000
# the verdict may fire at 1 - LEVEL; three Monte Carlo standard errors of a rate of 5% over REPLICATES runs on top
NULL_CEILING = (1 - LEVEL) + 3 * math.sqrt(LEVEL * (1 - LEVEL) / REPLICATES)


def test_pair_credit_is_eval_rms_accuracy_pair_by_pair():
    g = torch.Generator().manual_seed(0)
    chosen = torch.randint(0, 4, (500,), generator=g).float()  # few values: many ties
    rejected = torch.randint(0, 4, (500,), generator=g).float()
    credit = pair_credit(chosen.numpy(), rejected.numpy())
    assert set(np.unique(credit)) == {0.0, 0.5, 1.0}
    assert credit.mean() == pytest.approx(pairwise_accuracy(chosen, rejected, torch.float64).item(), abs=1e-15)


# ----------------------------------------------------------------------------------------------------------------------
# McNemar


def reference_binomial_cdf_half(k: int, n: int) -> Fraction:
    return Fraction(sum(math.comb(n, j) for j in range(k + 1)), 2**n)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 5), (3, 10), (7, 25), (40, 100), (480, 1000), (2100, 4321)])
def test_binomial_cdf_matches_math_comb_sums(k, n):
    assert binomial_cdf_half(k, n) == float(reference_binomial_cdf_half(k, n))


def test_binomial_cdf_in_log_space_above_the_exact_range(monkeypatch):
    import rewardlab.paired_stats as stats

    n = EXACT_UP_TO + 1001
    ks = (n // 2 - 300, n // 2 - 100, n // 2)
    in_logs = [binomial_cdf_half(k, n) for k in ks]
    for k, p in zip(ks, in_logs, strict=True):  # torch's Binomial, an independent implementation of the log-probabilities
        log_probs = torch.distributions.Binomial(n, probs=torch.tensor(0.5, dtype=torch.float64)).log_prob(
            torch.arange(k + 1, dtype=torch.float64)
        )
        assert p == pytest.approx(torch.logsumexp(log_probs, 0).exp().item(), rel=1e-8)
    monkeypatch.setattr(stats, "EXACT_UP_TO", n)  # the exact integer sums on the same arguments
    assert in_logs == pytest.approx([binomial_cdf_half(k, n) for k in ks], rel=1e-9)


def test_mcnemar_exact_by_hand():
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    assert mcnemar_exact(1, 9) == 22 / 1024 == mcnemar_exact(9, 1)
    # b=0, c=6: 2 / 64 (the smallest sample where the exact test can reject at 5%: b=0, c=5 gives 0.0625)
    assert mcnemar_exact(0, 6) == 2 / 64 and mcnemar_exact(0, 5) == 0.0625
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(10, 11) == 1.0
    # b=12, c=3: 2 * (1 + 15 + 105 + 455) / 2^15 = 0.0352 (the asymptotic chi-square without correction says 0.020)
    assert mcnemar_exact(12, 3) == 1152 / 32768


def test_discordant_counts_read_the_sign_of_each_pairs_difference():
    a = np.array([1, 1, 0.5, 1, 0, 0, 0.5, 0.5])
    b = np.array([0, 0.5, 0, 1, 1, 0.5, 0.5, 1])
    assert discordant_counts(a - b) == (3, 3)


# ----------------------------------------------------------------------------------------------------------------------
# Student's t


@pytest.mark.parametrize(
    ("p", "df", "table"),
    [(0.975, 3, 3.182446), (0.975, 4, 2.776445), (0.975, 5, 2.570582), (0.975, 9, 2.262157), (0.975, 10, 2.228139),
     (0.975, 29, 2.045230), (0.95, 30, 1.697261), (0.995, 7, 3.499483), (0.9, 15, 1.340606)],
)  # fmt: skip
def test_t_quantile_matches_the_table(p, df, table):
    assert student_t_quantile(p, df) == pytest.approx(table, abs=2e-6)
    assert student_t_quantile(1 - p, df) == pytest.approx(-table, abs=2e-6)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_closed_forms_for_one_and_two_degrees_of_freedom(p):
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # Cauchy
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    normal = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(p, dtype=torch.float64)).item()
    assert student_t_quantile(p, 1e7) == pytest.approx(normal, rel=1e-5)


@pytest.mark.parametrize("df", [1, 2.5, 7, 30])
def test_t_cdf_against_numerical_integration_of_the_density(df):
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for x in (0.3, 1.5, 4.0):
        t = np.linspace(0.0, x, 20001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(t**2 / df))
        h = t[1] - t[0]
        simpson = h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
        assert student_t_cdf(x, df) == pytest.approx(0.5 + simpson, abs=1e-10)
        assert student_t_cdf(-x, df) == pytest.approx(0.5 - simpson, abs=1e-10)


def test_t_interval_by_hand():
    mean, low, high = t_interval(np.array([0.01, 0.03, 0.02, 0.04]))
    sd = np.std([0.01, 0.03, 0.02, 0.04], ddof=1)
    assert mean == pytest.approx(0.025)
    assert (low, high) == pytest.approx((0.025 - 3.182446 * sd / 2, 0.025 + 3.182446 * sd / 2), abs=1e-8)
    assert t_interval(np.array([0.02]))[1:] == (-math.inf, math.inf)  # one seed: no seed spread


# ----------------------------------------------------------------------------------------------------------------------
# the paired bootstrap


def test_bootstrap_over_distinct_values_is_bootstrap_over_indices():
    rng = np.random.default_rng(3)
    diff = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=200, p=[0.1, 0.03, 0.72, 0.05, 0.1])
    resamples = 40_000
    naive = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    ours = paired_bootstrap(diff, 0.9, resamples, seed=1)
    assert ours == pytest.approx(tuple(np.quantile(naive, [0.05, 0.95])), abs=0.0051)  # grid step of a mean: 0.0025
    assert paired_bootstrap(diff, 0.9, 500, seed=7) == paired_bootstrap(diff, 0.9, 500, seed=7)  # seeded


# a symmetric joint law of the two models' credit on a pair: (credit A, credit B) -> probability
NULL_PAIR = {(1, 1): 0.6, (0, 0): 0.15, (1, 0): 0.1, (0, 1): 0.1, (0.5, 1): 0.01, (1, 0.5): 0.01, (0.5, 0): 0.01,
             (0, 0.5): 0.01, (0.5, 0.5): 0.01}  # fmt: skip


def draw_pairs(law: dict, size: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    outcomes = np.array(list(law), dtype=np.float64)
    picked = rng.choice(len(outcomes), size=size, p=np.array(list(law.values())))
    return outcomes[picked, 0], outcomes[picked, 1]


def test_bootstrap_interval_covers_the_true_difference_at_its_nominal_rate():
    law = {(1, 1): 0.55, (0, 0): 0.15, (1, 0): 0.13, (0, 1): 0.09, (0.5, 0): 0.03, (1, 0.5): 0.02, (0, 0.5): 0.03}
    truth = sum(p * (a - b) for (a, b), p in law.items())
    rng = np.random.default_rng(11)
    a, b = draw_pairs(law, (REPLICATES, 400), rng)
    covered = 0
    for r in range(REPLICATES):
        low, high = paired_bootstrap(a[r] - b[r], LEVEL, 1000, seed=r)
        covered += low <= truth <= high
    assert 0.93 <= covered / REPLICATES <= 0.97


# ----------------------------------------------------------------------------------------------------------------------
# the verdict


def test_verdict_needs_the_interval_and_mcnemar():
    assert verdict(0.01, 0.05, 0.01, LEVEL) == BETTER
    assert verdict(-0.05, -0.01, 0.01, LEVEL) == WORSE
    assert verdict(-0.01, 0.05, 0.01, LEVEL) == UNDECIDED
    assert verdict(0.01, 0.05, 0.06, LEVEL) == UNDECIDED  # interval clear of zero, McNemar not: not distinguishable
    assert verdict(0.01, 0.05, 0.06, 0.9) == BETTER


def test_compare_credits_one_seed_by_hand():
    a = np.array([1, 1, 1, 0, 0.5, 1, 0, 1])
    b = np.array([1, 0, 0, 0, 0, 1, 1, 0.5])
    c = compare_credits(a, b, resamples=500, seed=0)
    assert (c.mean_a, c.mean_b, c.diff) == (5.5 / 8, 3.5 / 8, 2 / 8)
    assert c.discordant == (4, 1) and c.p_value == mcnemar_exact(4, 1)
    assert (c.ci_low, c.ci_high) == c.ci_pairs == paired_bootstrap(a - b, LEVEL, 500, 0)
    assert c.ci_seeds is None and c.n_seeds == 1 and c.n_pairs == 8 and c.verdict == UNDECIDED


def test_compare_credits_several_seeds_combines_both_intervals():
    rng = np.random.default_rng(0)
    a, b = draw_pairs(NULL_PAIR, (3, 300), rng)
    c = compare_credits(a, b, resamples=500)
    seed_diffs = (a - b).mean(axis=1)
    assert [s["diff"] for s in c.per_seed] == pytest.approx(list(seed_diffs))
    assert c.diff == pytest.approx(seed_diffs.mean())
    _, t_low, t_high = t_interval(seed_diffs)
    assert c.ci_seeds == (t_low, t_high)
    assert c.ci_pairs == paired_bootstrap((a - b).mean(axis=0), LEVEL, 500, 0)
    assert (c.ci_low, c.ci_high) == (min(t_low, c.ci_pairs[0]), max(t_high, c.ci_pairs[1]))
    assert c.discordant == discordant_counts((a - b).mean(axis=0))


def fire_rate(a: np.ndarray, b: np.ndarray, resamples: int = 400) -> tuple[float, float]:
    """Share of replicates where the verdict fires, and where the bootstrap over pairs alone would."""
    fired = pairs_alone = 0
    for r in range(a.shape[0]):
        c = compare_credits(a[r], b[r], LEVEL, resamples, seed=r)
        fired += c.verdict != UNDECIDED
        pairs_alone += c.ci_pairs[0] > 0 or c.ci_pairs[1] < 0
    return fired / a.shape[0], pairs_alone / a.shape[0]


def test_null_one_seed_fires_at_no_more_than_its_rate():
    a, b = draw_pairs(NULL_PAIR, (REPLICATES, 300), np.random.default_rng(5))
    fired, _ = fire_rate(a, b)
    assert fired <= NULL_CEILING


def seeded_runs(rng, replicates, seeds, pairs, seed_sd, effect=0.0):
    """Two training recipes, `seeds` runs each, on a fresh test set per replicate: a pair's difficulty (logit) is shared,
    each run adds its own global shift (sd `seed_sd`, the seed's luck), A adds `effect`."""
    difficulty = rng.normal(1.0, 1.5, (replicates, 1, pairs))
    shift_a, shift_b = rng.normal(0, seed_sd, (2, replicates, seeds, 1))
    a = rng.random((replicates, seeds, pairs)) < 1 / (1 + np.exp(-(difficulty + shift_a + effect)))
    b = rng.random((replicates, seeds, pairs)) < 1 / (1 + np.exp(-(difficulty + shift_b)))
    return a.astype(np.float64), b.astype(np.float64)


@pytest.mark.parametrize("seed_sd", [0.0, 1.0])
def test_null_several_seeds_fires_at_no_more_than_its_rate(seed_sd):
    """Whether the test set's sampling error dominates (seed_sd 0) or the seeds' luck does (seed_sd 1), the verdict holds
    its rate; where the seeds dominate, the bootstrap over pairs alone (which cannot see seed luck) fires far too often."""
    a, b = seeded_runs(np.random.default_rng(17), REPLICATES, 3, 300, seed_sd)
    fired, pairs_alone = fire_rate(a, b)
    assert fired <= NULL_CEILING
    if seed_sd > 0:
        assert pairs_alone > 0.3


def test_a_planted_effect_is_detected():
    # one seed, 1,000 pairs: A alone right on 10% of pairs, B alone on 6% (accuracy +0.04): found at least 80% of the time
    law = {(1, 1): 0.7, (0, 0): 0.14, (1, 0): 0.10, (0, 1): 0.06}
    a, b = draw_pairs(law, (500, 1000), np.random.default_rng(23))
    fired = [compare_credits(a[r], b[r], LEVEL, 400, seed=r).verdict for r in range(500)]
    assert fired.count(BETTER) / 500 >= 0.8 and WORSE not in fired
    reversed_ = [compare_credits(b[r], a[r], LEVEL, 400, seed=r).verdict for r in range(100)]
    assert reversed_.count(WORSE) >= 80 and BETTER not in reversed_
    # three seeds with little seed luck, 1,000 pairs, +0.5 on the logit of A's chance on every pair (accuracy about +0.07)
    a, b = seeded_runs(np.random.default_rng(29), 300, 3, 1000, 0.05, effect=0.5)
    fired = [compare_credits(a[r], b[r], LEVEL, 400, seed=r).verdict for r in range(300)]
    assert fired.count(BETTER) / 300 >= 0.8 and WORSE not in fired


def test_holm_by_hand_and_by_its_definition():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> kept monotone: 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, size=9)
    # the definition: H_i is rejected at level a iff every H_(j) with p_(j) <= p_i has p_(j) <= a / (m - j + 1)
    adjusted = holm_adjust(p)
    order = np.sort(p)
    for a in (0.01, 0.05, 0.1):
        for i in range(p.size):
            rank = int(np.searchsorted(order, p[i], side="right"))
            rejected = all(order[j] <= a / (p.size - j) for j in range(rank))
            assert (adjusted[i] <= a) == rejected
    assert holm_adjust([]) == [] and holm_adjust([0.7]) == [0.7] and holm_adjust([0.6, 0.9]) == [1.0, 1.0]


def test_family_verdict_keeps_a_verdict_only_under_the_adjusted_level():
    assert family_verdict(BETTER, 0.01, 0.95) == BETTER
    assert family_verdict(WORSE, 0.2, 0.95) == UNDECIDED
    assert family_verdict(UNDECIDED, 0.0, 0.95) == UNDECIDED
