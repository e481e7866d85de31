"""Is the built-in world able to show GRM's mechanism? Probes on the features a reward model reads, measured before any
verdict (issue 14).

GRM (Yang et al. 2024) keeps a reward model's hidden states able to generate text, on the premise that the base model's
features generalise and that reward training without regularisation distorts them. Both halves can be measured:

- `probe_ood_base`: a linear probe on the FROZEN base model's last hidden state at the reward-read position (the last
  token of prompt + response, where the reward head reads), trained on ID pairs, accuracy on OOD pairs. It is exactly
  a frozen-backbone reward model with a linear head, fit to convergence;
- `probe_ood_after_vanilla`: the same probe on a vanilla (unregularised) reward model's features;
- `likelihood_judge_ood`: the base model's summed response log-probability log pi(y|x) as the judge (no training);
- `vanilla_ood`: the vanilla reward model's own OOD accuracy.

GRM's mechanism can show only when the base features are good where the reward is read (probe_ood_base >= vanilla_ood)
and vanilla training damages them (probe_ood_after_vanilla < probe_ood_base).

The probe is pairwise logistic regression, i.e. the Bradley-Terry loss of a bias-free linear head on fixed features:
    min_w  mean_i softplus(-w . (z_c,i - z_r,i)) + (l2 / 2) ||w||^2,   z = (h - mu) / sigma  (per dimension, train set)
a convex problem solved to a gradient tolerance (L-BFGS); l2 is chosen on ID validation pairs only, by the one-standard-
error rule: the strongest l2 whose validation accuracy is within one binomial standard error of the best; while that
choice sits at an end of the grid, the grid grows past it (up to `PROBE_L2_BOUNDS`), and a choice left at an end is
reported as on the edge. (Validation accuracy is flat across l2 within its noise in the built-in world, so its plain
argmax picks an l2 at random, and the probe's OOD accuracy swung from 0.64 to 0.78 with it.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rewardlab.data.pairs import encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.errors import UserError
from rewardlab.evaluation import scored_pair_batches
from rewardlab.losses import pairwise_accuracy

PROBE_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
# While the one-standard-error choice sits at an end of the grid tried, the grid grows by a factor of 10 past that end, up
# to these bounds; a choice still at an end is reported as on the edge (`Probe.l2_on_edge`).
PROBE_L2_BOUNDS = (1e-6, 1e6)


# ---------------------------------------------------------------- pure math


def probe_loss(w: torch.Tensor, diffs: torch.Tensor, l2: float) -> torch.Tensor:
    """mean softplus(-diffs @ w) + l2/2 ||w||^2: the Bradley-Terry loss of a linear head on feature differences."""
    return F.softplus(-(diffs @ w)).mean() + 0.5 * l2 * w.dot(w)


def fit_pairwise_probe(diffs: torch.Tensor, l2: float, tolerance: float = 1e-9, max_iter: int = 500) -> torch.Tensor:
    """The minimiser of `probe_loss` over w for (N, H) feature differences (chosen - rejected), in float64."""
    diffs = diffs.double()
    w = torch.zeros(diffs.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = probe_loss(w, diffs, l2)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def pair_accuracy(scores_chosen: torch.Tensor, scores_rejected: torch.Tensor) -> float:
    """mean(s_c > s_r), a tie counting one half: `rewardlab.losses.pairwise_accuracy`, as a number."""
    return pairwise_accuracy(scores_chosen, scores_rejected, torch.float64).item()


@dataclass
class PairFeatures:
    """Per pair: features at the reward-read position of chosen and rejected (N, H) and summed response log-probs (N,)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    logp_chosen: torch.Tensor
    logp_rejected: torch.Tensor

    @property
    def diffs(self) -> torch.Tensor:
        return self.chosen.double() - self.rejected.double()


@dataclass
class Probe:
    weight: torch.Tensor  # (H,) on standardised features
    mean: torch.Tensor  # (H,) standardisation, from the training pairs' features
    scale: torch.Tensor  # (H,)
    l2: float
    val_accuracy: float
    val_path: dict[float, float] = field(default_factory=dict)  # validation accuracy of every l2 tried
    l2_on_edge: bool = False  # the chosen l2 is the smallest or largest tried (the grid met PROBE_L2_BOUNDS)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.double() - self.mean) / self.scale) @ self.weight

    def accuracy(self, pairs: PairFeatures) -> float:
        return pair_accuracy(self.scores(pairs.chosen), self.scores(pairs.rejected))


def one_standard_error_choice(val_accuracy: dict[float, float], n_val: int) -> float:
    """The strongest l2 whose validation accuracy is at least best - sqrt(best (1 - best) / n_val)."""
    best = max(val_accuracy.values())
    floor = best - math.sqrt(best * (1.0 - best) / n_val)
    return max(l2 for l2, accuracy in val_accuracy.items() if accuracy >= floor)


