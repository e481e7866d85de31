"""Paired statistics for comparing two reward models on the same pairs (`rewardlab compare`). Pure functions, numpy only.

A comparison holds, per seed s and pair i, each model's credit on the pair: 1 right (chosen out-scores rejected), 0 wrong,
1/2 a tie, as eval-rm's accuracy counts it (`rewardlab.losses.pairwise_accuracy`). Seed s of model A is compared with seed s
of model B (the same seed's data order and head initialisation: a paired design), and every seed on the same pairs.

- Paired bootstrap over pairs: pairs are resampled with replacement, both models' results on a pair (every seed's) together;
  the percentile interval of the resampled acc_A - acc_B. The resampled difference depends only on how many times each
  distinct per-pair difference is drawn, so it is drawn as multinomial counts over the distinct values: exactly the
  distribution of resampling indices, at a cost independent of the number of pairs.
- McNemar's exact test, as a sign test: b = pairs where A earns more credit than B (A right and B wrong, and also A right
  and B tied, or A tied and B wrong), c = the reverse; p = min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)]). Without ties
  this is McNemar's exact test; with ties a pair where one side ties counts as a whole discordant pair (in its direction),
  pairs with equal credit are left out. With several seeds it reads the seed-averaged credit difference of each pair.
  Exact under the null that on each pair the two models' results are exchangeable.
- Several seeds: per-seed differences d_s, their mean with a t-interval mean +- t(n-1, (1+level)/2) sd / sqrt(n).

The verdict (`better`, `worse`, `not distinguishable at this size`) at `level` fires only when every test it reads agrees:
one seed: the bootstrap interval over pairs excludes zero and McNemar's p < 1 - level; several seeds: also the t-interval
over seeds excludes zero on the same side. The t-interval holds the test set fixed (it sees seed noise only), the bootstrap
and McNemar hold the seeds fixed (they see the test set's sampling error); requiring all of them keeps the false-positive
rate at or under 1 - level whichever of the two dominates (tests/test_paired_stats.py measures it by simulation).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

BETTER, WORSE, UNDECIDED = "better", "worse", "not distinguishable at this size"
LEVEL = 0.95  # the default confidence level of intervals and verdicts
RESAMPLES = 2000  # the default number of bootstrap resamples


def pair_credit(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """Per pair: 1 if chosen out-scores rejected, 1/2 on a tie, else 0 (the mean is eval-rm's accuracy)."""
    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    return (chosen > rejected).astype(np.float64) + 0.5 * (chosen == rejected)


# ----------------------------------------------------------------------------------------------------------------------
# exact binomial and McNemar


EXACT_UP_TO = 20_000  # discordant pairs summed in exact integers; above, in log space (relative error about 1e-10)


def binomial_cdf_half(k: int, n: int) -> float:
    """P[Binomial(n, 1/2) <= k]: the binomial coefficients summed as exact integers (rounded once, in the final
    division) up to n = EXACT_UP_TO; above, summed in log space."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= EXACT_UP_TO:
        term = total = 1
        for j in range(1, k + 1):
            term = term * (n - j + 1) // j  # C(n, j), exactly
            total += term
        return float(Fraction(total, 2**n))
    logs = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) - n * math.log(2.0) for j in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)]); 1 when there is no discordant pair."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b, c), n))


def discordant_counts(diff: np.ndarray) -> tuple[int, int]:
    """(b, c): pairs whose credit difference A - B is positive, negative (zero differences are concordant)."""
    diff = np.asarray(diff)
    return int((diff > 0).sum()), int((diff < 0).sum())


# ----------------------------------------------------------------------------------------------------------------------
# Student's t quantile (no scipy): regularised incomplete beta by its continued fraction, then bisection


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), converging for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P[T <= t] for Student's t with `df` degrees of freedom: 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0."""
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=256)
def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (0 < p < 1), by bisection on the exact CDF (to about 1e-12 relative)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"student_t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): mean +- t(n-1, (1+level)/2) * sd / sqrt(n) (sd with n - 1). With one value there is no spread:
    the interval is (-inf, +inf)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, -math.inf, math.inf
    half = student_t_quantile((1.0 + level) / 2.0, values.size - 1) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------------------------------------------------
# paired bootstrap over pairs


