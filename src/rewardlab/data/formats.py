r"""Adapters from common preference-data formats to `PreferenceExample`.

Each adapter takes one raw record (a dict) and returns a `PreferenceExample`, or None when the record is legitimately
excluded (a tie: it says nothing about which response is better). Bad records raise `DataError` with `field` set; the
loader adds file and line. Errors name the record's own field (`conv_B`, `targets`, ...), so the user can find it.

| format            | fields                                                         | output                    |
|-------------------|----------------------------------------------------------------|---------------------------|
| trl               | [prompt], chosen, rejected, [margin, source, subset, id]       | strings or conversational |
| hh                | chosen, rejected: "\n\nHuman: q\n\nAssistant: a" transcripts   | conversational            |
| unified-feedback  | conv_A, conv_B, conv_A_rating, conv_B_rating, [source]         | conversational, margin    |
| hhh               | input, targets: {choices, labels}, [subset]                    | conversational            |
| mt-bench-human    | conversation_a, conversation_b, winner, [turn, question_id...] | conversational            |
| rewardbench       | prompt, chosen, rejected (strings), subset, [id]               | conversational            |

Formats whose source is a single user question (hhh, rewardbench) become one user message and one assistant message, so
a chat model's template renders them as the dialogue they are (as RewardBench and the GRM evaluation code do).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from rewardlab.data.errors import DataError
from rewardlab.data.io import type_name
from rewardlab.data.types import Message, PreferenceExample, Text

FORMATS = ("trl", "hh", "unified-feedback", "hhh", "mt-bench-human", "rewardbench")
ROLES = ("system", "user", "assistant", "tool")
MT_BENCH_WINNERS = ("model_a", "model_b")
MT_BENCH_TIES = ("tie", "tie (bothbad)")

Adapter = Callable[[dict[str, Any]], PreferenceExample | None]


# ----------------------------------------------------------------------------------------------------------------------
# field validation


def _present(record: dict[str, Any], key: str) -> bool:
    return record.get(key) is not None  # a null column (parquet, hub) counts as absent


def _require(record: dict[str, Any], key: str) -> Any:
    if not _present(record, key):
        raise DataError("missing field", field=key)
    return record[key]


def _string(record: dict[str, Any], key: str) -> str:
    value = _require(record, key)
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type_name(value)}", field=key)
    return value


def _optional_string(record: dict[str, Any], key: str) -> str | None:
    return _string(record, key) if _present(record, key) else None


def _number(value: Any, key: str) -> float:
    """A finite number; numeric strings are accepted because csv cells are always strings."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise DataError(f"expected a number, got '{value}'", field=key) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"expected a finite number, got {type_name(value)} {value!r}", field=key)
    return float(value)


def _optional_number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    return _number(value, key)


def parse_messages(value: Any, key: str) -> list[Message]:
    """Validate a list of {"role", "content"} chat messages; keep only those two keys."""
    if not isinstance(value, list):
        raise DataError(f"expected a list of messages, got {type_name(value)}", field=key)
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"message {i}: expected an object with role and content, got {type_name(message)}", field=key)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"message {i}: role must be one of {', '.join(ROLES)}, got {role!r}", field=key)
        if not isinstance(content, str):
            raise DataError(f"message {i}: content must be a string, got {type_name(content)}", field=key)
        messages.append({"role": role, "content": content})
    return messages


def is_empty_text(text: Text) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return not text or any(not message["content"].strip() for message in text)


def _check_responses(chosen: Text, rejected: Text, chosen_field: str, rejected_field: str) -> None:
    """Two responses that can be compared. Empty answers are legitimate (and often the preferred one in public data): a
    reward model scores them like any other. Identical ones say nothing about preference: that record is broken."""
    if chosen == rejected:
        what = "chosen" if chosen_field == "chosen" else f"chosen ({chosen_field})"
        raise DataError(f"identical to {what}", field=rejected_field)


