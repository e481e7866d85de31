"""Step views: one reward per step of a response, from any reward model, read from the scoring service's forward passes.

A response written as steps (`steps`, joined by a separator) gets one score per step in one of two views:

- `prm`: a process reward model's step scores. The prompt and steps are encoded as a PRM reads them
  (`rewardlab.data.step_encoding.encode_steps`: `prompt + sep + step_1 + sep + ... + step_n + sep`) and ONE forward pass
  gives the reward head at every position; each step's score is the head at its end (its separator's token). The head
  is the log-odds that the step is correct: `step_rewards` are the logits, `step_probabilities` = sigmoid(logit).
- `r3hf`: any sequence reward model's R3HF token rewards r_t = R(x, y<=t) - R(x, y<t), summed within each step. The
  response is scored exactly as `rewardlab score` scores the pair (prompt, separator.join(steps)) (the service's
  encoding: plain strings as the joined text + EOS, messages through the chat template with its closing), and each
  response token goes to the step in which its last character lies (a token that straddles a step boundary is the
  later step's, as a token straddling the prompt's end is the response's; each separator goes with the step before
  it; the template's closing and EOS with the last step). The sums telescope: step k's reward is
  R(x, y up to step k's last token) - R(x, y up to step k-1's last token), and the step rewards add up to
  R(x, y) - R(x), the `reward - prompt_reward` that `rewardlab score` reports, up to float error. Over the service's
  max_length the sequence keeps its end, as `score` does (`truncated`): steps whose tokens were all cut get 0.

Ranking one response from its steps (best-of-N): `aggregations` (`rewardlab.step_metrics.aggregate_step_scores`): for a
PRM over the probabilities (min, last, product = the chance that every step is correct, mean); for r3hf over the step
rewards (min, last, mean; a product of rewards means nothing, so it is None; `mean` is (R(x, y) - R(x)) / n).

Both views are functions of the service's `ScoredBatch`, so the synchronous entry (`score_steps`) and the asynchronous
one (`score_steps_async`, the server's) share its encoding, batching and forward passes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewardlab.choices import PRM, STEP_VIEWS
from rewardlab.data.step_encoding import EncodedSteps, encode_steps
from rewardlab.data.templates import (
    EncodedSequence,
    encode_prompt_response,
    render_prompt_response,
    response_start_without_offsets,
)
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR, Text
from rewardlab.errors import UserError
from rewardlab.modeling.service import ScoredBatch, ScoringService, SequenceScore, TokenRewardSettings
from rewardlab.step_metrics import AGGREGATIONS, aggregate_step_scores

R3HF_SETTINGS = TokenRewardSettings("r3hf")


def check_view(view: str, flag: str = "--step-rewards") -> None:
    if view not in STEP_VIEWS:
        raise UserError(f"{flag} {view!r}: expected one of {', '.join(STEP_VIEWS)}")


def default_view(objective: str) -> str:
    """The step view that reads a model as it was trained: prm for a PRM (`train-rm --objective prm`), else r3hf."""
    return "prm" if objective == PRM else "r3hf"


def view_note(view: str, objective: str, model: str) -> str | None:
    """A line for the user when the view does not read the model as it was trained (None when it does)."""
    if view == "prm" and objective != PRM:
        return (
            f"note: {model} is not a PRM (objective {objective}): its prm step scores are its sequence reward read at "
            "each step's end, sigmoid-ed (--step-rewards r3hf reads a sequence reward model as one)"
        )
    if view == "r3hf" and objective == PRM:
        return f"note: {model} is a PRM: r3hf step rewards are the changes of its step logits (--step-rewards prm reads it)"
    return None


def sigmoid(x: float) -> float:
    """P(correct) from a PRM's logit (no overflow at either end)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass
