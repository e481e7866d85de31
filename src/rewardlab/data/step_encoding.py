r"""Step-labelled examples as token ids for a process reward model (PRM), and where each step's score is read.

`encode_steps`: the text a PRM reads is the prompt, then each step followed by the separator (TRL's
`step_separator`, "\n" by default): `prompt + sep + step_1 + sep + ... + step_n + sep`. TRL's PRMTrainer tokenises the
prompt and each `step + sep` apart and puts the step's label on the separator's last token; here the whole text is
tokenised as one (as a PRM is used at inference, and as `rewardlab.data.templates` tokenises prompt + response) and each
step's score is read at the last token that ends inside `step + sep`, found from the fast tokenizer's character offsets:
the separator's token when the tokenizer keeps the separator apart (the usual case: "\n" is its own token), else the
step's own last token, so that a score does not read the next step's text (but for an empty step whose separator the
tokenizer merges with the next step's leading whitespace: `step_ends_from_offsets`). Unlike TRL, the separator also ends a string
prompt (unless the prompt already ends with it), as ProcessBench's evaluation does (`problem + "\n"`): TRL joins the
prompt and the first step with nothing between them. A prompt made of messages is rendered by the chat template and the
steps are the assistant turn's content (`templates.render_prompt_response`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rewardlab.data.templates import (
    render_prompt_response,
    response_start_from_offsets,
    response_start_without_offsets,
)
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR, StepExample, StepLabel, Text
from rewardlab.errors import UserError

StepTruncation = Literal["keep_steps", "drop", "error"]
STEP_TRUNCATION_CHOICES = ("keep_steps", "drop", "error")


@dataclass
class EncodedSteps:
    input_ids: list[int]
    step_ends: list[int]  # per kept step: the token index its score is read at
    response_start: int  # index of the first token of the steps
    n_steps: int  # steps in the example; len(step_ends) is smaller when truncation dropped the last ones
    truncated: bool = False


@dataclass
class StepText:
    """The text a PRM reads and where each step's `step + separator` segment ends in it (character offsets)."""

    text: str
    steps_start: int  # the first character of the first step
    segment_ends: list[int]
    add_special_tokens: bool


def render_steps(tokenizer, prompt: Text, steps: Sequence[str], separator: str = DEFAULT_STEP_SEPARATOR) -> StepText:
    """The prompt then each step followed by `separator` (see the module docstring), and each segment's end."""
    if not separator:
        raise UserError("the step separator must not be empty: each step's score is read where its separator ends")
    if not steps:
        raise UserError("no steps to encode")
    content = "".join(step + separator for step in steps)
    if isinstance(prompt, str):
        prompt_text = prompt + separator if prompt and not prompt.endswith(separator) else prompt
        text, start = prompt_text + content, len(prompt_text)
    else:
        prompt_text, response_text, _ = render_prompt_response(tokenizer, prompt, content)
        found = response_text.find(content)
        if found < 0:
            raise UserError(
                "the chat template changes the steps' text inside the assistant turn (e.g. strips whitespace); "
                "cannot locate where each step ends"
            )
        text, start = prompt_text + response_text, len(prompt_text) + found
    ends = list(itertools.accumulate((len(step) + len(separator) for step in steps), initial=start))[1:]
    return StepText(text, start, ends, add_special_tokens=isinstance(prompt, str))


def _shared_token_error(step: int) -> UserError:
    return UserError(
        f"step {step}: its score would be read at the same token as the step before it (the tokenizer merges the "
        "separator with the text around it, e.g. after empty steps); use a separator the tokenizer keeps as its own "
        "token, such as '\\n'"
    )


def step_ends_from_offsets(offsets: Sequence[tuple[int, int]], text_token: Sequence[bool], bounds: Sequence[int]) -> list[int]:
    """Token index of each segment's score: the last text token whose span ends inside the segment (after `bounds[i]`,
    at or before `bounds[i + 1]`). `bounds` = [steps_start, end of segment 0, end of segment 1, ...]; tokens the
    tokenizer adds itself (no span: `text_token` False) are never a step's.

    A segment in which no token ends (an empty step whose separator the tokenizer merges with the next step's leading
    whitespace: "\\n" + "\\n  So" -> "\\n\\n " in SmolLM2) is read at the token that straddles its end; two steps
    read at one token (consecutive such steps) are refused."""
    ends: list[int] = []
    token = 0
    for step, (start, stop) in enumerate(itertools.pairwise(bounds)):
        found = None
        while token < len(offsets) and (not text_token[token] or offsets[token][1] <= stop):
            if text_token[token] and offsets[token][1] > start:
                found = token
            token += 1
        if found is None:
            found = token  # the token straddling the segment's end (there is one: the text goes on after it)
        if found >= len(offsets) or (ends and found <= ends[-1]):
            raise _shared_token_error(step)
        ends.append(found)
    return ends


