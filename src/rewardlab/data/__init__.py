"""Preference, prompt and step-labelled data: adapters for common formats, normalised to `PreferenceExample` (pairs) and
`StepExample` (process supervision)."""

from rewardlab.data.errors import DataError
from rewardlab.data.types import Message, PreferenceExample, PromptCompletion, StepExample, Text

__all__ = ["DataError", "Message", "PreferenceExample", "PromptCompletion", "StepExample", "Text"]