class StepScores:
    """One response's step scores in a view. `step_rewards` has one value per scored step: all `n_steps`, or fewer when
    a PRM encoding over `max_length` kept only the first steps (`truncated`)."""

    view: str
    step_rewards: list[float]  # prm: the head's logit at each step's end; r3hf: the step's summed token rewards
    n_steps: int
    truncated: bool = False
    reward: float | None = None  # r3hf: R(x, y) and R(x) as `rewardlab score` reports them
    prompt_reward: float | None = None

    @property
    def step_probabilities(self) -> list[float] | None:
        """prm: P(step correct) = sigmoid(logit); None for r3hf (its step rewards are not log-odds)."""
        return [sigmoid(x) for x in self.step_rewards] if self.view == "prm" else None

    @property
    def ranking_scores(self) -> list[float]:
        """What the aggregations (and ProcessBench's threshold) read: probabilities for a PRM, step rewards for r3hf."""
        probabilities = self.step_probabilities
        return probabilities if probabilities is not None else self.step_rewards

    def aggregations(self) -> dict[str, float | None]:
        """min, last, product, mean of `ranking_scores` (product only for probabilities; None without scored steps)."""
        scores = self.ranking_scores
        return {
            how: None if not scores or (how == "product" and self.view != "prm") else aggregate_step_scores(scores, how)
            for how in AGGREGATIONS
        }

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"step_view": self.view, "step_rewards": self.step_rewards}
        if self.view == "prm":
            row["step_probabilities"] = self.step_probabilities
        else:
            row["reward"], row["prompt_reward"] = self.reward, self.prompt_reward
        row |= {
            "aggregations": self.aggregations(),
            "n_steps": self.n_steps,
            "scored_steps": len(self.step_rewards),
            "truncated": self.truncated,
        }
        return row


# --- the text of a response written as steps ---------------------------------------------------------------------------


def steps_response(steps: Sequence[str], separator: str = DEFAULT_STEP_SEPARATOR) -> str:
    """The response a sequence reward model scores: the steps joined by the separator (no separator after the last:
    EOS or the template's closing ends it, as a generation ends)."""
    return separator.join(steps)


def split_steps(response: str, separator: str = DEFAULT_STEP_SEPARATOR) -> list[str]:
    """A completion's steps: the text split on the separator (`steps_response` gives it back exactly)."""
    if not separator:
        raise UserError("the step separator must not be empty")
    return response.split(separator)


def steps_prompt(prompt: Text, separator: str = DEFAULT_STEP_SEPARATOR) -> Text:
    """A step file's prompt as the r3hf view scores it: a string prompt ends with the separator (unless empty or already
    so), so that the steps start after it, as the PRM encoding and ProcessBench (`problem + "\\n"`) read them; messages
    are kept (the chat template separates the turns)."""
    if isinstance(prompt, str) and prompt and not prompt.endswith(separator):
        return prompt + separator
    return prompt


# --- r3hf: which step each response token belongs to --------------------------------------------------------------------


@dataclass
class R3hfPlan:
    """A (prompt, steps) pair as the service scores it, and the step of each scored response token."""

    sequence: EncodedSequence  # the service's encoding of (prompt, separator.join(steps)), cut to its max_length
    token_steps: list[int]  # per response token of `sequence`: the index of its step
    n_steps: int