def _check_assistant_start(response: list[Message], key: str) -> None:
    if not response:
        raise DataError("no response: expected the assistant turn(s), got an empty list", field=key)
    if response[0]["role"] != "assistant":
        raise DataError(f"response must start with an assistant message, got role '{response[0]['role']}'", field=key)


def split_dialogues(
    conv_a: list[Message], conv_b: list[Message], key_a: str, key_b: str
) -> tuple[list[Message], list[Message], list[Message]]:
    """Two compared dialogues -> (shared prompt, rest of a, rest of b), the way TRL extracts an implicit prompt.

    The prompt is the messages both share at the start, backed off so that each response starts with an assistant turn.
    Normally each response is the final assistant message; when the dialogues diverge earlier (each model answered every
    turn: MT-Bench turn 2, Chatbot Arena data in Unified-Feedback; HH-RLHF pairs sampled from different branches), each
    response is the whole differing tail, so prompt + response is each full dialogue as the judges saw it. Only dialogues
    that share no opening user turn cannot be compared.
    """
    for conv, key in ((conv_a, key_a), (conv_b, key_b)):
        if not conv or conv[-1]["role"] != "assistant":
            raise DataError("conversation must end with an assistant message", field=key)
    if conv_a == conv_b:
        return conv_a[:-1], conv_a[-1:], conv_b[-1:]  # the caller reports them as identical
    shared, _, _ = split_shared_messages(conv_a, conv_b)
    split = len(shared)
    while split > 0 and not (
        split < len(conv_a) and split < len(conv_b) and conv_a[split]["role"] == conv_b[split]["role"] == "assistant"
    ):
        split -= 1
    if split == 0:
        raise DataError(f"does not start with the same message as {key_a}: no shared prompt", field=key_b)
    return conv_a[:split], conv_a[split:], conv_b[split:]


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


# ----------------------------------------------------------------------------------------------------------------------
# trl


def split_shared_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two strings into (shared prompt, chosen response, rejected response) at a word boundary.

    The split is the longest common prefix, backed off to whitespace so no word is cut (`"... is 42."` vs
    `"... is 420."` splits before `" 42."`, not inside the number), and to the start of that whitespace run, so the
    prompt ends with its last word and each response begins with the whitespace (as BPE tokenizers expect: `" blue"` is
    one token). The prompt is "" when no whole word is shared.
    """
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    split = shared
    # back off until both remainders are non-empty and start with whitespace
    while split > 0 and not (
        split < len(chosen) and split < len(rejected) and chosen[split].isspace() and rejected[split].isspace()
    ):
        split -= 1
    while split > 0 and chosen[split - 1].isspace():
        split -= 1
    return chosen[:split], chosen[split:], rejected[split:]


def split_shared_messages(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
    """Split two conversations into (shared leading messages, chosen rest, rejected rest)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def from_trl(record: dict[str, Any]) -> PreferenceExample | None:
    """TRL preference format: explicit (`prompt`, `chosen`, `rejected`) or implicit prompt (`chosen`, `rejected` only).

    Standard: strings, the model sees prompt + response. Conversational: lists of {"role", "content"} messages; the
    responses hold the assistant turn(s). With an implicit prompt, conversational data take the shared leading messages
    as the prompt, and strings split at the longest common prefix backed off to a word boundary (`split_shared_prefix`).
    Optional: `margin` (number), `source`, `subset` (strings).
    """
    raw_chosen, raw_rejected = _require(record, "chosen"), _require(record, "rejected")
    conversational = isinstance(raw_chosen, list)
    if conversational:
        chosen, rejected = parse_messages(raw_chosen, "chosen"), parse_messages(raw_rejected, "rejected")
    else:
        chosen, rejected = _string(record, "chosen"), _string(record, "rejected")

    if _present(record, "prompt"):
        raw_prompt = record["prompt"]
        if conversational:
            if not isinstance(raw_prompt, list):
                raise DataError(f"expected a list of messages like chosen, got {type_name(raw_prompt)}", field="prompt")
            prompt: Text = parse_messages(raw_prompt, "prompt")
        elif not isinstance(raw_prompt, str):
            raise DataError(f"expected a string like chosen, got {type_name(raw_prompt)}", field="prompt")
        else:
            prompt = raw_prompt
    else:
        if chosen == rejected:
            raise DataError("identical to chosen", field="rejected")
        if conversational:
            prompt, chosen, rejected = split_shared_messages(chosen, rejected)
        else:
            prompt, chosen, rejected = split_shared_prefix(chosen, rejected)
            if not prompt:
                raise DataError("no prompt field, and chosen and rejected share no leading words to use as one", field="chosen")

    if conversational:
        _check_assistant_start(chosen, "chosen")
        _check_assistant_start(rejected, "rejected")
    _check_responses(chosen, rejected, "chosen", "rejected")
    metadata = {"id": record["id"]} if _present(record, "id") else {}
    return PreferenceExample(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=_optional_number(record, "margin"),
        source=_optional_string(record, "source"),
        subset=_optional_string(record, "subset"),
        metadata=metadata,
    )


