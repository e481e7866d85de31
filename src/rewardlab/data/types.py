"""The one example type every preference source is normalised to (TRL's conventions).

Standard format: `prompt`, `chosen`, `rejected` are strings and the model sees `prompt + response` (plus EOS).
Conversational format: `prompt` is a list of chat messages and `chosen` / `rejected` are lists holding the assistant
turn(s); the tokenizer's chat template renders them.
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