def _token_ends(tokenizer, text: str, ids: list[int], add_special_tokens: bool) -> list[float]:
    """Per token of `ids` (the encoding of `text`, maybe with EOS appended): the character its span ends at; -1 for the
    tokens the tokenizer adds before the text, +inf for those after it (and an appended EOS)."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    own = list(enc["input_ids"])
    if own != ids[: len(own)]:
        raise UserError("internal: the step offsets do not come from the scored encoding")
    ends: list[float] = []
    seen_text = False
    for (_, end), sequence in zip(enc["offset_mapping"], enc.sequence_ids(), strict=True):
        if sequence is not None:
            seen_text = True
            ends.append(end)
        else:
            ends.append(math.inf if seen_text else -1)
    return ends + [math.inf] * (len(ids) - len(own))


def _steps_without_offsets(tokenizer, text: str, ids: list[int], inner_ends: list[int], add: bool) -> list[int]:
    """The step of every token for tokenizers without offsets: the tokens inside `text[:end]` are counted as
    `templates.response_start_without_offsets` counts a prompt's, and a token is in step k when k inner boundaries lie
    at or before its start in that count."""
    firsts_out = [response_start_without_offsets(tokenizer, ids, text[:end], add) for end in inner_ends]
    return [bisect.bisect_right(firsts_out, k) for k in range(len(ids))]


def plan_r3hf(service: ScoringService, prompt: Text, steps: Sequence[str], separator: str = DEFAULT_STEP_SEPARATOR) -> R3hfPlan:
    """The service's encoding of (prompt, separator.join(steps)) and the step of each of its response tokens."""
    if not steps:
        raise UserError("no steps to score")
    tokenizer = service.tokenizer
    response = steps_response(steps, separator)
    full = encode_prompt_response(tokenizer, prompt, response)  # what service.encode scores, before its cut
    assert full is not None
    prompt_text, response_text, _ = render_prompt_response(tokenizer, prompt, response)
    found = response_text.find(response)
    if found < 0:
        raise UserError("the chat template changes the response's text (e.g. strips whitespace); cannot locate the steps")
    start = len(prompt_text) + found
    ends, position = [], start
    for step in steps[:-1]:  # where each step with its separator ends; the last step runs to the end
        position += len(step) + len(separator)
        ends.append(position)
    text, add = prompt_text + response_text, isinstance(prompt, str)
    if getattr(tokenizer, "is_fast", False):
        token_ends = _token_ends(tokenizer, text, full.input_ids, add)
        steps_of = [bisect.bisect_left(ends, end) for end in token_ends]  # the first step whose end is at or after it
    else:
        steps_of = _steps_without_offsets(tokenizer, text, full.input_ids, ends, add)
    sequence = service.fit(full)
    cut = len(full.input_ids) - len(sequence.input_ids)
    token_steps = [steps_of[cut + k] for k in range(sequence.response_start, len(sequence.input_ids))]
    return R3hfPlan(sequence, token_steps, len(steps))


def r3hf_step_scores(plan: R3hfPlan, score: SequenceScore) -> StepScores:
    """Sum the r3hf token rewards of `score` (the plan's sequence scored with method r3hf) within each step."""
    if score.token_rewards is None or len(score.token_rewards) != len(plan.token_steps):
        raise UserError("internal: r3hf step rewards need the sequence's r3hf token rewards")
    per_step: list[list[float]] = [[] for _ in range(plan.n_steps)]
    for step, value in zip(plan.token_steps, score.token_rewards, strict=True):
        per_step[step].append(value)
    sums = [math.fsum(values) for values in per_step]
    return StepScores("r3hf", sums, plan.n_steps, plan.sequence.truncated, score.reward, score.prompt_reward)


# --- prm: the head at each step's end ------------------------------------------------------------------------------------


def plan_prm(
    service: ScoringService, prompt: Text, steps: Sequence[str], separator: str = DEFAULT_STEP_SEPARATOR
) -> EncodedSteps:
    """The PRM encoding of (prompt, steps) under the service's max_length (whole steps kept from the start)."""
    encoded = encode_steps(
        service.tokenizer, prompt, steps, separator=separator, max_length=service.max_length, truncation="keep_steps"
    )
    if encoded is None:
        raise UserError(f"the prompt and the first step are over max_length {service.max_length} tokens")
    return encoded


def row_position_rewards(batch: ScoredBatch) -> list[list[float]]:
    """A view: the reward head after every (unpadded) token of each row."""
    lengths = batch.attention_mask.sum(-1).tolist()
    return [batch.rewards_at(row, range(int(n))) for row, n in enumerate(lengths)]


def prm_step_scores(encoded: EncodedSteps, positions: Sequence[float]) -> StepScores:
    return StepScores("prm", [positions[end] for end in encoded.step_ends], encoded.n_steps, encoded.truncated)


# --- entries ----------------------------------------------------------------------------------------------------------------


def _plans(service: ScoringService, items: Sequence[tuple[Text, Sequence[str]]], view: str, separator: str) -> list[Any]:
    check_view(view)
    plan = plan_prm if view == "prm" else plan_r3hf
    plans = []
    for i, (prompt, steps) in enumerate(items):
        try:
            plans.append(plan(service, prompt, steps, separator))
        except UserError as err:  # say which item
            raise UserError(f"item {i}: {err}") from None
    return plans