# ----------------------------------------------------------------------------------------------------------------------
# hh (Anthropic HH-RLHF)

_HH_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: str, key: str) -> list[Message]:
    """Parse "\\n\\nHuman: q\\n\\nAssistant: a" into [{"role": "user", "content": "q"}, {"role": "assistant", ...}].

    Each turn's content loses the one space after the colon and nothing else.
    """
    pieces = _HH_TURN.split(text)  # [before, role, content, role, content, ...]
    if len(pieces) == 1:
        raise DataError("not an HH transcript: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns", field=key)
    if pieces[0].strip():
        raise DataError("text before the first 'Human:' turn", field=key)
    messages = []
    for role, content in zip(pieces[1::2], pieces[2::2], strict=True):
        messages.append({"role": _HH_ROLES[role], "content": content[1:] if content.startswith(" ") else content})
    return messages


def from_hh(record: dict[str, Any]) -> PreferenceExample | None:
    """Anthropic HH-RLHF: two transcripts, normally sharing the dialogue before the final Assistant turn.

    The shared dialogue is the prompt and each final Assistant turn a one-message response (an empty answer included).
    Transcripts that diverge earlier (a few per file in the real data) are split as in `split_dialogues`: each response
    is the transcript's differing tail, starting at its first differing Assistant turn.
    """
    chosen_text, rejected_text = _string(record, "chosen"), _string(record, "rejected")
    if chosen_text == rejected_text:
        raise DataError("identical to chosen", field="rejected")
    chosen_dialogue = parse_hh_transcript(chosen_text, "chosen")
    rejected_dialogue = parse_hh_transcript(rejected_text, "rejected")
    for dialogue, key in ((chosen_dialogue, "chosen"), (rejected_dialogue, "rejected")):
        if dialogue[-1]["role"] != "assistant":
            raise DataError("transcript must end with an Assistant turn", field=key)
        if dialogue[0]["role"] != "user":
            raise DataError("transcript must start with a Human turn", field=key)
    prompt, chosen, rejected = split_dialogues(chosen_dialogue, rejected_dialogue, "chosen", "rejected")
    _check_responses(chosen, rejected, "chosen", "rejected")
    return PreferenceExample(prompt=prompt, chosen=chosen, rejected=rejected)


# ----------------------------------------------------------------------------------------------------------------------
# unified-feedback (llm-blender/Unified-Feedback)


def from_unified_feedback(record: dict[str, Any]) -> PreferenceExample | None:
    """Two rated conversations; the higher rating is chosen, margin = rating difference; ties are excluded.

    Prompt and responses as in `split_dialogues`: usually the shared dialogue and the two final assistant messages.
    """
    conv_a, conv_b = (
        parse_messages(_require(record, "conv_A"), "conv_A"),
        parse_messages(_require(record, "conv_B"), "conv_B"),
    )
    rating_a = _number(_require(record, "conv_A_rating"), "conv_A_rating")
    rating_b = _number(_require(record, "conv_B_rating"), "conv_B_rating")
    source = _optional_string(record, "source")
    if rating_a == rating_b:
        return None
    prompt, response_a, response_b = split_dialogues(conv_a, conv_b, "conv_A", "conv_B")
    if rating_a > rating_b:
        chosen, rejected, chosen_field, rejected_field = response_a, response_b, "conv_A", "conv_B"
    else:
        chosen, rejected, chosen_field, rejected_field = response_b, response_a, "conv_B", "conv_A"
    _check_responses(chosen, rejected, chosen_field, rejected_field)
    return PreferenceExample(prompt, chosen, rejected, margin=abs(rating_a - rating_b), source=source)