def paired_bootstrap(diff: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of the per-pair differences `diff` (acc_A - acc_B on each pair, seed-averaged),
    pairs resampled with replacement. Drawn as multinomial counts over the distinct differences (the same distribution
    as resampling indices); seeded."""
    diff = np.asarray(diff, dtype=np.float64)
    values, counts = np.unique(diff, return_counts=True)
    n = diff.size
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples)
    means = draws @ values / n
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


# ----------------------------------------------------------------------------------------------------------------------
# one comparison


@dataclass
class Comparison:
    """The comparison of A with B on one set of pairs (see the module's doc). `measure` names the paired values (their
    means are written `{measure}_a` / `{measure}_b`) and `test` the key of the sign test's p-value: for credits, accuracy
    and McNemar's test (`p_mcnemar`); for other paired values (a best-of-n pick's gold), the sign test by its own name."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    ci_pairs: tuple[float, float]
    ci_seeds: tuple[float, float] | None
    p_value: float
    discordant: tuple[int, int]
    n_pairs: int
    n_seeds: int
    level: float
    verdict: str
    per_seed: list[dict] = field(default_factory=list)
    measure: str = "accuracy"
    test: str = "p_mcnemar"

    def as_dict(self) -> dict:
        return {
            "diff": self.diff,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_pairs": self.n_pairs,
            "n_seeds": self.n_seeds,
            self.test: self.p_value,
            "verdict": self.verdict,
            f"{self.measure}_a": self.mean_a,
            f"{self.measure}_b": self.mean_b,
            "level": self.level,
            "ci_pairs": list(self.ci_pairs),
            "ci_seeds": list(self.ci_seeds) if self.ci_seeds is not None else None,
            "discordant": {"a_better": self.discordant[0], "b_better": self.discordant[1]},
            "per_seed": self.per_seed,
        }


def verdict(ci_low: float, ci_high: float, p_mcnemar: float, level: float) -> str:
    """`better` / `worse` when the (combined) interval excludes zero on that side and McNemar's p < 1 - level."""
    if p_mcnemar < 1.0 - level:
        if ci_low > 0:
            return BETTER
        if ci_high < 0:
            return WORSE
    return UNDECIDED


def compare_credits(
    credit_a: np.ndarray, credit_b: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0
) -> Comparison:
    """Compare A with B from their per-pair credits (see the module's doc): `compare_paired_values` on credits, whose
    means are accuracies and whose sign test is McNemar's exact test."""
    return compare_paired_values(credit_a, credit_b, level, resamples, seed, measure="accuracy", test="p_mcnemar")


def compare_paired_values(
    values_a: np.ndarray,
    values_b: np.ndarray,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
    measure: str = "value",
    test: str = "p_sign",
) -> Comparison:
    """Compare A with B from paired values, arrays (seeds, pairs) (or (pairs,) for one seed), seeds paired by row. The
    interval reported (`ci_low`, `ci_high`) is the bootstrap interval over pairs with one seed; with several, the hull of
    that interval (on seed-averaged differences) and the t-interval over seeds: it excludes zero only when both do. The
    sign test counts the pairs where A's (seed-averaged) value is above B's and below."""
    a = np.atleast_2d(np.asarray(values_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(values_b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"values of A {a.shape} and B {b.shape} differ in shape (seeds, pairs)")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n_seeds, n_pairs = a.shape
    if n_pairs == 0:
        raise ValueError("no pair to compare")
    per_pair = (a - b).mean(axis=0)  # seed-averaged difference on each pair
    ci_pairs = paired_bootstrap(per_pair, level, resamples, seed)
    discordant = discordant_counts(per_pair)
    p = mcnemar_exact(*discordant)
    seed_diffs = (a - b).mean(axis=1)
    diff = float(per_pair.mean())
    per_seed = []
    for s in range(n_seeds):
        d = a[s] - b[s]
        low, high = paired_bootstrap(d, level, resamples, seed + 1 + s) if n_seeds > 1 else ci_pairs
        per_seed.append(
            {
                "seed": s, f"{measure}_a": float(a[s].mean()), f"{measure}_b": float(b[s].mean()), "diff": float(seed_diffs[s]),
                "ci_low": low, "ci_high": high, test: mcnemar_exact(*discordant_counts(d)) if n_seeds > 1 else p,
            }
        )  # fmt: skip
    ci_seeds = None
    ci_low, ci_high = ci_pairs
    if n_seeds > 1:
        _, t_low, t_high = t_interval(seed_diffs, level)
        ci_seeds = (t_low, t_high)
        ci_low, ci_high = min(ci_pairs[0], t_low), max(ci_pairs[1], t_high)
    return Comparison(
        mean_a=float(a.mean()), mean_b=float(b.mean()), diff=diff, ci_low=ci_low, ci_high=ci_high,
        ci_pairs=ci_pairs, ci_seeds=ci_seeds, p_value=p, discordant=discordant, n_pairs=n_pairs, n_seeds=n_seeds,
        level=level, verdict=verdict(ci_low, ci_high, p, level), per_seed=per_seed, measure=measure, test=test,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# a family of comparisons


def holm_adjust(p_values: list[float] | np.ndarray) -> list[float]:
    """Holm's step-down adjusted p-values: with the m p-values sorted ascending, p_(k) becomes
    max_{j <= k} min(1, (m - j + 1) p_(j)) (k, j from 1), in the input order. Rejecting where the adjusted p < 1 - level
    keeps the chance of any false rejection in the family at or under 1 - level, whatever the dependence between tests."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        adjusted[i] = running
    return adjusted.tolist()


def family_verdict(single: str, p_adjusted: float, level: float) -> str:
    """A comparison's verdict within a family: its own verdict where its Holm-adjusted p is under 1 - level, else undecided."""
    return single if single != UNDECIDED and p_adjusted < 1.0 - level else UNDECIDED