def _sequence(plan: Any) -> EncodedSequence:
    if isinstance(plan, R3hfPlan):
        return plan.sequence
    return EncodedSequence(plan.input_ids, plan.response_start, plan.truncated)


def _results(plans: list[Any], read: list[Any]) -> list[StepScores]:
    return [
        r3hf_step_scores(plan, value) if isinstance(plan, R3hfPlan) else prm_step_scores(plan, value)
        for plan, value in zip(plans, read, strict=True)
    ]


def score_steps(
    service: ScoringService,
    items: Sequence[tuple[Text, Sequence[str]]],
    view: str,
    *,
    separator: str = DEFAULT_STEP_SEPARATOR,
    progress: bool = False,
) -> list[StepScores]:
    """Each (prompt, steps) item's `StepScores` in `view` (prm | r3hf), in input order, in the service's length-sorted
    batches: one forward pass per batch."""
    plans = _plans(service, items, view, separator)
    sequences = [_sequence(plan) for plan in plans]
    if view == "prm":
        read = service.score_encoded(sequences, TokenRewardSettings(), progress=progress, view=row_position_rewards)
    else:
        read = service.score_encoded(sequences, R3HF_SETTINGS, progress=progress)
    return _results(plans, read)


async def score_steps_async(
    service: ScoringService,
    items: Sequence[tuple[Text, Sequence[str]]],
    view: str,
    *,
    separator: str = DEFAULT_STEP_SEPARATOR,
) -> list[StepScores]:
    """`score_steps` through the service's asynchronous entry (the server): concurrent callers share forward passes."""
    import asyncio

    plans = await asyncio.to_thread(_plans, service, items, view, separator)
    sequences = [_sequence(plan) for plan in plans]
    if view == "prm":
        read = await service.score_async(sequences, TokenRewardSettings(), view=row_position_rewards)
    else:
        read = await service.score_async(sequences, R3HF_SETTINGS)
    return _results(plans, read)


def request_steps(item: dict[str, Any], separator: str) -> tuple[Text, list[str]]:
    """A step request's item -> (prompt, steps): `{"prompt", "steps": [...]}`, or `{"prompt", "response": "..."}` whose
    response is split on the separator (a UserError names what is wrong)."""
    prompt, steps, response = item.get("prompt"), item.get("steps"), item.get("response")
    if prompt is None or (steps is None) == (response is None):
        raise UserError("give prompt and steps (a list of strings), or prompt and response (a string split on the separator)")
    if steps is None:
        if not isinstance(response, str):
            raise UserError("response: expected a string (split on the separator into steps)")
        steps = split_steps(response, separator)
    if not steps or not all(isinstance(step, str) for step in steps):
        raise UserError("steps: expected a non-empty list of strings")
    return prompt, list(steps)


async def score_step_request(
    service: ScoringService, items: Sequence[dict[str, Any]], view: str, separator: str = DEFAULT_STEP_SEPARATOR
) -> list[dict[str, Any]]:
    """The server's step requests: each item (`request_steps`) scored in `view` through the async entry, as rows
    (`StepScores.to_row`). The prompt is used as given (a step file's prompt: `steps_prompt` is the caller's)."""
    check_view(view, "step_rewards")
    pairs = []
    for i, item in enumerate(items):
        try:
            pairs.append(request_steps(item, separator))
        except UserError as err:
            raise UserError(f"items.{i}: {err}") from None
    scores = await score_steps_async(service, pairs, view, separator=separator)
    return [scored.to_row() for scored in scores]


# --- step files (`rewardlab score --step-rewards`) ---------------------------------------------------------------------


@dataclass
class StepInput:
    """One input of `score --step-rewards`: the prompt as the view scores it, the steps, and the row's other fields."""

    prompt: Text
    steps: list[str]
    metadata: dict[str, Any]


