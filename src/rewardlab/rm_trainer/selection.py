"""Model selection on a validation set (`--select-best-on`): the trainable weights with the best metric seen so far, kept on
the CPU. Every checkpoint carries them with the evaluation history, so a resumed run chooses among all of its evaluations
and counts early stopping's patience from the same best, as if it had never stopped."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rewardlab.choices import SelectMetric


class BestWeights:
    """Keeps a CPU copy of the trainable weights with the best validation `metric` seen so far (earliest on ties): the
    highest accuracy, or the lowest loss."""

    def __init__(self, name: str, model: torch.nn.Module, metric: SelectMetric = "accuracy"):
        self.name, self.model, self.metric = name, model, metric
        self.sign = -1.0 if metric == "loss" else 1.0  # compared as sign * value, higher is better
        self.best_step, self.best_value, self.state = -1, -math.inf, None
        self.history: list[tuple[int, float]] = []

    def offer(self, step: int, metrics: dict) -> None:
        """The validation set's metrics (`evaluate`'s entry for it) at `step`."""
        if self.record(step, metrics[self.metric]):
            self.state = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters() if p.requires_grad}

    def record(self, step: int, value: float) -> bool:
        """Add one evaluation to the history; True when it is the best so far."""
        self.history.append((step, value))
        better = self.sign * value > self.best_value  # a NaN is never better
        if better:
            self.best_step, self.best_value = step, self.sign * value
        return better

    @torch.no_grad()
    def restore(self) -> None:
        if self.state is None:
            return
        for n, p in self.model.named_parameters():
            if n in self.state:
                p.copy_(self.state[n].to(p.device))

    @property
    def stale_evaluations(self) -> int:
        """Evaluations since the best one."""
        return sum(step > self.best_step for step, _ in self.history)

    def summary(self) -> dict:
        """The set, the metric, the step kept and its value (keyed by the metric: `accuracy` or `loss`), the history."""
        best = self.sign * self.best_value
        return {"on": self.name, "metric": self.metric, "step": self.best_step, self.metric: best, "history": self.history}

    # ---- checkpoints: the history in trainer_state.json, the kept weights in a file of this process's own

    def checkpoint_state(self) -> dict:
        """What a checkpoint's trainer state records (strict JSON: the best is found again from the history)."""
        return {"on": self.name, "metric": self.metric, "history": [list(h) for h in self.history]}

    def save_weights(self, checkpoint: Path, process_index: int) -> None:
        if self.state is not None:
            save_file({n: t.contiguous() for n, t in self.state.items()}, weights_path(checkpoint, process_index))

    def load(self, state: dict | None, checkpoint: Path, process_index: int) -> bool:
        """Take up a checkpoint's selection; False (nothing taken) when it selected on another set or metric, or did not
        select at all."""
        if not state or (state["on"], state["metric"]) != (self.name, self.metric):
            return False
        for step, value in state["history"]:
            self.record(step, value)
        self.state = load_file(weights_path(checkpoint, process_index)) if self.best_step >= 0 else None
        return True


def weights_path(checkpoint: Path, process_index: int) -> Path:
    """Each process keeps its own copy (its shard, under FSDP or DeepSpeed), as accelerate keeps its RNG states."""
    return checkpoint / f"best_weights_{process_index}.safetensors"
