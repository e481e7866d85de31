"""One interface for everything that scores (prompt, response) text: a reward model, the built-in world's gold reward,
or a plain function (tests, custom graders).

    scorer = resolve_scorer("runs/rm")        # a saved reward model (or a training run's output directory)
    scorer = resolve_scorer("builtin")        # the built-in world's exact gold reward
    scorer.score(prompts, responses)          # -> list[float], one per pair, in input order

Responses are the generated text without its end-of-sequence token; a reward model sees them through the shared chat
template (`encode_prompt_response`), which closes the assistant turn with EOS exactly as a policy would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from rewardlab.data.types import Text

BUILTIN = "builtin"


@runtime_checkable
class Scorer(Protocol):
    """Anything with `score(prompts, responses) -> list[float]` (one score per pair, in input order)."""

    def score(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]: ...


class FunctionScorer:
    """Wraps `fn(prompt, response) -> float`, e.g. a rule-based grader or injected scores in tests."""

    def __init__(self, fn: Callable[[Text, str], float]):
        self.fn = fn

    def score(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        _check_lengths(prompts, responses)
        return [float(self.fn(p, r)) for p, r in zip(prompts, responses, strict=True)]


class RewardModelScorer:
    """Sequence reward R(x, y) of a rewardlab reward model (or ensemble).

    Pairs are encoded with the chat template, sorted by length and scored in batches without gradients (one forward pass
    per batch); the scores come back in input order. Over-long pairs keep their end (`max_length`), where the reward is
    read.
    """

    def __init__(self, model, batch_size: int = 16, max_length: int | None = None):
        self.model = model.eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def score(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        from rewardlab.scoring import score_completions

        _check_lengths(prompts, responses)
        if not prompts:
            return []
        results = score_completions(
            self.model,
            list(zip(prompts, responses, strict=True)),
            batch_size=self.batch_size,
            max_length=self.max_length,
        )
        return [r.reward for r in results]


def _check_lengths(prompts: Sequence[Text], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")


def resolve_policy(spec: str, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
    """(model, tokenizer) of a policy: `builtin` -> the built-in world's base policy; else any model name
    `rewardlab.modeling.sources` resolves (built-ins, a .gguf file, a directory, a hub id). The model is placed on
    `device` in `dtype` (defaults: cuda if any; bf16 on a capable GPU, fp32 on CPU)."""
    from rewardlab.runtime import resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if spec == BUILTIN:
        from rewardlab.tasks.policy import get_base_policy

        model, tokenizer, _ = get_base_policy()
    else:
        from rewardlab.modeling.sources import load_causal_lm

        model, tokenizer = load_causal_lm(spec, dtype=dtype)
    return model.to(device=device, dtype=dtype), tokenizer


def resolve_prompts(spec: str, *, limit: int | None = None, seed: int = 0, default_count: int = 256) -> list[Text]:
    """Prompts from a data spec (file or hub id, see `load_prompts`), or from the built-in world: `builtin` (its train
    split) or `builtin:SPLIT` (train, test_id, test_ood, all), `limit` prompts (default `default_count`)."""
    if spec == BUILTIN or spec.startswith(BUILTIN + ":"):
        from rewardlab.tasks.world import make_prompts

        split = spec.partition(":")[2] or "train"
        return list(make_prompts(split, limit or default_count, seed))
    from rewardlab.data.loading import load_prompts

    return load_prompts(spec, limit=limit)


def resolve_scorer(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
) -> Scorer:
    """`builtin` -> the built-in world's gold reward; anything else -> a reward model directory (or training run)."""
    if spec == BUILTIN:
        from rewardlab.tasks.world import GoldReward

        return GoldReward()
    from rewardlab.modeling.loader import load_for_scoring

    return RewardModelScorer(load_for_scoring(spec, device, dtype), batch_size=batch_size)
