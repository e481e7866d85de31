"""One interface for everything that scores (prompt, response) text: a reward model, the built-in world's gold reward,
or a plain function (tests, custom graders).

    scorer = resolve_scorer("runs/rm")        # a saved reward model (or a training run's output directory)
    scorer = resolve_scorer("builtin")        # the built-in world's exact gold reward
    scorer = resolve_scorer("builtin-steps")  # its step tasks' outcome gold (the last line against the chain's answer)
    scorer.score(prompts, responses)          # -> list[float], one per pair, in input order

Responses are the generated text without its end-of-sequence token; a reward model sees them through the scoring service
(`rewardlab.modeling.service`), which encodes them as training does and closes the assistant turn with EOS exactly as a
policy would. Where policies and prompts come from: `rewardlab.rl.sources`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from rewardlab.choices import PRM
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR, Text
from rewardlab.rl.sources import BUILTIN, BUILTIN_STEPS


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
    """Sequence reward R(x, y) of a rewardlab reward model (or ensemble): the scoring service's rewards (length-sorted
    batches of `batch_size`, one forward pass each, no gradients; input order). Over-long pairs keep their end
    (`max_length`), where the reward is read."""

    def __init__(self, model, batch_size: int = 16, max_length: int | None = None):
        from rewardlab.modeling.service import ScoringService

        self.service = ScoringService(model.eval(), batch_size=batch_size, max_length=max_length)

    def score(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        _check_lengths(prompts, responses)
        return self.service.rewards(list(zip(prompts, responses, strict=True)))


class StepScorer:
    """A response's score from its steps (a process reward model as a best-of-N or RL scorer): the response is split on
    `separator`, its steps scored in `view` (`rewardlab.step_scoring`: a PRM's P(step correct), or any reward model's
    r3hf step rewards) and aggregated (`min`, the weakest step, by default; `product` = the chance every step is
    correct). A response with no step left after truncation scores 0."""

    def __init__(
        self,
        model,
        view: str = "prm",
        aggregate: str = "min",
        separator: str = DEFAULT_STEP_SEPARATOR,
        batch_size: int = 16,
        max_length: int | None = None,
    ):
        from rewardlab.modeling.service import ScoringService

        self.service = ScoringService(model.eval(), batch_size=batch_size, max_length=max_length)
        self.view, self.aggregate, self.separator = view, aggregate, separator

    def score(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        from rewardlab.step_scoring import score_steps, split_steps

        _check_lengths(prompts, responses)
        items = [(p, split_steps(r, self.separator)) for p, r in zip(prompts, responses, strict=True)]
        scores = score_steps(self.service, items, self.view, separator=self.separator) if items else []
        return [s.aggregations()[self.aggregate] or 0.0 for s in scores]


def _check_lengths(prompts: Sequence[Text], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")


def resolve_scorer(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 16,
    step_aggregate: str = "min",
) -> Scorer:
    """`builtin` -> the built-in world's gold reward; `builtin-steps` -> its step tasks' (`StepGoldReward`: the outcome
    gold of the last line); anything else -> a reward model directory (or training run): a process reward model
    (`train-rm --objective prm`) scores a response by its steps' P(correct) aggregated (`step_aggregate`, `StepScorer`)."""
    if spec == BUILTIN:
        from rewardlab.tasks.world import GoldReward

        return GoldReward()
    if spec == BUILTIN_STEPS:
        from rewardlab.tasks.steps import StepGoldReward

        return StepGoldReward()
    from rewardlab.modeling.loader import load_for_scoring, saved_objective

    if saved_objective(spec) == PRM:
        return StepScorer(load_for_scoring(spec, device, dtype), "prm", step_aggregate, batch_size=batch_size)
    return RewardModelScorer(load_for_scoring(spec, device, dtype), batch_size=batch_size)
