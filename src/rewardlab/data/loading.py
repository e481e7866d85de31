"""Loading preference data, completions and prompt sets from a data spec (file or hub id), and writing JSONL.

Every loader fails on the first bad record with a one-line `DataError` naming file, line and field, unless
`skip_invalid=True`, which skips bad records and counts them. Loading nothing usable is always an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rewardlab.data.errors import DataError
from rewardlab.data.formats import FORMATS, Adapter, detect_format, get_adapter, is_empty_text, parse_messages
from rewardlab.data.io import RecordTally, parse_named_spec, type_name
from rewardlab.data.listwise import (
    EVAL_FORMATS,
    ListwiseDataset,
    listwise_from_records,
    pairs_from_records,
    peek_listwise_format,
)
from rewardlab.data.steps import StepDataset, peek_step_format, steps_from_records
from rewardlab.data.types import PreferenceExample, PromptCompletion, Text
from rewardlab.errors import UserError


@dataclass
class PreferenceDataset:
    name: str
    examples: list[PreferenceExample]
    format: str
    # read = loaded + excluded + invalid; excluded = legitimately dropped (ties); invalid = skipped bad records
    stats: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # the first few skipped-record errors (io.MAX_KEPT_ERRORS)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PreferenceExample:
        return self.examples[index]

    def __iter__(self) -> Iterator[PreferenceExample]:
        return iter(self.examples)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive integer, got {limit}")


# ----------------------------------------------------------------------------------------------------------------------
# preferences


def load_preferences(
    spec: str,
    *,
    format: str | None = None,
    name: str | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    pairs: str = "all",
    seed: int = 0,
) -> PreferenceDataset:
    """Load preference pairs from a file or hub id (`name=path` also accepted).

    `format` is one of `FORMATS`, or None to detect it from the first record. `limit` stops after that many loaded
    examples. Ties and other legitimately excluded records count as `excluded`, not as errors.
    Rated listwise sources (ultrafeedback, listwise) become pairs by `pairs` (all | best-worst | best-random, drawn with
    `seed`): see `rewardlab.data.listwise`. Listwise evaluation sets (rewardbench2, rm-bench) are refused: `load_dataset`.
    """
    dataset = load_dataset(spec, format=format, name=name, skip_invalid=skip_invalid, limit=limit, pairs=pairs, seed=seed)
    assert isinstance(dataset, PreferenceDataset)
    return dataset


def load_dataset(
    spec: str,
    *,
    format: str | None = None,
    name: str | None = None,
    skip_invalid: bool = False,
    limit: int | None = None,
    pairs: str = "all",
    seed: int = 0,
    listwise_eval: bool = False,
    steps: bool = False,
) -> PreferenceDataset | ListwiseDataset | StepDataset:
    """`load_preferences`, and with `listwise_eval` also listwise evaluation sets (a `ListwiseDataset`), with `steps`
    also step-labelled data (a `StepDataset`: `rewardlab.data.steps`), in one pass over the source: the format is
    detected on the first record read. Step-labelled data without `steps` is refused with its format named."""
    _check_limit(limit)
    spec_name, source = parse_named_spec(spec)
    name = name or spec_name
    tally = RecordTally(skip_invalid)
    records, step_format = peek_step_format(tally.records(source), format)
    if step_format is not None:
        if not steps:
            raise DataError(
                f"step-labelled data (format {step_format}): this reads preference pairs, not steps with labels",
                file=source,
            )
        return steps_from_records(records, tally, format=step_format, source=source, name=name, limit=limit)
    records, listwise = peek_listwise_format(records, format)
    if listwise in EVAL_FORMATS and listwise_eval:
        return listwise_from_records(records, tally, format=listwise, source=source, name=name, limit=limit)
    if listwise is not None:
        options = {"format": listwise, "source": source, "name": name, "pairs": pairs, "seed": seed, "limit": limit}
        examples, stats = pairs_from_records(records, tally, **options)
        return PreferenceDataset(name, examples, listwise, stats, tally.errors)
    adapter = get_adapter(format) if format is not None else None

    def parse(data: dict[str, Any]) -> PreferenceExample | None:
        nonlocal format, adapter
        if adapter is None:  # detected on the first record
            format = detect_format(data)
            adapter = get_adapter(format)
        return adapter(data)

    examples = list(tally.parsed(records, parse, limit))
    if not examples:
        raise tally.nothing_loaded(source, "preference pairs")
    assert format is not None
    # empty answers are scored like any other, but worth knowing about (HH-RLHF has some, often the chosen one)
    empty = sum(is_empty_text(ex.chosen) + is_empty_text(ex.rejected) for ex in examples)
    return PreferenceDataset(name, examples, format, tally.stats | {"empty_responses": empty}, tally.errors)


def load_named_preferences(specs: list[str], **kwargs: Any) -> dict[str, PreferenceDataset]:
    """Load several `name=path` specs (`--eval-data id=a.jsonl --eval-data ood=b.jsonl`), keyed by name, in order."""
    return load_named(specs, load_preferences, **kwargs)


def load_named(specs: list[str], load: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """`load(source, name=name, **kwargs)` for each `name=path` spec, keyed by name, in order; a name used twice is refused."""
    named: dict[str, str] = {}
    for spec in specs:
        name, source = parse_named_spec(spec)
        if name in named:
            raise DataError(f"duplicate data set name '{name}' (also used by {named[name]}); name them: name=path", file=source)
        named[name] = source
    return {name: load(source, name=name, **kwargs) for name, source in named.items()}


# ----------------------------------------------------------------------------------------------------------------------
# completions and prompts


def _text(data: dict[str, Any], key: str) -> Text:
    value = data.get(key)
    if value is None:
        raise DataError("missing field", field=key)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return parse_messages(value, key)
    raise DataError(f"expected a string or a list of messages, got {type_name(value)}", field=key)


def _completion(data: dict[str, Any]) -> PromptCompletion:
    key = "response" if data.get("completion") is None and data.get("response") is not None else "completion"
    prompt, completion = _text(data, "prompt"), _text(data, key)
    if isinstance(prompt, str) != isinstance(completion, str):
        raise DataError("prompt and completion must both be strings or both lists of messages", field=key)
    if isinstance(completion, list) and not completion:
        raise DataError("no response: expected the assistant turn(s), got an empty list", field=key)
    if isinstance(completion, list) and completion[0]["role"] != "assistant":
        raise DataError(f"must start with an assistant message, got role '{completion[0]['role']}'", field=key)
    metadata = {k: v for k, v in data.items() if k not in ("prompt", "completion", "response")}
    return PromptCompletion(prompt, completion, metadata)


def load_completions(spec: str, *, skip_invalid: bool = False, limit: int | None = None) -> list[PromptCompletion]:
    """Load prompt/completion rows (TRL prompt-completion format; `response` is accepted for `completion`).

    Both are strings, or both lists of messages (the completion starting with the assistant turn). Other fields go to
    `metadata`, so scores can be joined back to ids.
    """
    _check_limit(limit)
    _, source = parse_named_spec(spec)
    tally = RecordTally(skip_invalid)
    rows = list(tally.parsed(tally.records(source), _completion, limit))
    if not rows:
        raise tally.nothing_loaded(source, "prompt/completion rows")
    return rows


def load_prompts(spec: str, *, limit: int | None = None, skip_invalid: bool = False, unique: bool = True) -> list[Text]:
    """Load prompts: rows with a `prompt` (string or messages), or any preference format (its prompt).

    The mode is chosen from the first record: a detectable preference format is read through its adapter (so e.g.
    RewardBench prompts become a user message, and ties are skipped as in `load_preferences`); anything else needs a
    `prompt` field. `unique` drops repeated prompts, keeping first occurrences (MT-Bench judgments repeat each question
    many times); `limit` counts the prompts returned.
    """
    _check_limit(limit)
    _, source = parse_named_spec(spec)
    tally = RecordTally(skip_invalid)
    seen: set[str] = set()
    adapter: Adapter | None = None
    mode_known = False

    def parse(data: dict[str, Any]) -> Text | None:
        nonlocal adapter, mode_known
        if not mode_known:  # prompt(-completion) rows or a preference format, from the first record
            adapter, mode_known = _prompt_adapter(data), True
        if adapter is None:
            prompt = _text(data, "prompt")
        else:
            example = adapter(data)
            if example is None:
                return None  # excluded by its format (a tie)
            prompt = example.prompt
        if not prompt or (isinstance(prompt, str) and not prompt.strip()):
            raise DataError("empty prompt", field="prompt")
        key = json.dumps(prompt, sort_keys=True)
        if unique and key in seen:
            return None  # a repeated prompt counts as excluded
        seen.add(key)
        return prompt

    prompts = list(tally.parsed(tally.records(source), parse, limit))
    if not prompts:
        raise tally.nothing_loaded(source, "prompts")
    return prompts


def _prompt_adapter(data: dict[str, Any]) -> Adapter | None:
    """None for prompt(-completion) rows (`prompt` is read directly), else the record's preference-format adapter."""
    if "prompt" in data and "chosen" not in data and "rejected" not in data:
        return None
    try:
        return get_adapter(detect_format(data))
    except DataError:
        if "prompt" in data:
            return None
        seen = ", ".join(sorted(data)) or "none"
        raise DataError(f"expected a 'prompt' field or a preference format ({', '.join(FORMATS)}); fields seen: {seen}") from None


# ----------------------------------------------------------------------------------------------------------------------
# writing


def preference_to_dict(example: PreferenceExample) -> dict[str, Any]:
    """A preference pair as a TRL-format row: prompt, chosen, rejected, plus margin / source / subset when set."""
    row: dict[str, Any] = {"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected}
    for key in ("margin", "source", "subset"):
        value = getattr(example, key)
        if value is not None:
            row[key] = value
    return row