def load_step_inputs(
    spec: str,
    view: str,
    *,
    separator: str = DEFAULT_STEP_SEPARATOR,
    skip_invalid: bool = False,
    limit: int | None = None,
) -> tuple[list[StepInput], str]:
    """(inputs, format) from step data (trl-stepwise, processbench: detected from the first record) or prompt/completion
    rows whose completion (a string, or one assistant message) is split on the separator (`prompt-completion`). For
    r3hf a step file's string prompt ends with the separator (`steps_prompt`); a completion row's prompt is kept as it
    is, so that `rewardlab score` on the same row gives the same reward."""
    from rewardlab.data.io import RecordTally, parse_named_spec
    from rewardlab.data.loading import load_completions
    from rewardlab.data.steps import detect_step_format, load_steps

    check_view(view)
    split_steps("", separator)  # refuses an empty separator before anything is read
    _, source = parse_named_spec(spec)
    first = next(RecordTally(skip_invalid=True).records(source), None)
    if first is not None and detect_step_format(first.data) is not None:
        dataset = load_steps(spec, skip_invalid=skip_invalid, limit=limit)
        inputs = []
        for e in dataset.examples:
            metadata = e.metadata | ({"subset": e.subset} if e.subset is not None else {}) | {"labels": e.labels}
            inputs.append(StepInput(steps_prompt(e.prompt, separator) if view == "r3hf" else e.prompt, e.steps, metadata))
        return inputs, dataset.format
    rows = load_completions(spec, skip_invalid=skip_invalid, limit=limit)
    inputs = []
    for i, row in enumerate(rows):
        completion = row.completion
        if isinstance(completion, list) and len(completion) == 1:  # one assistant message: its content is the text
            completion = completion[0].get("content")
        if not isinstance(completion, str):
            raise UserError(
                f"row {i}: --step-rewards splits a completion's text into steps on the separator; this one is several "
                "messages (write it as a step file: prompt, completions (the steps), labels)"
            )
        inputs.append(StepInput(row.prompt, split_steps(completion, separator), dict(row.metadata or {})))
    return inputs, "prompt-completion"


def step_rows(inputs: Sequence[StepInput], scores: Sequence[StepScores]) -> list[dict[str, Any]]:
    """`score --step-rewards` rows: prompt (as scored), steps, the view's numbers (`StepScores.to_row`), metadata."""
    rows = []
    for item, scored in zip(inputs, scores, strict=True):
        row = {"prompt": item.prompt, "steps": item.steps} | scored.to_row()
        if item.metadata:
            row["metadata"] = item.metadata
        rows.append(row)
    return rows


def step_summary(scores: Sequence[StepScores], view: str, format: str, separator: str) -> dict[str, Any]:
    """The summary of a step-scored file: counts, the mean of each aggregation, and for r3hf the telescoping gap."""
    aggregations = [s.aggregations() for s in scores]
    means = {}
    for how in AGGREGATIONS:
        values = [a[how] for a in aggregations if a[how] is not None]
        means[how] = math.fsum(values) / len(values) if values else None
    return {
        "rows": len(scores),
        "step_view": view,
        "step_format": format,
        "separator": separator,
        "steps": sum(s.n_steps for s in scores),
        "scored_steps": sum(len(s.step_rewards) for s in scores),
        "truncated": sum(s.truncated for s in scores),
        "mean_aggregations": means,
        "max_abs_sum_gap": max_telescoping_gap(scores),
    }


def max_telescoping_gap(scores: Sequence[StepScores]) -> float | None:
    """max |sum(step rewards) - (reward - prompt_reward)| over r3hf results (None when there are none)."""
    gaps = [
        abs(math.fsum(s.step_rewards) - (s.reward - s.prompt_reward))
        for s in scores
        if s.view == "r3hf" and s.reward is not None and s.prompt_reward is not None
    ]
    return max(gaps) if gaps else None


__all__ = [
    "STEP_VIEWS",
    "R3hfPlan",
    "StepInput",
    "StepScores",
    "default_view",
    "max_telescoping_gap",
    "load_step_inputs",
    "plan_prm",
    "plan_r3hf",
    "row_position_rewards",
    "request_steps",
    "score_step_request",
    "score_steps",
    "score_steps_async",
    "sigmoid",
    "split_steps",
    "steps_prompt",
    "step_rows",
    "step_summary",
    "steps_response",
    "view_note",
]
