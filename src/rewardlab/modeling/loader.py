"""Loading a trained reward model, or an ensemble of them, from disk (or a built-in name): above both classes."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rewardlab.modeling.ensemble import ENSEMBLE_NAME, EnsembleRewardModel
from rewardlab.modeling.reward_model import CONFIG_NAME, MODEL_SUBDIR, RewardModel, build_reward_model
from rewardlab.modeling.sources import is_builtin


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a reward-model directory or a training run's output directory (which holds it under `model/`)."""
    p = Path(path)
    for candidate in (p, p / MODEL_SUBDIR):
        if (candidate / CONFIG_NAME).exists() or (candidate / ENSEMBLE_NAME).exists():
            return candidate
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such reward model directory")
    raise FileNotFoundError(
        f"{p}: not a rewardlab reward model (no {CONFIG_NAME} or {ENSEMBLE_NAME}, here or in {MODEL_SUBDIR}/)"
    )


def load_reward_model(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    aggregate: str | None = None,
):
    """A trained reward model (or ensemble) for scoring, in eval mode. `path` may be a training run's output directory,
    or a built-in model name (`tiny-llama`, `smollm2-135m`): that model with a fresh, seed-0 reward head (demos, tests)."""
    if is_builtin(str(path)):
        return build_reward_model(str(path), dtype=dtype).to(device or "cpu").eval()
    model_dir = resolve_model_dir(path)
    if (model_dir / ENSEMBLE_NAME).exists():
        model = EnsembleRewardModel.from_pretrained(model_dir, aggregate=aggregate, dtype=dtype, device=device)
    else:
        model = RewardModel.from_pretrained(model_dir, dtype=dtype, device=device)
    return model.eval()
