"""Stored reward normalisation (OpenRLHF's `normalize_reward` meaning): r' = (r - mean) / std.

At the end of training a reward model records the mean and std of its sequence rewards on a reference set (the training
pairs' chosen and rejected responses, or `--norm-data`) in its `rewardlab_config.json`. Scoring with normalisation on
(`--normalize`, off by default) maps every POSITION reward R(x, tokens<=t) through the same affine map, so everything read
from them stays consistent: the sequence reward R(x, y), the prompt reward R(x) and every token-reward method. R3HF token
rewards (differences of consecutive position rewards) are divided by std, and their sum is still
R'(x, y) - R'(x) = (R(x, y) - R(x)) / std.

std is the population standard deviation (ddof = 0), so the normalised rewards on the reference set have mean 0 and
standard deviation 1 exactly (numpy's `std`); OpenRLHF's evaluation uses torch.std (ddof = 1), a relative difference of
about 1 / (2n). A model saved without statistics cannot normalise: asking it to is an error, never a silent no-op
(OpenRLHF#693: its mean 0 / std 1 defaults made `normalize_reward` do nothing until they were filled in).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from rewardlab.errors import UserError

MIN_STD = 1e-8  # a constant reward model (std 0) cannot be normalised: std is clamped here, as OpenRLHF clamps it


class NormalizationUnavailable(UserError):
    """Normalisation was asked of a reward model that has no recorded statistics."""


@dataclass(frozen=True)
class RewardStatistics:
    """Mean and std of a reward model's sequence rewards on its reference set, and what that set was."""

    mean: float
    std: float
    count: int  # sequences the statistics were computed on
    source: str  # "training responses" or the --norm-data file

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std)) or self.std <= 0:
            raise UserError(f"reward statistics need a finite mean and a positive std, not mean {self.mean}, std {self.std}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> RewardStatistics | None:
        if d is None:
            return None
        return cls(float(d["mean"]), float(d["std"]), int(d["count"]), str(d["source"]))

    @classmethod
    def of(cls, rewards: torch.Tensor, source: str) -> RewardStatistics:
        """The statistics of a 1-D tensor of sequence rewards (computed in float64; population std, clamped at MIN_STD)."""
        values = rewards.detach().double().flatten()
        if values.numel() < 2:
            raise UserError(f"reward statistics need at least 2 rewards, got {values.numel()} ({source})")
        if not torch.isfinite(values).all():
            raise UserError(f"non-finite rewards on the normalisation data ({source})")
        mean = values.mean()
        std = (values - mean).pow(2).mean().sqrt().clamp_min(MIN_STD)
        return cls(mean.item(), std.item(), int(values.numel()), source)


def normalize_rewards(rewards: torch.Tensor, stats: RewardStatistics) -> torch.Tensor:
    """(rewards - mean) / std, elementwise (position or sequence rewards), in the rewards' dtype."""
    return (rewards - stats.mean) / stats.std


def missing_statistics(where: str) -> NormalizationUnavailable:
    """The one-line error for normalisation asked of a model without statistics."""
    return NormalizationUnavailable(
        f"{where}: no reward statistics recorded (reward_statistics in its rewardlab config), so its rewards cannot be "
        "normalised; train-rm records them at the end of training (on the training responses or --norm-data)"
    )
