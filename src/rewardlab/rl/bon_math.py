"""Pure math for best-of-N sampling and Gao et al. (2022) over-optimisation curves.

Sources:
- Stiennon et al. 2020 / Gao et al. 2022, "Scaling laws for reward model overoptimization": KL_bon = log N - (N-1)/N,
  d = sqrt(KL), the fit R_bon(d) = d (alpha - beta d).
- Nakano et al. 2021 (WebGPT, App. I) / Gao et al. 2022: unbiased best-of-N estimator from n >= N samples per prompt.
- Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy": log N - (N-1)/N is exact only for
  continuous outcomes and an upper bound otherwise; for a discrete distribution ordered by reward the best-of-N pmf is
  F(y)^N - F(y-)^N, so KL can be computed exactly on the samples' empirical distribution (`kl_bon_discrete`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _to_numpy(x: ArrayLike | list) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def kl_bon(n: int | np.ndarray) -> float | np.ndarray:
    """Analytic KL(best-of-n || base policy) = log n - (n - 1) / n (Stiennon et al. 2020; Gao et al. 2022, Eq. 1).

    Exact only when the base policy's rewards are continuous (no outcome has positive probability); for a policy whose
    responses repeat it is an upper bound (Beirami et al. 2024), and `kl_bon_discrete` gives the exact value. Distinct
    SAMPLES do not make it exact: the formula is about the policy, not about one draw.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(n_arr < 1):
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    kl = np.log(n_arr) - (n_arr - 1.0) / n_arr
    return float(kl) if kl.ndim == 0 else kl


def kl_bon_discrete(values: ArrayLike | list, probabilities: ArrayLike | list, n: int) -> float:
    """Exact KL(best-of-n || p) for a discrete distribution p over outcomes with rewards `values` (Beirami et al. 2024).

    Order the outcomes by reward; F is the CDF under that order. Tie rule: outcomes with EQUAL reward form one group g, and
    best-of-n picks, among the n draws, a draw from the highest group present; which member it is does not change the
    group's probability Q_g = F(g)^n - F(g-)^n, and with `best_of_n`'s rule (the first such draw) the member is drawn in
    proportion to p within the group. So q_i = p_i Q_g / p_g and

      KL = sum_i q_i log(q_i / p_i) = sum_g Q_g log(Q_g / p_g).

    `probabilities` may be counts (normalised here). Equals log n - (n-1)/n only in the limit of many tiny outcomes.
    """
    vals, probs = _to_numpy(values).ravel(), _to_numpy(probabilities).ravel()
    if vals.shape != probs.shape or len(vals) == 0:
        raise ValueError(f"values and probabilities must be non-empty and of one length, got {vals.shape} and {probs.shape}")
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    if np.isnan(vals).any() or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError("values must not be NaN and probabilities must be >= 0 with a positive sum")
    if n == 1:
        return 0.0  # best-of-1 is the policy itself (and the formula would leave a rounding residue)
    group_values, group_index = np.unique(vals, return_inverse=True)  # ascending reward
    group_probs = np.bincount(group_index, weights=probs / probs.sum(), minlength=len(group_values))
    cdf = np.minimum(np.cumsum(group_probs), 1.0)
    below = np.concatenate([[0.0], cdf[:-1]])
    bon_probs = cdf**n - below**n  # Q_g = F(g)^n - F(g-)^n
    present = (bon_probs > 0) & (group_probs > 0)
    return max(0.0, float(np.sum(bon_probs[present] * np.log(bon_probs[present] / group_probs[present]))))


def empirical_outcomes(responses: Sequence[Hashable], scores: ArrayLike | list) -> tuple[np.ndarray, np.ndarray]:
    """(rewards, counts) of the distinct responses among one prompt's samples: the empirical distribution. A response's
    reward is its first sample's score (copies of one text score the same, up to float noise from batching)."""
    scores_arr = _to_numpy(scores).ravel()
    if len(responses) != len(scores_arr):
        raise ValueError(f"{len(responses)} responses but {len(scores_arr)} scores")
    first: dict[Hashable, int] = {}
    counts: dict[Hashable, int] = {}
    for i, response in enumerate(responses):
        first.setdefault(response, i)
        counts[response] = counts.get(response, 0) + 1
    return scores_arr[list(first.values())], np.array(list(counts.values()), dtype=np.float64)


