"""Preference and prompt data: adapters for common formats, normalised to `PreferenceExample`."""

from rewardlab.data.errors import DataError
from rewardlab.data.types import Message, PreferenceExample, PromptCompletion, Text

__all__ = ["DataError", "Message", "PreferenceExample", "PromptCompletion", "Text"]