# ----------------------------------------------------------------------------------------------------------------------
# hhh (HuggingFaceH4/hhh_alignment)


def from_hhh(record: dict[str, Any]) -> PreferenceExample | None:
    """A question and labelled choices: chosen = choices[argmax labels], rejected = choices[argmin labels].

    Ties in the labels take the first maximum / minimum. All labels equal -> excluded (no preference).
    """
    question = _string(record, "input")
    targets = _require(record, "targets")
    if not isinstance(targets, dict):
        raise DataError(f"expected an object with choices and labels, got {type_name(targets)}", field="targets")
    choices, labels = targets.get("choices"), targets.get("labels")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise DataError("targets.choices must be a list of strings", field="targets")
    if not isinstance(labels, list):
        raise DataError("targets.labels must be a list of numbers", field="targets")
    labels = [_number(label, "targets") for label in labels]
    if len(choices) != len(labels) or len(choices) < 2:
        raise DataError(
            f"need >= 2 choices with one label each, got {len(choices)} choices, {len(labels)} labels", field="targets"
        )
    subset = _optional_string(record, "subset")
    best, worst = labels.index(max(labels)), labels.index(min(labels))
    if labels[best] == labels[worst]:
        return None
    chosen, rejected = choices[best], choices[worst]
    if chosen == rejected:
        raise DataError(f"rejected choice {worst} identical to chosen (choice {best})", field="targets")
    return PreferenceExample(_user(question), _assistant(chosen), _assistant(rejected), subset=subset)


# ----------------------------------------------------------------------------------------------------------------------
# mt-bench-human (lmsys/mt_bench_human_judgments)


def _first_turns(conversation: list[Message], turns: int, key: str) -> list[Message]:
    """The conversation up to and including its `turns`-th assistant message."""
    seen = 0
    for i, message in enumerate(conversation):
        seen += message["role"] == "assistant"
        if seen == turns:
            return conversation[: i + 1]
    raise DataError(f"turn {turns} judged but the conversation has only {seen} assistant message(s)", field=key)


def from_mt_bench_human(record: dict[str, Any]) -> PreferenceExample | None:
    """MT-Bench pairwise judgments: chosen = the winner's answer; ties are excluded.

    Each conversation holds both MT-Bench turns; `turn` says which was judged, so the conversations are cut after that
    turn's assistant message. Turn 1: prompt = the question, responses = the two first answers. Turn 2: each model
    answered both turns, so the prompt is the first question and each response the model's rest of the conversation
    (`split_dialogues`). Ties ("tie", "tie (bothbad)") are excluded, never counted for either model (the GRM evaluation
    code counted them as model_b wins).
    """
    winner = _string(record, "winner")
    if winner not in MT_BENCH_WINNERS + MT_BENCH_TIES:
        raise DataError(f"expected one of {', '.join(MT_BENCH_WINNERS + MT_BENCH_TIES)}, got {winner!r}", field="winner")
    conv_a = parse_messages(_require(record, "conversation_a"), "conversation_a")
    conv_b = parse_messages(_require(record, "conversation_b"), "conversation_b")
    turn = record.get("turn")
    if turn is not None:
        if isinstance(turn, str) and turn.isdigit():  # csv
            turn = int(turn)
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
            raise DataError(f"expected a positive integer, got {turn!r}", field="turn")
    if winner in MT_BENCH_TIES:
        return None
    if turn is not None:
        conv_a, conv_b = _first_turns(conv_a, turn, "conversation_a"), _first_turns(conv_b, turn, "conversation_b")
    prompt, response_a, response_b = split_dialogues(conv_a, conv_b, "conversation_a", "conversation_b")
    sides = {"model_a": (response_a, "conversation_a", "model_a"), "model_b": (response_b, "conversation_b", "model_b")}
    loser = "model_b" if winner == "model_a" else "model_a"
    (chosen, chosen_field, chosen_model), (rejected, rejected_field, rejected_model) = sides[winner], sides[loser]
    _check_responses(chosen, rejected, chosen_field, rejected_field)
    metadata = {key: record[key] for key in ("question_id", "judge", "turn") if _present(record, key)}
    for key, model in (("chosen_model", chosen_model), ("rejected_model", rejected_model)):
        if _present(record, model):
            metadata[key] = record[model]
    return PreferenceExample(prompt, chosen, rejected, metadata=metadata)


