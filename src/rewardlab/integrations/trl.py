"""A rewardlab reward model as a TRL reward function (GRPOTrainer, RLOOTrainer: `reward_funcs=[...]`).

    from rewardlab.integrations.trl import reward_function
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward_function("runs/rm")], train_dataset=prompts, args=...)

TRL calls a reward function as `f(prompts=..., completions=..., completion_ids=..., **dataset_columns, trainer_state=...)`
and wants one float per completion. This one scores each (prompt, completion) exactly as `rewardlab score` does:
plain strings as the joined text `prompt + completion` + EOS (TRL decodes completions without special tokens, so the
EOS a generation stopped at is restored; TRL's own model-id path scores them without it, which is not what the reward
model was trained on), chat messages through the reward model's chat template. Rows are scored in length-sorted
batches of `batch_size`.

The returned scores are sequence rewards, one per completion: GRPO and RLOO take one advantage per sequence, so token-level
rewards (R3HF) would cancel there anyway (their sum is R(x, y) - R(x)); dense rewards need per-token returns (PPO with GAE,
e.g. verl; see docs/integrations.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rewardlab.data.types import Text
from rewardlab.errors import UserError


class RewardlabRewardFunction:
    """Callable TRL reward function over a rewardlab reward model (see `reward_function`): a thin adapter that loads the
    model on first use and returns the scoring service's sequence rewards (`rewardlab.modeling.service`)."""

    def __init__(
        self,
        model: Any,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        dtype: str | torch.dtype | None = None,
        name: str | None = None,
        normalize: bool = False,
    ) -> None:
        from rewardlab.modeling.loader import check_normalizable, resolve_model_dir
        from rewardlab.modeling.sources import is_builtin

        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = dtype
        self.normalize = normalize
        self._source, self._service = model, None
        if isinstance(model, str):
            # a wrong path, or normalize on a model without statistics, fails now, not at the first training step
            if not is_builtin(model):
                resolve_model_dir(model)
            if normalize:
                check_normalizable(model)
        else:  # an already loaded reward model: normalize switches its normalisation on now (it must have statistics)
            _ = self.service
        # TRL names each reward function by `__name__` in its logs (rewards/<name>/mean).
        self.__name__ = name or "rewardlab"

    @property
    def service(self):
        """The scoring service, loaded on first use: onto `device`, or (None) the calling process's current CUDA device
        (the one accelerate gave this rank), else the CPU; `batch_size` sequences per forward pass."""
        if self._service is None:
            from rewardlab.modeling.service import ScoringService

            self._service = ScoringService.load(
                self._source, self.device, self.dtype, normalize=self.normalize, current_cuda=True,
                batch_size=self.batch_size, max_length=self.max_length,
            )  # fmt: skip
        return self._service

    @property
    def rm(self):
        """The reward model (loaded on first use)."""
        return self.service.rm

    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.service.rewards(list(zip(prompts, completions, strict=True)))


def reward_function(
    model: Any,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    *,
    max_length: int | None = None,
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
    normalize: bool = False,
) -> RewardlabRewardFunction:
    """A reward function for TRL's GRPOTrainer / RLOOTrainer (`reward_funcs`) that returns `rewardlab score`'s rewards.

    `model`: a rewardlab reward-model directory (or training run directory, ensemble, `tiny-llama`, `smollm2-135m`) or
    an already loaded `RewardModel`. `device`: where to run it (None: this process's CUDA device, else CPU). `batch_size`:
    sequences per forward pass. `max_length`: truncate longer sequences keeping their end (as `rewardlab score
    --max-length`). `dtype`: auto | fp32 | bf16 | fp16. `name`: the name TRL logs the rewards under (default
    `rewardlab`). `normalize`: rewards (r - mean) / std with the statistics recorded at training (as `rewardlab score
    --normalize`); a model without them fails here."""
    return RewardlabRewardFunction(model, device, batch_size, max_length, dtype, name, normalize)
