"""Where an RL run's policy and prompts come from: the built-in world (`builtin`), its step tasks (`builtin-steps`), or
a model or data spec.

    model, tokenizer = resolve_policy("builtin")          # the built-in world's base policy
    prompts = resolve_prompts("builtin:test_ood", limit=64)
    model, tokenizer = resolve_policy("builtin-steps")    # the step policy: also writes one intermediate result a line
    prompts = resolve_prompts("builtin-steps:test_id")    # step-task prompts (rewardlab.tasks.steps splits)

PPO, best-of-N and the demo read their policy and prompts here; what scores the responses is `rewardlab.rl.scorers`.
"""

from __future__ import annotations

import torch

from rewardlab.data.types import Text

BUILTIN = "builtin"  # the built-in world: its base policy, its prompts, its gold reward (`rl.scorers.resolve_scorer`)
BUILTIN_STEPS = "builtin-steps"  # the world's step tasks: the step policy, step prompts, the outcome gold of the last line


def builtin_split(spec: str, name: str) -> str | None:
    """The split of `name` or `name:SPLIT` (default train), None when `spec` is neither."""
    if spec == name or spec.startswith(name + ":"):
        return spec.partition(":")[2] or "train"
    return None


def resolve_policy(spec: str, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
    """(model, tokenizer) of a policy: `builtin` -> the built-in world's base policy, `builtin-steps` -> its step policy
    (`rewardlab.tasks.policy.get_step_policy`); else any model name
    `rewardlab.modeling.sources` resolves (built-ins, a .gguf file, a directory, a hub id). The model is placed on
    `device` in `dtype` (defaults: cuda if any; bf16 on a capable GPU, fp32 on CPU)."""
    from rewardlab.runtime import resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if spec == BUILTIN:
        from rewardlab.tasks.policy import get_base_policy

        model, tokenizer, _ = get_base_policy()
    elif spec == BUILTIN_STEPS:
        from rewardlab.tasks.policy import get_step_policy

        model, tokenizer, _ = get_step_policy()
    else:
        from rewardlab.modeling.sources import load_causal_lm

        model, tokenizer = load_causal_lm(spec, dtype=dtype)
    return model.to(device=device, dtype=dtype), tokenizer


def resolve_prompts(spec: str, *, limit: int | None = None, seed: int = 0, default_count: int = 256) -> list[Text]:
    """Prompts from a data spec (file or hub id, see `load_prompts`), or from the built-in world: `builtin` (its train
    split) or `builtin:SPLIT` (train, test_id, test_ood, all), or its step tasks: `builtin-steps[:SPLIT]` (train,
    validation, test_id, test_ood); `limit` prompts (default `default_count`)."""
    if (split := builtin_split(spec, BUILTIN)) is not None:
        from rewardlab.tasks.world import make_prompts

        return list(make_prompts(split, limit or default_count, seed))
    if (split := builtin_split(spec, BUILTIN_STEPS)) is not None:
        from rewardlab.tasks.steps import make_step_tasks

        return [task.messages for task in make_step_tasks(split, limit or default_count, seed)]
    from rewardlab.data.loading import load_prompts

    return load_prompts(spec, limit=limit)