# ----------------------------------------------------------------------------------------------------------------------
# rewardbench (allenai/reward-bench)


def from_rewardbench(record: dict[str, Any]) -> PreferenceExample | None:
    """RewardBench: prompt, chosen, rejected strings and the subset they belong to (for section scores)."""
    prompt, chosen, rejected = _string(record, "prompt"), _string(record, "chosen"), _string(record, "rejected")
    subset = _string(record, "subset")
    _check_responses(chosen, rejected, "chosen", "rejected")
    metadata = {"id": record["id"]} if _present(record, "id") else {}
    return PreferenceExample(_user(prompt), _assistant(chosen), _assistant(rejected), subset=subset, metadata=metadata)


# ----------------------------------------------------------------------------------------------------------------------
# detection

ADAPTERS: dict[str, Adapter] = {
    "trl": from_trl,
    "hh": from_hh,
    "unified-feedback": from_unified_feedback,
    "hhh": from_hhh,
    "mt-bench-human": from_mt_bench_human,
    "rewardbench": from_rewardbench,
}


def get_adapter(format: str) -> Adapter:
    if format not in ADAPTERS:
        raise DataError(f"unknown data format '{format}' (expected one of: {', '.join(FORMATS)})", field="format")
    return ADAPTERS[format]


def _looks_like_hh(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("Human:") and "\n\nAssistant:" in text


def detect_format(record: dict[str, Any]) -> str:
    """Guess a record's format from its field names (first match wins).

    conv_A + conv_B -> unified-feedback; conversation_a + conversation_b + winner -> mt-bench-human; input + targets ->
    hhh; prompt (a string) + chosen + rejected + subset -> rewardbench; chosen + rejected and no prompt, chosen an HH
    transcript ("Human: ..." with an "\\n\\nAssistant:" turn) -> hh; chosen + rejected -> trl. Pass the format
    explicitly when a file is ambiguous (e.g. TRL strings that carry a `subset` field).
    """

    def has(*keys: str) -> bool:
        return all(key in record for key in keys)

    if has("conv_A", "conv_B"):
        return "unified-feedback"
    if has("conversation_a", "conversation_b", "winner"):
        return "mt-bench-human"
    if has("input", "targets"):
        return "hhh"
    if has("prompt", "chosen", "rejected", "subset") and isinstance(record["prompt"], str):
        return "rewardbench"
    if has("chosen", "rejected") and record.get("prompt") is None and _looks_like_hh(record["chosen"]):
        return "hh"
    if has("chosen", "rejected"):
        return "trl"
    if has("chosen") != has("rejected"):  # a pair with one side missing: name that field, not the format
        missing = "rejected" if has("chosen") else "chosen"
        raise DataError("missing field (a preference pair needs both chosen and rejected)", field=missing)
    seen = ", ".join(sorted(record)) or "none"
    raise DataError(
        f"cannot detect the preference format from the fields ({seen}); expected one of {', '.join(FORMATS)} "
        "(e.g. prompt/chosen/rejected, conv_A/conv_B, input/targets, conversation_a/conversation_b/winner)"
    )
