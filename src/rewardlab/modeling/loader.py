"""Loading a trained reward model, or an ensemble of them, from disk (or a built-in name): above both classes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from rewardlab.errors import MissingPathError
from rewardlab.modeling.ensemble import ENSEMBLE_NAME, EnsembleRewardModel, is_ensemble, read_manifest
from rewardlab.modeling.normalization import missing_statistics
from rewardlab.modeling.reward_model import CONFIG_NAME, MODEL_SUBDIR, RewardModel, RewardModelConfig, build_reward_model
from rewardlab.modeling.sources import is_builtin


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Accept a reward-model directory or a training run's output directory (which holds it under `model/`)."""
    p = Path(path)
    for candidate in (p, p / MODEL_SUBDIR):
        if (candidate / CONFIG_NAME).exists() or is_ensemble(candidate):
            return candidate
    if not p.exists():
        raise MissingPathError(f"{p}: no such reward model directory")
    raise MissingPathError(f"{p}: not a rewardlab reward model (no {CONFIG_NAME} or {ENSEMBLE_NAME}, here or in {MODEL_SUBDIR}/)")


def saved_objective(path: str | os.PathLike) -> str:
    """What a saved model was trained to score ("preference" or "prm"; `RewardModelConfig.objective`), from its config file
    alone; built-in names and ensembles are preference models."""
    if is_builtin(str(path)):
        return "preference"
    model_dir = resolve_model_dir(path)
    if is_ensemble(model_dir):
        return "preference"
    return RewardModelConfig.from_dict(json.loads((model_dir / CONFIG_NAME).read_text())).objective


def check_normalizable(path: str | os.PathLike, aggregate: str | None = None) -> None:
    """Raise NormalizationUnavailable (one line) unless the reward model at `path` has recorded reward statistics (an
    ensemble: for the aggregate it is scored with). Reads only the config files."""
    if is_builtin(str(path)):
        raise missing_statistics(f"{path} (a built-in model with a fresh head)")
    model_dir = resolve_model_dir(path)
    if is_ensemble(model_dir):
        saved = read_manifest(model_dir)
        if saved.get("reward_statistics") is None:
            raise missing_statistics(str(path))
        if aggregate not in (None, saved.get("aggregate", "mean")):
            raise missing_statistics(f"{path} with --aggregate {aggregate} (its statistics are of the {saved['aggregate']})")
    elif RewardModelConfig.from_dict(json.loads((model_dir / CONFIG_NAME).read_text())).reward_statistics is None:
        raise missing_statistics(str(path))


def load_reward_model(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    aggregate: str | None = None,
    normalize: bool = False,
):
    """A trained reward model (or ensemble) for scoring, in eval mode. `path` may be a training run's output directory,
    or a built-in model name (`tiny-llama`, `smollm2-135m`): that model with a fresh, seed-0 reward head (demos, tests).

    `normalize`: rewards (r - mean) / std by the statistics recorded at training (`rewardlab.modeling.normalization`); a
    model without them raises NormalizationUnavailable (a ValueError: one line on the command line), checked before the
    weights are read."""
    if normalize:
        check_normalizable(path, aggregate)  # before the weights are read: fails at once
    if is_builtin(str(path)):
        return build_reward_model(str(path), dtype=dtype).to(device or "cpu").eval()
    model_dir = resolve_model_dir(path)
    if is_ensemble(model_dir):
        model = EnsembleRewardModel.from_pretrained(model_dir, aggregate=aggregate, dtype=dtype, device=device)
    else:
        model = RewardModel.from_pretrained(model_dir, dtype=dtype, device=device)
    if normalize:
        model.use_normalization(where=str(path))
    return model.eval()


def scoring_placement(
    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, *, current_cuda: bool = False
) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) a reward model is scored on: `device` None = CUDA when this process sees a GPU, else the CPU;
    `dtype` None/auto = bf16 on a capable GPU, else fp32 (`rewardlab.runtime`). `current_cuda`: an unindexed CUDA device
    becomes this process's current one (the one a launcher such as accelerate gave this rank)."""
    from rewardlab.runtime import resolve_device, resolve_dtype

    placed_on = resolve_device(device)
    if current_cuda and placed_on.type == "cuda" and placed_on.index is None:
        placed_on = torch.device("cuda", torch.cuda.current_device())
    return placed_on, resolve_dtype(dtype, placed_on)


def load_for_scoring(
    source,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    aggregate: str | None = None,
    normalize: bool = False,
    current_cuda: bool = False,
    where: str = "the reward model",
):
    """A reward model ready to score, in eval mode: what `rewardlab score`, `serve`, `eval-rm`, the RL scorers and the
    TRL and verl adapters all load. `source`: a path or built-in name (`load_reward_model`), placed by
    `scoring_placement(device, dtype, current_cuda=...)`; or an already loaded model, used where it is (`normalize`
    switches its normalisation on; `where` names it when it has no statistics)."""
    if not isinstance(source, str | os.PathLike):
        return (source.use_normalization(where=where) if normalize else source).eval()
    placed_on, placed_as = scoring_placement(device, dtype, current_cuda=current_cuda)
    return load_reward_model(source, device=placed_on, dtype=placed_as, aggregate=aggregate, normalize=normalize)
