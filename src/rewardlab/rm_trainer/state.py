"""The state of one reward-model run: its prepared parts, and what the loop advances (the step, the log)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from rewardlab.config import RewardTrainingFields

if TYPE_CHECKING:
    from rewardlab.data.loading import PreferenceDataset
    from rewardlab.rm_trainer.selection import BestWeights


@dataclass
class TrainingRun:
    """One run's parts (prepared by accelerate) and the state the loop advances."""

    cfg: RewardTrainingFields  # the run's RewardTrainingConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    scheduler: LRScheduler
    eval_sets: dict[str, PreferenceDataset]
    train_stats: dict[str, Any]  # what loading and tokenising the training data kept and dropped
    kernels: dict[str, str]
    sharded: bool  # FSDP or DeepSpeed: the weights are gathered before saving
    total_steps: int
    trackers: list[str]
    log: list[dict] = field(default_factory=list)
    global_step: int = 0
    start_epoch: int = 0
    skip_batches: int = 0  # batches of start_epoch already trained on before a resume
    train_examples: list = field(default_factory=list)  # the training PreferenceExamples (for the reward statistics)
    final_scores: list[dict] = field(default_factory=list)  # the final evaluation's eval-rm-style score rows (scores.jsonl)
    eval_encodings: dict[int, tuple] = field(default_factory=dict)  # each eval set's encoding, made at its first evaluation
    selection: BestWeights | None = None  # with --select-best-on: the best validation weights so far

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def show(self) -> bool:
        """Whether this process prints progress."""
        return self.cfg.progress and self.accelerator.is_local_main_process

    @property
    def updates_per_epoch(self) -> int:
        return updates_per_epoch(len(self.loader), self.cfg.gradient_accumulation_steps)

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.updates_per_epoch)


def updates_per_epoch(batches: int, accumulation: int) -> int:
    """Optimiser updates in an epoch of `batches`: every `accumulation` batches, and at the epoch's end."""
    return max(1, math.ceil(batches / accumulation))
