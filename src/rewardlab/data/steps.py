r"""Step-labelled data (process supervision): adapters to `StepExample`, detection, loading, and `data inspect`'s
description.

| format       | fields                                                                       | labels per step          |
|--------------|------------------------------------------------------------------------------|--------------------------|
| trl-stepwise | prompt (string or messages), completions (list of step strings), labels      | as given (bools)         |
|              | (one bool per step), [subset, id, ...]                                       |                          |
| processbench | problem, steps (list of strings), label (index of the first wrong step, -1   | correct before the first |
|              | if none), [id, generator, final_answer_correct, subset]                      | error, wrong at it, None |
|              |                                                                              | (unknown) after it       |

TRL's stepwise-supervision format is what TRL's PRMTrainer reads; labels may also be 0/1 integers. ProcessBench
(Qwen/ProcessBench) ships its subsets (gsm8k, math, olympiadbench, omnimath) as separate splits: an example's subset is
its `subset` field, else the prefix of its id (`gsm8k-12` -> gsm8k), else the data set's name (`gsm8k=file.jsonl`). Its
problem is kept as a plain string prompt, as ProcessBench's evaluation of TRL-trained PRMs reads it. The steps after
ProcessBench's first error were not judged: their label is None, which a PRM's loss masks and no metric scores.

Steps are kept exactly as written: an empty step, odd whitespace and any Unicode are accepted (real data has them; the
empty ones are counted). csv cells are strings, so list fields in csv are JSON text (`["step 1", "step 2"]`).

Encoding for a PRM (the text it reads, where each step's score is read): `rewardlab.data.step_encoding`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardlab.data.errors import DataError
from rewardlab.data.formats import _present, _require, _string, parse_messages
from rewardlab.data.io import Record, RecordTally, parse_named_spec, type_name
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR, StepExample, StepLabel, Text
from rewardlab.errors import UserError

STEP_FORMATS = ("trl-stepwise", "processbench")
PROCESSBENCH_SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")

_PROCESSBENCH_ID = re.compile(r"(.+)-\d+")
_INTEGER = re.compile(r"-?\d+")


_SEPARATOR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def separator_from_flag(text: str) -> str:
    """`--step-separator` as typed on a command line: the escapes \\n, \\t, \\r and \\\\ read as the characters
    (a shell passes "\\n" as a backslash and an n); anything else as written."""
    return re.sub(r"\\(.)", lambda m: _SEPARATOR_ESCAPES.get(m.group(1), m.group(0)), text)


# ----------------------------------------------------------------------------------------------------------------------
# labels


def labels_from_first_error(n_steps: int, first_error: int) -> list[StepLabel]:
    """ProcessBench's label -> one label per step: True before the first error, False at it, None (unknown) after it;
    all True when `first_error` is -1."""
    if not -1 <= first_error < n_steps:
        raise ValueError(f"first_error {first_error} outside -1..{n_steps - 1}")
    if first_error == -1:
        return [True] * n_steps
    return [True] * first_error + [False] + [None] * (n_steps - first_error - 1)


def first_error_of(labels: Sequence[StepLabel]) -> int:
    """The index of the first step labelled wrong (False), -1 when none is."""
    return next((i for i, label in enumerate(labels) if label is False), -1)


# ----------------------------------------------------------------------------------------------------------------------
# adapters


def _list_field(record: dict[str, Any], key: str, what: str) -> list[Any]:
    """A list field; a string holding a JSON list is read as one (csv cells are strings)."""
    value = _require(record, key)
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"expected {what}, got a string that is not a JSON list ({exc.msg})", field=key) from None
    if not isinstance(value, (list, tuple)):  # parquet / hub sequences arrive as lists
        raise DataError(f"expected {what}, got {type_name(value)}", field=key)
    return list(value)


def _steps(record: dict[str, Any], key: str) -> list[str]:
    steps = _list_field(record, key, "a list of step strings")
    if not steps:
        raise DataError("no steps: expected at least one step string, got an empty list", field=key)
    for i, step in enumerate(steps):
        if not isinstance(step, str):
            raise DataError(f"step {i}: expected a string, got {type_name(step)}", field=key)
    return steps


def _prompt(record: dict[str, Any], key: str) -> Text:
    value = _require(record, key)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return parse_messages(value, key)
    raise DataError(f"expected a string or a list of messages, got {type_name(value)}", field=key)


def _step_label(value: Any, index: int, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # TRL's trainer reads labels as int(label)
        return bool(value)
    raise DataError(f"label {index}: expected true or false, got {type_name(value)} {value!r}", field=key)


def _integer(value: Any, key: str) -> int:
    """An integer; also an integral float (parquet, pandas) or an integer string (csv)."""
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"expected an integer, got {type_name(value)} {value!r}", field=key)
    return value


def _boolean(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):  # csv
        return value.strip().lower() == "true"
    raise DataError(f"expected true or false, got {type_name(value)} {value!r}", field=key)


def _subset(record: dict[str, Any]) -> str | None:
    if _present(record, "subset"):
        return _string(record, "subset")
    return None


def _metadata(record: dict[str, Any], read: tuple[str, ...]) -> dict[str, Any]:
    """The record's other fields (id, generator, ...), so results can be joined back to the source."""
    return {key: value for key, value in record.items() if key not in read and value is not None}