def n_grid(n_max: int) -> list[int]:
    """Roughly geometric grid of N values for a best-of-N curve: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... and n_max itself."""
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    grid = {1, n_max}
    power = 2
    while power <= n_max:
        grid.add(power)
        if power + power // 2 <= n_max:
            grid.add(power + power // 2)
        power *= 2
    return sorted(grid)


def best_of_n(proxy_scores: ArrayLike, n: int) -> np.ndarray:
    """(P,) index of the highest proxy score among the FIRST n samples of each prompt; ties go to the first index."""
    scores = _to_numpy(proxy_scores)
    if scores.ndim != 2:
        raise ValueError(f"proxy_scores must be (prompts, samples), got shape {scores.shape}")
    if not 1 <= n <= scores.shape[1]:
        raise ValueError(f"n must be in [1, {scores.shape[1]}], got {n}")
    if np.isnan(scores[:, :n]).any():
        raise ValueError("proxy_scores contain NaN")
    return np.argmax(scores[:, :n], axis=1)  # argmax returns the first maximum


def picked_gold(proxy_scores: ArrayLike, gold_scores: ArrayLike, n: int) -> np.ndarray:
    """(P,) gold score of each prompt's best-of-n pick by the proxy (among its first n samples)."""
    proxy, gold = _to_numpy(proxy_scores), _to_numpy(gold_scores)
    if proxy.shape != gold.shape:
        raise ValueError(f"proxy {proxy.shape} and gold {gold.shape} scores differ in shape")
    return gold[np.arange(gold.shape[0]), best_of_n(proxy, n)]


def _sem(x: np.ndarray) -> float:
    """Standard error of the mean over prompts; NaN with a single prompt."""
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def unbiased_bon_weights(n_total: int, n: int) -> np.ndarray:
    """Probability that the sample of rank i (0 = lowest proxy score) is the pick of a uniformly random n-subset of
    n_total samples: w_i = C(i, n-1) / C(n_total, n) (Nakano et al. 2021, App. I). Sums to 1 (hockey-stick identity)."""
    if not 1 <= n <= n_total:
        raise ValueError(f"n must be in [1, {n_total}], got {n}")
    ranks = np.arange(n_total)
    log_weights = np.full(n_total, -np.inf)
    valid = ranks >= n - 1
    log_comb = np.array([math.lgamma(i + 1) - math.lgamma(n) - math.lgamma(i - n + 2) for i in ranks[valid]])
    log_weights[valid] = log_comb - (math.lgamma(n_total + 1) - math.lgamma(n + 1) - math.lgamma(n_total - n + 1))
    return np.exp(log_weights)


def bon_curve(
    proxy_scores: ArrayLike,
    gold_scores: ArrayLike,
    grid: list[int],
    unbiased: bool = False,
    responses: Sequence[Sequence[Hashable]] | None = None,
) -> dict[str, list[float]]:
    """Best-of-N curve: for each N in `grid`, the mean proxy and gold scores of the picked samples, with standard errors
    over prompts, and KL_bon(N) (`kl`, analytic: the papers' axis).

    With `responses` ((prompts, samples) texts or other keys of the sampled responses), also `kl_empirical`: the exact
    KL(best-of-N || p) of each prompt's empirical distribution p (its distinct responses and their counts, ordered by the
    proxy; `kl_bon_discrete`), averaged over prompts. It is <= `kl` and much smaller when responses repeat.

    unbiased=False picks among the FIRST N samples of each prompt. unbiased=True averages over all N-subsets of the n
    samples (exactly, via order-statistic weights): lower variance from the same samples. Ties in the proxy score go to
    the lower sample index in both modes.
    """
    proxy, gold = _to_numpy(proxy_scores), _to_numpy(gold_scores)
    if proxy.shape != gold.shape or proxy.ndim != 2:
        raise ValueError(f"proxy and gold scores must both be (prompts, samples), got {proxy.shape} and {gold.shape}")
    num_prompts, num_samples = proxy.shape
    rows = np.arange(num_prompts)
    if unbiased:
        # Ascending by proxy; among ties the lower index ranks higher, so it wins, as in best_of_n.
        order = np.stack([np.lexsort((-np.arange(num_samples), proxy[p])) for p in rows])
        proxy_sorted, gold_sorted = proxy[rows[:, None], order], gold[rows[:, None], order]
    curve: dict[str, list[float]] = {key: [] for key in ("n", "kl", "proxy", "gold", "proxy_sem", "gold_sem")}
    outcomes = None
    if responses is not None:
        if len(responses) != num_prompts or any(len(row) != num_samples for row in responses):
            raise ValueError(f"responses must be ({num_prompts}, {num_samples}) like the scores")
        outcomes = [empirical_outcomes(responses[p], proxy[p]) for p in rows]
        curve["kl_empirical"] = []
    for n in grid:
        if unbiased:
            weights = unbiased_bon_weights(num_samples, n)
            picked_proxy, picked_gold = proxy_sorted @ weights, gold_sorted @ weights
        else:
            picks = best_of_n(proxy, n)
            picked_proxy, picked_gold = proxy[rows, picks], gold[rows, picks]
        curve["n"].append(int(n))
        curve["kl"].append(float(kl_bon(n)))
        if outcomes is not None:
            curve["kl_empirical"].append(float(np.mean([kl_bon_discrete(values, counts, n) for values, counts in outcomes])))
        curve["proxy"].append(float(picked_proxy.mean()))
        curve["gold"].append(float(picked_gold.mean()))
        curve["proxy_sem"].append(_sem(picked_proxy))
        curve["gold_sem"].append(_sem(picked_gold))
    return curve


def fit_gao_bon(d: ArrayLike | list, r: ArrayLike | list) -> tuple[float, float]:
    """Least-squares fit of R(d) = d (a - b d), d = sqrt(KL) (Gao et al. 2022, Eq. 2). Linear in (a, b)."""
    d_arr, r_arr = _to_numpy(d).ravel(), _to_numpy(r).ravel()
    design = np.stack([d_arr, -(d_arr**2)], axis=1)
    return _least_squares(design, r_arr)


def _least_squares(design: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    if len(target) != len(design):
        raise ValueError(f"d and r differ in length: {len(design)} vs {len(target)}")
    if len(target) < 2:
        raise ValueError(f"need at least 2 usable points to fit 2 coefficients, got {len(target)}")
    (a, b), *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(a), float(b)


def normalise_curve(values: ArrayLike | list) -> np.ndarray:
    """Shift a curve so that it starts at 0 (Gao et al. plot gains over the initial policy)."""
    arr = _to_numpy(values)
    return arr - arr[0]
