"""An ensemble of reward models trained with different seeds (a GRM baseline), scored by the mean or min of members.

It answers the same calls as a `RewardModel` that scores (forward, tokenizer, device, save_pretrained, primary); it has
no LM head of its own, so asking it for log-probs or a reference is refused rather than ignored.

On disk: `rewardlab_ensemble.json` ({"members": ["member-0", ...], "aggregate": "mean", "reward_statistics": {...}})
beside the member directories (`member_name`, `write_manifest`: the trainer lays out its ensembles with them too).
The ensemble's reward statistics are those of its aggregate (each member keeps its own); with normalisation on, the
aggregate is normalised, the members score raw.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rewardlab.choices import AGGREGATES
from rewardlab.errors import UserError
from rewardlab.modeling.normalization import RewardStatistics, missing_statistics, normalize_rewards
from rewardlab.modeling.reward_model import CONFIG_NAME, MODEL_SUBDIR, RewardModel, RewardOutput
from rewardlab.runtime import write_json

ENSEMBLE_NAME = "rewardlab_ensemble.json"


def aggregate_rewards(stacked: torch.Tensor, how: str) -> torch.Tensor:
    """Combine member rewards stacked on dim 0: mean, or min (a conservative, pessimistic ensemble)."""
    if how == "mean":
        return stacked.mean(0)
    if how == "min":
        return stacked.min(0).values
    raise UserError(f"unknown ensemble aggregate '{how}' (choose from {', '.join(AGGREGATES)})")


class EnsembleRewardModel(nn.Module):
    def __init__(self, members: list[RewardModel], aggregate: str = "mean", reward_statistics: RewardStatistics | None = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        aggregate_rewards(torch.zeros(1, 1), aggregate)  # validate the name early
        self.members = nn.ModuleList(members)
        self.aggregate = aggregate
        self.tokenizer = members[0].tokenizer
        self.reward_statistics = reward_statistics  # of the aggregate, with this `aggregate`
        self.normalization: RewardStatistics | None = None

    def use_normalization(self, on: bool = True, where: str | None = None) -> EnsembleRewardModel:
        """As `RewardModel.use_normalization`, on the aggregated rewards (statistics recorded for this aggregate)."""
        if on and self.reward_statistics is None:
            raise missing_statistics(where or f"ensemble ({self.aggregate})")
        self.normalization = self.reward_statistics if on else None
        return self

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def primary(self) -> RewardModel:
        """The member that stands for the ensemble where one model is needed (a PPO critic starts from it)."""
        return self.members[0]

    def forward(
        self, input_ids, attention_mask, response_mask=None, output_attentions: bool = False, reference=False, packed=False
    ):
        if response_mask is not None or reference:
            raise ValueError("an ensemble only scores: response log-probs and the reference belong to a single model")
        outs = [m(input_ids, attention_mask, output_attentions=output_attentions, packed=packed) for m in self.members]
        position = aggregate_rewards(torch.stack([o.position_rewards for o in outs]), self.aggregate)
        sequence = aggregate_rewards(torch.stack([o.sequence_rewards for o in outs]), self.aggregate)
        if self.normalization is not None:
            position = normalize_rewards(position, self.normalization)
            sequence = normalize_rewards(sequence, self.normalization)
        attentions = None
        if output_attentions:
            attentions = torch.stack([o.attentions for o in outs]).mean(0)
        return RewardOutput(position, sequence, outs[0].last_index, None, attentions)

    def save_pretrained(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        names = member_names(len(self.members))
        for name, member in zip(names, self.members, strict=True):
            member.save_pretrained(path / name)
        self.save_manifest(path)

    def save_manifest(self, path) -> Path:
        """rewardlab_ensemble.json in directory `path`, beside the members' directories (`member_names`)."""
        return write_manifest(path, member_names(len(self.members)), self.aggregate, self.reward_statistics)

    @classmethod
    def from_pretrained(cls, path, aggregate: str | None = None, **kwargs) -> EnsembleRewardModel:
        path = Path(path)
        saved = read_manifest(path)
        members = [RewardModel.from_pretrained(_member_dir(path / name), **kwargs) for name in saved["members"]]
        saved_aggregate = saved.get("aggregate", "mean")
        # the statistics belong to the aggregate they were computed with: another aggregate has none
        stats = RewardStatistics.from_dict(saved.get("reward_statistics")) if aggregate in (None, saved_aggregate) else None
        return cls(members, aggregate or saved_aggregate, stats)


def member_name(k: int) -> str:
    """The directory of member k inside an ensemble's directory."""
    return f"member-{k}"


def member_names(size: int) -> list[str]:
    """The directories of an ensemble of `size` members, in order."""
    return [member_name(k) for k in range(size)]


def manifest(names: list[str], aggregate: str, reward_statistics: RewardStatistics | None = None) -> dict:
    """rewardlab_ensemble.json's content."""
    out: dict = {"members": names, "aggregate": aggregate}
    if reward_statistics is not None:
        out["reward_statistics"] = reward_statistics.to_dict()
    return out


def write_manifest(
    path: Path,
    names: list[str],
    aggregate: str,
    reward_statistics: RewardStatistics | None = None,
    main_process_only: bool = False,
) -> Path:
    """Write rewardlab_ensemble.json into the ensemble's directory `path`, beside the member directories `names`."""
    content = manifest(names, aggregate, reward_statistics)
    return write_json(Path(path) / ENSEMBLE_NAME, content, main_process_only=main_process_only)


def is_ensemble(path: Path) -> bool:
    """Whether the model directory `path` holds an ensemble (its manifest) rather than one reward model."""
    return (Path(path) / ENSEMBLE_NAME).exists()


def read_manifest(path: Path) -> dict:
    """The manifest of the ensemble in directory `path` (as `write_manifest` wrote it)."""
    return json.loads((Path(path) / ENSEMBLE_NAME).read_text())


def _member_dir(path: Path) -> Path:
    """A member is a reward-model directory, or a training run's output directory holding one under `model/`."""
    return path if (path / CONFIG_NAME).exists() else path / MODEL_SUBDIR