def from_trl_stepwise(record: dict[str, Any]) -> StepExample:
    """TRL's stepwise supervision: `prompt`, `completions` (the steps), `labels` (one bool per step)."""
    prompt = _prompt(record, "prompt")
    steps = _steps(record, "completions")
    raw_labels = _list_field(record, "labels", "a list of booleans, one per step")
    labels: list[StepLabel] = [_step_label(value, i, "labels") for i, value in enumerate(raw_labels)]
    if len(labels) != len(steps):
        raise DataError(f"{len(labels)} label(s) for {len(steps)} step(s) in completions: need one per step", field="labels")
    subset = _subset(record)
    metadata = _metadata(record, ("prompt", "completions", "labels", "subset"))
    return StepExample(prompt, steps, labels, first_error_of(labels), subset=subset, metadata=metadata)


def processbench_subset(example_id: Any) -> str | None:
    """ProcessBench ids are `<subset>-<number>` (`gsm8k-0`, `omnimath-12`): the subset, or None for other ids."""
    match = _PROCESSBENCH_ID.fullmatch(example_id) if isinstance(example_id, str) else None
    return match.group(1) if match else None


def from_processbench(record: dict[str, Any]) -> StepExample:
    """ProcessBench: `problem`, `steps`, `label` = index of the first wrong step (-1: none). Per-step labels: correct
    before it, wrong at it, unknown (None) after it."""
    problem = _string(record, "problem")
    steps = _steps(record, "steps")
    first_error = _integer(_require(record, "label"), "label")
    if not -1 <= first_error < len(steps):
        raise DataError(
            f"first error at step {first_error}, but the {len(steps)} step(s) are numbered 0..{len(steps) - 1} "
            "(-1 means no error)",
            field="label",
        )
    if _present(record, "final_answer_correct"):
        _boolean(record["final_answer_correct"], "final_answer_correct")
    if _present(record, "generator"):
        _string(record, "generator")
    metadata = _metadata(record, ("problem", "steps", "label", "subset"))
    if "final_answer_correct" in metadata:
        metadata["final_answer_correct"] = _boolean(metadata["final_answer_correct"], "final_answer_correct")
    subset = _subset(record) or processbench_subset(record.get("id"))
    return StepExample(problem, steps, labels_from_first_error(len(steps), first_error), first_error, subset, metadata)


STEP_ADAPTERS = {"trl-stepwise": from_trl_stepwise, "processbench": from_processbench}


def detect_step_format(record: dict[str, Any]) -> str | None:
    """The record's step format, or None for anything else: prompt + completions + labels -> trl-stepwise; problem +
    steps + label -> processbench."""
    if all(key in record for key in ("prompt", "completions", "labels")):
        return "trl-stepwise"
    if all(key in record for key in ("problem", "steps", "label")):
        return "processbench"
    return None


def peek_step_format(records: Iterator[Record], format: str | None) -> tuple[Iterator[Record], str | None]:
    """(the same records, the step format to read them with or None): `format` when it is a step format, else detected
    on the first record (put back in front, so the source is read once)."""
    if format is not None:
        return records, format if format in STEP_FORMATS else None
    first = next(records, None)
    if first is None:
        return iter(()), None
    return itertools.chain([first], records), detect_step_format(first.data)


# ----------------------------------------------------------------------------------------------------------------------
# loading


@dataclass
class StepDataset:
    name: str
    examples: list[StepExample]
    format: str
    # read, loaded, excluded (always 0), invalid; steps, empty_steps, with_error, without_error
    stats: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> StepExample:
        return self.examples[index]

    def __iter__(self) -> Iterator[StepExample]:
        return iter(self.examples)


def steps_from_records(
    records: Iterable[Record], tally: RecordTally, *, format: str, source: str, name: str, limit: int | None = None
) -> StepDataset:
    """A step-labelled data set from a source's records (`rewardlab.data.loading.load_dataset` opens and counts)."""
    if format not in STEP_ADAPTERS:
        raise DataError(f"unknown step format '{format}' (expected one of: {', '.join(STEP_FORMATS)})", field="format")
    examples = list(tally.parsed(records, STEP_ADAPTERS[format], limit))
    if not examples:
        raise tally.nothing_loaded(source, f"{format} examples")
    if format == "processbench":  # a subset is a file or split of its own: the data set's name when ids do not say
        for example in examples:
            example.subset = example.subset or name
    with_error = sum(example.has_error for example in examples)
    stats = tally.stats | {
        "steps": sum(len(example.steps) for example in examples),
        "empty_steps": sum(not step.strip() for example in examples for step in example.steps),
        "with_error": with_error,
        "without_error": len(examples) - with_error,
    }
    return StepDataset(name, examples, format, stats, tally.errors)