def step_ends_without_offsets(tokenizer, ids: Sequence[int], rendered: StepText) -> list[int]:
    """`step_ends_from_offsets` for tokenizers without offsets (slow ones): the tokens of the joined text that lie inside
    `text[:end]` are counted as `templates.response_start_without_offsets` counts a prompt's tokens (its own ids, then
    the tokens whose decoded text is still inside it), and each segment's score is read at the last of them (or at the
    token straddling its end when that is the previous step's)."""
    add = rendered.add_special_tokens
    previous = response_start_without_offsets(tokenizer, list(ids), rendered.text[: rendered.steps_start], add) - 1
    ends = []
    for step, end in enumerate(rendered.segment_ends):
        inside = response_start_without_offsets(tokenizer, list(ids), rendered.text[:end], add)
        position = inside - 1 if inside - 1 > previous else inside
        if position <= previous or position >= len(ids):
            raise _shared_token_error(step)
        previous = position
        ends.append(position)
    return ends


def encode_steps(
    tokenizer,
    prompt: Text,
    steps: Sequence[str],
    *,
    separator: str = DEFAULT_STEP_SEPARATOR,
    max_length: int | None = None,
    truncation: StepTruncation = "keep_steps",
) -> EncodedSteps | None:
    """Token ids of the prompt and steps, with each step's score position (see the module docstring).

    Over `max_length`: `keep_steps` keeps the prompt and the whole steps that fit (the ids end at the last kept step's
    score position; None when not even the first step fits), `drop` returns None, `error` raises a UserError.
    """
    if truncation not in STEP_TRUNCATION_CHOICES:
        raise UserError(f"step truncation {truncation!r}: expected one of {', '.join(STEP_TRUNCATION_CHOICES)}")
    rendered = render_steps(tokenizer, prompt, steps, separator)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(rendered.text, add_special_tokens=rendered.add_special_tokens, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        text_token = [sequence is not None for sequence in enc.sequence_ids()]
        step_ends = step_ends_from_offsets(enc["offset_mapping"], text_token, [rendered.steps_start, *rendered.segment_ends])
        start = response_start_from_offsets(enc["offset_mapping"], text_token, rendered.steps_start)
    else:
        ids = list(tokenizer(rendered.text, add_special_tokens=rendered.add_special_tokens)["input_ids"])
        step_ends = step_ends_without_offsets(tokenizer, ids, rendered)
        prompt_text = rendered.text[: rendered.steps_start]
        start = response_start_without_offsets(tokenizer, ids, prompt_text, rendered.add_special_tokens)
    encoded = EncodedSteps(ids, step_ends, start, len(steps))
    if max_length is None or len(ids) <= max_length:
        return encoded
    if truncation == "error":
        raise UserError(
            f"the prompt and its {len(steps)} steps are {len(ids)} tokens, over max_length {max_length} "
            f"(the last step ends at token {step_ends[-1] + 1}); raise max_length, or keep the steps that fit"
        )
    kept = sum(end < max_length for end in step_ends)
    if truncation == "drop" or kept == 0:
        return None
    return EncodedSteps(ids[: step_ends[kept - 1] + 1], step_ends[:kept], start, len(steps), truncated=True)


@dataclass
class EncodedStepExample:
    encoded: EncodedSteps
    labels: list[StepLabel]  # the kept steps' labels
    index: int  # position of the example in its dataset

    @property
    def length(self) -> int:
        return len(self.encoded.input_ids)


def encode_step_examples(
    tokenizer,
    examples: Sequence[StepExample],
    max_length: int | None,
    truncation: StepTruncation = "keep_steps",
    separator: str = DEFAULT_STEP_SEPARATOR,
) -> tuple[list[EncodedStepExample], dict[str, int]]:
    """Encode every example. Returns those kept and counts: examples, truncated (steps dropped from the end), dropped."""
    kept, truncated, dropped = [], 0, 0
    for i, example in enumerate(examples):
        try:
            encoded = encode_steps(
                tokenizer, example.prompt, example.steps, separator=separator, max_length=max_length, truncation=truncation
            )
        except UserError as err:  # say which example
            name = f" ({example.metadata['id']})" if "id" in example.metadata else ""
            raise UserError(f"example {i}{name}: {err}") from None
        if encoded is None:
            dropped += 1
            continue
        truncated += encoded.truncated
        kept.append(EncodedStepExample(encoded, example.labels[: len(encoded.step_ends)], i))
    return kept, {"examples": len(kept), "truncated": truncated, "dropped": dropped}
