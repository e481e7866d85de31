"""The one example type every preference source is normalised to (TRL's conventions).

Standard format: `prompt`, `chosen`, `rejected` are strings and the model sees `prompt + response` (plus EOS).
Conversational format: `prompt` is a list of chat messages and `chosen` / `rejected` are lists holding the assistant
turn(s); the tokenizer's chat template renders them.

Step-labelled data (process supervision: TRL's stepwise format, ProcessBench) is normalised to `StepExample`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]
Text = str | list[Message]


@dataclass
class PreferenceExample:
    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None  # e.g. rating difference; used by the margin loss
    source: str | None = None
    subset: str | None = None  # e.g. a RewardBench subset name
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass
class PromptCompletion:
    """A prompt and one response to score (TRL's prompt/completion format)."""

    prompt: Text
    completion: Text
    metadata: dict[str, Any] = field(default_factory=dict)


StepLabel = bool | None  # True: a correct step; False: a wrong one; None: unknown (not scored, masked from a PRM's loss)


@dataclass
class StepExample:
    """A prompt and a response written as steps, with one label per step (`rewardlab.data.steps`).

    `first_error` is the index of the first step labelled wrong, -1 when none is. ProcessBench labels only that index:
    the steps before it are correct, it is wrong, and the steps after it are unknown (None).
    """

    prompt: Text
    steps: list[str]
    labels: list[StepLabel]
    first_error: int
    subset: str | None = None  # e.g. a ProcessBench subset (gsm8k, math, olympiadbench, omnimath)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def has_error(self) -> bool:
        return self.first_error >= 0


DEFAULT_STEP_SEPARATOR = "\n"  # what follows each step of a response (TRL's PRMConfig.step_separator default)