def load_steps(
    spec: str, *, format: str | None = None, name: str | None = None, skip_invalid: bool = False, limit: int | None = None
) -> StepDataset:
    """Load step-labelled data (trl-stepwise | processbench, detected from the first record when `format` is None) from
    a file or hub id (`name=path` accepted), failing on the first bad record with file:line: field, unless
    `skip_invalid`."""
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive integer, got {limit}")
    spec_name, source = parse_named_spec(spec)
    tally = RecordTally(skip_invalid)
    records, detected = peek_step_format(tally.records(source), format)
    if detected is None:
        if format is not None:
            raise DataError(f"unknown step format '{format}' (expected one of: {', '.join(STEP_FORMATS)})", field="format")
        first = next(records, None)
        if first is None:
            raise tally.nothing_loaded(source, "step-labelled examples")
        raise not_step_data(first)
    return steps_from_records(records, tally, format=detected, source=source, name=name or spec_name, limit=limit)


def not_step_data(record: Record) -> DataError:
    seen = ", ".join(sorted(record.data)) or "none"
    return DataError(
        f"cannot detect a step format from the fields ({seen}); expected trl-stepwise (prompt, completions, labels) "
        "or processbench (problem, steps, label)",
        file=record.file,
        line=record.line,
    )


# ----------------------------------------------------------------------------------------------------------------------
# `data inspect`


def step_example_to_dict(example: StepExample) -> dict[str, Any]:
    """An example as rewardlab reads it: prompt, steps, per-step labels (null = unknown), first_error, subset, metadata."""
    row: dict[str, Any] = {"prompt": example.prompt, "steps": example.steps, "labels": example.labels}
    row["first_error"] = example.first_error
    if example.subset is not None:
        row["subset"] = example.subset
    return row | example.metadata


HOW_READ = {
    "trl-stepwise": "prompt as the prompt (messages: rendered by the chat template, the steps as the assistant turn), "
    "completions as the steps, labels as each step's label (true = correct)",
    "processbench": "problem as the prompt (a string), steps as the steps, label as the first wrong step: the steps "
    "before it correct, it wrong, the steps after it unknown (null: not scored, masked from a PRM's loss); -1 = all "
    "correct",
}


def describe_steps(
    title: str, dataset: StepDataset, tokenizer, max_length: int | None, show: int = 1, separator: str = DEFAULT_STEP_SEPARATOR
) -> list[str]:
    """`data inspect`'s lines for step-labelled data: how it is read, counts, labels, token lengths and truncation."""
    examples = dataset.examples
    per_example = sorted(len(example.steps) for example in examples)
    labels = [label for example in examples for label in example.labels]
    lines = [
        f"{title}: format {dataset.format}; " + ", ".join(f"{k} {v}" for k, v in dataset.stats.items()),
        f"read as step-labelled data: {HOW_READ[dataset.format]}",
        f"steps per example: min {per_example[0]}, median {per_example[len(per_example) // 2]}, max {per_example[-1]}; "
        f"step labels: {labels.count(True)} correct, {labels.count(False)} wrong, {labels.count(None)} unknown",
    ]
    subsets: dict[str, list[int]] = {}
    for example in examples:
        counts = subsets.setdefault(example.subset or "none", [0, 0])
        counts[0 if example.has_error else 1] += 1
    if dataset.format == "processbench" or any(example.subset for example in examples):
        lines.append("subsets (with an error / without): " + ", ".join(f"{s} {a}/{b}" for s, (a, b) in sorted(subsets.items())))
    from rewardlab.data.step_encoding import encode_step_examples  # torch, via templates: only when describing

    encoded, counts = encode_step_examples(tokenizer, examples, max_length, "keep_steps", separator)
    lengths = sorted(item.length for item in encoded)
    scored = f"each step followed by {separator!r}, its score read at the last token of step + separator"
    if lengths:
        lines.append(
            f"tokens per example ({scored}): min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}; "
            f"truncated {counts['truncated']} (later steps dropped), dropped {counts['dropped']} at max_length {max_length}"
        )
    else:
        lines.append(f"tokens per example ({scored}): every example dropped at max_length {max_length}")
    lines += [f"skipped: {err}" for err in dataset.skipped]
    lines += [json.dumps(step_example_to_dict(example), ensure_ascii=False)[:2000] for example in examples[:show]]
    return lines