def extend_grid(grid: list[float], choice: float, bounds: tuple[float, float] = PROBE_L2_BOUNDS) -> float | None:
    """The next l2 to try when `choice` is at an end of `grid`: ten times past that end, if within `bounds`; else None
    (the choice is interior, or the grid has reached its bound)."""
    low, high = min(grid), max(grid)
    if choice == high and high * 10 <= bounds[1] * (1 + 1e-9):
        return high * 10
    if choice == low and low / 10 >= bounds[0] * (1 - 1e-9):
        return low / 10
    return None


def train_probe(
    train: PairFeatures,
    val: PairFeatures,
    l2_grid: tuple[float, ...] = PROBE_L2_GRID,
    bounds: tuple[float, float] = PROBE_L2_BOUNDS,
) -> Probe:
    """Fit a probe for each l2 of the grid on `train`; keep the one the one-standard-error rule picks on `val` (ID
    validation only). While that choice is at an end of the grid, the grid extends past it (`extend_grid`); a choice
    still at an end is flagged `l2_on_edge`."""
    features = torch.cat([train.chosen, train.rejected]).double()
    mean, scale = features.mean(0), features.std(0).clamp_min(1e-6)
    diffs = train.diffs / scale  # the mean cancels in a difference
    probes: dict[float, Probe] = {}

    def fit(l2: float) -> None:
        probe = Probe(fit_pairwise_probe(diffs, l2), mean, scale, l2, 0.0)
        probe.val_accuracy = probe.accuracy(val)
        probes[l2] = probe

    for l2 in l2_grid:
        fit(l2)
    while True:
        path = {l2: probes[l2].val_accuracy for l2 in sorted(probes)}
        choice = one_standard_error_choice(path, val.chosen.shape[0])
        if (extra := extend_grid(list(path), choice, bounds)) is None:
            break
        fit(extra)
    chosen = probes[choice]
    chosen.val_path = path
    chosen.l2_on_edge = len(path) > 1 and choice in (min(path), max(path))
    return chosen


# ---------------------------------------------------------------- features from a model


def pair_features(model, examples: list[PreferenceExample], batch_size: int = 64, max_length: int = 256) -> PairFeatures:
    """Features at the reward-read position (the last hidden state at the last real token, what the reward head reads)
    and summed response log-probs (the kept LM head, response tokens and the end token) of every pair, in order."""
    pairs, _ = encode_pairs(model.tokenizer, examples, max_length, "keep_end")
    if len(pairs) != len(examples):
        raise UserError(f"{len(examples) - len(pairs)} pairs did not fit in {max_length} tokens")
    index, chosen, rejected, logp_chosen, logp_rejected = [], [], [], [], []
    for batch in scored_pair_batches(model, pairs, batch_size, response_logprobs=True):
        b, out = batch.size, batch.scored.output  # rows 0..b-1 chosen, b..2b-1 rejected
        read = out.hidden_states[torch.arange(2 * b), out.last_index].float().cpu()
        index.append(batch.index)
        chosen.append(read[:b])
        rejected.append(read[b:])
        logp_chosen.append(out.logprobs[:b].float().cpu())
        logp_rejected.append(out.logprobs[b:].float().cpu())
    order = torch.cat(index).argsort()  # eval-rm's batches come sorted by length: back to the examples' order
    return PairFeatures(*(torch.cat(parts)[order] for parts in (chosen, rejected, logp_chosen, logp_rejected)))


# ---------------------------------------------------------------- the two conditions


def world_check_conditions(
    probe_ood_base: float, probe_ood_after_vanilla: list[float], vanilla_ood: list[float]
) -> dict[str, dict]:
    """GRM's two preconditions, from one probe on base features and per-seed figures of vanilla reward models.

    base_features_good:        probe_ood_base >= mean(vanilla_ood)
    vanilla_damages_features:  mean(probe_ood_after_vanilla) < probe_ood_base
    `every_seed` says whether the comparison also holds seed by seed (None with one seed: there is no seed spread to
    speak of); `difference` is the mean difference in the direction the condition asks for (positive when it holds).
    """
    after, vanilla = _mean(probe_ood_after_vanilla), _mean(vanilla_ood)
    return {
        "base_features_good": {
            "holds": probe_ood_base >= vanilla,
            "every_seed": all(probe_ood_base >= v for v in vanilla_ood) if len(vanilla_ood) > 1 else None,
            "probe_ood_base": probe_ood_base,
            "vanilla_ood": vanilla,
            "difference": probe_ood_base - vanilla,
        },
        "vanilla_damages_features": {
            "holds": after < probe_ood_base,
            "every_seed": all(a < probe_ood_base for a in probe_ood_after_vanilla) if len(probe_ood_after_vanilla) > 1 else None,
            "probe_ood_base": probe_ood_base,
            "probe_ood_after_vanilla": after,
            "difference": probe_ood_base - after,
        },
    }


def _mean(values: list[float]) -> float:
    if not values:
        raise ValueError("no values")
    return sum(values) / len(values)
