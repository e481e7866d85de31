r"""Listwise data: a prompt with several completions, for evaluation (RewardBench 2, RM-Bench) and for training (UltraFeedback
and a generic rated-list form, expanded into preference pairs).

| format        | fields                                                                           | becomes           |
|---------------|----------------------------------------------------------------------------------|-------------------|
| rewardbench2  | id, prompt, chosen (list), rejected (list), subset, [num_correct, num_rejected,  | `ListwiseExample` |
|               | total_completions, models]                                                       |                   |
| rm-bench      | prompt, chosen [concise, detailed, markdown], rejected [same], domain, [id]      | `ListwiseExample` |
| ultrafeedback | instruction, completions [{response, fine-grained_score, ...}], [source]         | preference pairs  |
| listwise      | prompt (string or messages), responses (list), scores (numbers), [source, id]    | preference pairs  |

The two evaluation formats keep their shape: each completion is scored alone (as RewardBench 2 and RM-Bench do) and the
benchmark's own rule turns the scores into figures (`rewardlab.listwise_metrics`). Their prompts are single user questions,
so they become one user message and each completion one assistant message, rendered by the tokenizer's chat template.

The training formats become `PreferenceExample`s by `preference_pairs` (`--pairs`): `all` (every pair of completions with
different scores), `best-worst` (the best against the worst), or `best-random` (the best against one completion drawn at
random among those scored strictly lower, as the binarised UltraFeedback sets do). Ties are never a pair; margin = the
score difference. UltraFeedback's score is `fine-grained_score` (the mean of the four aspect ratings), not `overall_score`
(the critique model's single rating, found to disagree with the critiques on many rows: Argilla's binarised-preferences
card). Empty completions are kept in the evaluation formats (a benchmark scores what it holds) and rejected in the training
formats (as every pairwise adapter does).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardlab.choices import PAIR_MODES
from rewardlab.data.errors import DataError
from rewardlab.data.formats import (
    _number,
    _optional_string,
    _present,
    _require,
    _string,
    is_empty_text,
    parse_messages,
)
from rewardlab.data.io import Record, RecordTally, located, type_name
from rewardlab.data.types import Message, PreferenceExample, Text
from rewardlab.errors import UserError

EVAL_FORMATS = ("rewardbench2", "rm-bench")
PAIR_FORMATS = ("ultrafeedback", "listwise")
LISTWISE_FORMATS = EVAL_FORMATS + PAIR_FORMATS
RM_BENCH_STYLES = ("concise", "detailed", "detailed_markdown")
ULTRAFEEDBACK_SCORE = "fine-grained_score"


@dataclass
class ListwiseExample:
    """A prompt with correct (`chosen`) and incorrect (`rejected`) completions, each to be scored alone.

    RewardBench 2: chosen[0] is the completion its best-of-N rule looks for (the Ties subset uses all of `chosen`).
    RM-Bench: chosen[i] and rejected[i] are the same answer in style i (`RM_BENCH_STYLES`).
    """

    prompt: Text
    chosen: list[Text]
    rejected: list[Text]
    subset: str | None = None  # RewardBench 2
    domain: str | None = None  # RM-Bench
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def completions(self) -> list[Text]:
        return self.chosen + self.rejected


@dataclass
class RatedResponses:
    """A prompt with several responses and one score each (higher is better): training data before pairing."""

    prompt: Text
    responses: list[Text]
    scores: list[float]
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)  # each response's field name, for error messages


@dataclass
class ListwiseDataset:
    name: str
    examples: list[ListwiseExample]
    format: str
    stats: dict[str, int] = field(default_factory=dict)  # read, loaded (prompts), excluded, invalid, completions
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> ListwiseExample:
        return self.examples[index]

    def __iter__(self) -> Iterator[ListwiseExample]:
        return iter(self.examples)


# ----------------------------------------------------------------------------------------------------------------------
# adapters


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def _string_list(record: dict[str, Any], key: str, *, min_length: int = 1) -> list[str]:
    value = _require(record, key)
    if not isinstance(value, list):
        raise DataError(f"expected a list of strings, got {type_name(value)}", field=key)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"item {i}: expected a string, got {type_name(item)}", field=key)
    if len(value) < min_length:
        raise DataError(f"expected at least {min_length} completion(s), got {len(value)}", field=key)
    return value


def _check_count(record: dict[str, Any], key: str, expected: int, what: str) -> None:
    """RewardBench 2's count columns must agree with the lists: its scorer splits the scores by them."""
    if not _present(record, key):
        return
    value = _number(record[key], key)
    if value != expected:
        raise DataError(f"says {value:g} but there are {expected} {what}", field=key)


def parse_ties_id(value: Any) -> tuple[str, int]:
    """A Ties-subset id `ref:N` or `tied:N` -> ("ref" | "tied", N): the two prompts of one question share N."""
    kind, _, number = str(value).partition(":")
    if kind not in ("ref", "tied") or not number.strip().lstrip("-").isdigit():
        raise DataError(f"a Ties id must be 'ref:N' or 'tied:N', got {value!r}", field="id")
    return kind, int(number)


def is_ties_subset(subset: str | None) -> bool:
    return subset is not None and subset.lower() == "ties"  # the name test RewardBench 2's run_v2.py applies


def from_rewardbench2(record: dict[str, Any]) -> ListwiseExample:
    """allenai/reward-bench-2: a prompt, its correct completions (`chosen`) and incorrect ones (`rejected`), a subset."""
    prompt = _string(record, "prompt")
    chosen, rejected = _string_list(record, "chosen"), _string_list(record, "rejected")
    subset = _string(record, "subset")
    _check_count(record, "num_correct", len(chosen), "chosen completions")
    _check_count(record, "num_rejected", len(rejected), "rejected completions")
    _check_count(record, "total_completions", len(chosen) + len(rejected), "completions")
    metadata: dict[str, Any] = {"id": record["id"]} if _present(record, "id") else {}
    if is_ties_subset(subset):
        parse_ties_id(_require(record, "id"))  # the Ties score pairs each tied prompt with its reference by this id
    if _present(record, "models"):
        metadata["models"] = record["models"]
    return ListwiseExample(
        _user(prompt), [_assistant(c) for c in chosen], [_assistant(r) for r in rejected], subset=subset, metadata=metadata
    )


def from_rm_bench(record: dict[str, Any]) -> ListwiseExample:
    """THU-KEG/RM-Bench: one correct and one incorrect answer, each in three styles, and the domain."""
    prompt = _string(record, "prompt")
    chosen, rejected = _string_list(record, "chosen"), _string_list(record, "rejected")
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if len(value) != len(RM_BENCH_STYLES):
            raise DataError(
                f"expected {len(RM_BENCH_STYLES)} completions ({', '.join(RM_BENCH_STYLES)}), got {len(value)}", field=key
            )
    domain = _string(record, "domain")
    metadata = {"id": record["id"]} if _present(record, "id") else {}
    return ListwiseExample(
        _user(prompt), [_assistant(c) for c in chosen], [_assistant(r) for r in rejected], domain=domain, metadata=metadata
    )


def from_ultrafeedback(record: dict[str, Any]) -> RatedResponses:
    """openbmb/UltraFeedback: an instruction and rated completions; the score is each completion's `fine-grained_score`."""
    instruction = _string(record, "instruction")
    completions = _require(record, "completions")
    if not isinstance(completions, list):
        raise DataError(f"expected a list of completions, got {type_name(completions)}", field="completions")
    responses, scores, names = [], [], []
    for i, completion in enumerate(completions):
        where = f"completions[{i}]"
        if not isinstance(completion, dict):
            raise DataError(
                f"expected an object with response and {ULTRAFEEDBACK_SCORE}, got {type_name(completion)}", field=where
            )
        response = completion.get("response")
        if not isinstance(response, str):
            raise DataError(f"expected a string, got {type_name(response)}", field=f"{where}.response")
        if ULTRAFEEDBACK_SCORE not in completion or completion[ULTRAFEEDBACK_SCORE] is None:
            raise DataError("missing field", field=f"{where}.{ULTRAFEEDBACK_SCORE}")
        scores.append(_number(completion[ULTRAFEEDBACK_SCORE], f"{where}.{ULTRAFEEDBACK_SCORE}"))
        responses.append(_assistant(response))
        names.append(f"{where}.response")
    metadata = {"id": record["id"]} if _present(record, "id") else {}
    return RatedResponses(_user(instruction), responses, scores, _optional_string(record, "source"), metadata, names)


def from_listwise(record: dict[str, Any]) -> RatedResponses:
    """The generic form: `prompt` (string or messages), `responses` (strings, or lists of messages), `scores` (numbers)."""
    raw_prompt = _require(record, "prompt")
    if isinstance(raw_prompt, str):
        prompt: Text = raw_prompt
    else:
        prompt = parse_messages(raw_prompt, "prompt")
    raw = _require(record, "responses")
    if not isinstance(raw, list):
        raise DataError(f"expected a list of responses, got {type_name(raw)}", field="responses")
    responses: list[Text] = []
    for i, item in enumerate(raw):
        key = f"responses[{i}]"
        if isinstance(prompt, str):
            if not isinstance(item, str):
                raise DataError(f"expected a string like prompt, got {type_name(item)}", field=key)
            responses.append(item)
        else:
            messages = parse_messages(item, key) if isinstance(item, list) else None
            if messages is None:
                raise DataError(f"expected a list of messages like prompt, got {type_name(item)}", field=key)
            if messages and messages[0]["role"] != "assistant":
                raise DataError(f"must start with an assistant message, got role '{messages[0]['role']}'", field=key)
            responses.append(messages)
    raw_scores = _require(record, "scores")
    if not isinstance(raw_scores, list):
        raise DataError(f"expected a list of numbers, got {type_name(raw_scores)}", field="scores")
    if len(raw_scores) != len(responses):
        raise DataError(f"{len(raw_scores)} scores for {len(responses)} responses", field="scores")
    scores = [_number(s, f"scores[{i}]") for i, s in enumerate(raw_scores)]
    metadata = {"id": record["id"]} if _present(record, "id") else {}
    names = [f"responses[{i}]" for i in range(len(responses))]
    return RatedResponses(prompt, responses, scores, _optional_string(record, "source"), metadata, names)


EVAL_ADAPTERS: dict[str, Callable[[dict[str, Any]], ListwiseExample]] = {
    "rewardbench2": from_rewardbench2,
    "rm-bench": from_rm_bench,
}
PAIR_ADAPTERS: dict[str, Callable[[dict[str, Any]], RatedResponses]] = {
    "ultrafeedback": from_ultrafeedback,
    "listwise": from_listwise,
}


def detect_listwise_format(record: dict[str, Any]) -> str | None:
    """The record's listwise format, or None for anything else (a pairwise format, or unknown).

    instruction + completions -> ultrafeedback; prompt + responses + scores -> listwise; prompt + chosen + rejected where
    chosen is a list of strings (not chat messages) -> rm-bench with a `domain`, rewardbench2 otherwise.
    """
    if "instruction" in record and "completions" in record:
        return "ultrafeedback"
    if all(key in record for key in ("prompt", "responses", "scores")):
        return "listwise"
    chosen = record.get("chosen")
    if "prompt" in record and "rejected" in record and isinstance(chosen, list) and all(isinstance(c, str) for c in chosen):
        return "rm-bench" if "domain" in record else "rewardbench2"
    return None


def peek_listwise_format(records: Iterator[Record], format: str | None) -> tuple[Iterator[Record], str | None]:
    """(the same records, the listwise format to read them with or None for pairs): `format` when given, else detected
    on the first record, which is put back in front so the source is read once (a hub data set is loaded once)."""
    if format is not None:
        return records, format if format in LISTWISE_FORMATS else None
    first = next(records, None)
    if first is None:
        return records, None
    return itertools.chain([first], records), detect_listwise_format(first.data)


# ----------------------------------------------------------------------------------------------------------------------
# pairs from rated lists (pure)


def preference_pairs(scores: Sequence[float], mode: str, rng: random.Random) -> list[tuple[int, int]]:
    """(chosen index, rejected index) pairs from one prompt's scores; a pair never has equal scores.

    all: every i < j with different scores, the higher-scored first; best-worst: the first highest against the first
    lowest; best-random: the first highest against one drawn uniformly (`rng`) from those scored strictly lower.
    """
    if mode not in PAIR_MODES:
        raise UserError(f"--pairs {mode!r}: expected one of {', '.join(PAIR_MODES)}")
    n = len(scores)
    if mode == "all":
        return [(i, j) if scores[i] > scores[j] else (j, i) for i in range(n) for j in range(i + 1, n) if scores[i] != scores[j]]
    if n < 2:
        return []
    best = max(range(n), key=lambda i: (scores[i], -i))  # first maximum
    if mode == "best-worst":
        worst = min(range(n), key=lambda i: (scores[i], i))  # first minimum
        return [] if scores[worst] == scores[best] else [(best, worst)]
    lower = [j for j in range(n) if scores[j] < scores[best]]
    return [(best, rng.choice(lower))] if lower else []


def tied_pair_count(scores: Sequence[float]) -> int:
    """How many of the n(n-1)/2 pairs have equal scores (what `all` drops)."""
    return sum(scores[i] == scores[j] for i in range(len(scores)) for j in range(i + 1, len(scores)))


def pair_rng(seed: int, record_index: int) -> random.Random:
    """One generator per record, so a record's draw does not depend on the records before it (limits, skips)."""
    return random.Random(f"{seed}:{record_index}")


# ----------------------------------------------------------------------------------------------------------------------
# reading a source's records (`rewardlab.data.loading.load_dataset` opens the source and counts)


def listwise_from_records(
    records: Iterable[Record], tally: RecordTally, *, format: str, source: str, name: str, limit: int | None = None
) -> ListwiseDataset:
    """A listwise evaluation set (rewardbench2 | rm-bench) from a source's records. Stats: read, loaded (prompts),
    excluded (always 0: every prompt counts), invalid, completions."""
    adapter = EVAL_ADAPTERS[format]
    examples: list[ListwiseExample] = list(tally.parsed(records, adapter, limit))
    if not examples:
        raise tally.nothing_loaded(source, f"{format} prompts")
    stats = tally.stats | {"completions": sum(len(e.completions) for e in examples)}
    return ListwiseDataset(name, examples, format, stats, tally.errors)


def pairs_from_records(
    records: Iterable[Record],
    tally: RecordTally,
    *,
    format: str,
    source: str,
    name: str,
    pairs: str = "all",
    seed: int = 0,
    limit: int | None = None,
) -> tuple[list[PreferenceExample], dict[str, int]]:
    """Preference pairs from a rated listwise source's records (ultrafeedback | listwise), and their stats: read (records),
    loaded (PAIRS), prompts (records that gave a pair), excluded (records that gave none: every score equal), invalid,
    and with `pairs="all"` tied_pairs (pairs of equal scores left out). `limit` caps the pairs."""
    if pairs not in PAIR_MODES:
        raise UserError(f"--pairs {pairs!r}: expected one of {', '.join(PAIR_MODES)}")
    if format in EVAL_ADAPTERS:
        raise DataError(
            f"format '{format}' is a listwise evaluation set (every completion scored alone): evaluate it with "
            "`rewardlab eval-rm` (or look at it with `rewardlab data inspect`)",
            file=source,
        )
    adapter = PAIR_ADAPTERS[format]
    examples: list[PreferenceExample] = []
    prompts = tied = 0
    for ordinal, record in enumerate(records):
        try:
            rated = adapter(record.data)
            made = [_pair(rated, i, j) for i, j in preference_pairs(rated.scores, pairs, pair_rng(seed, ordinal))]
        except DataError as err:
            tally.reject(located(err, record))
            continue
        if pairs == "all":
            tied += tied_pair_count(rated.scores)
        if not made:
            tally.excluded += 1
            continue
        prompts += 1
        examples.extend(made)
        if limit is not None and len(examples) >= limit:
            del examples[limit:]
            break
    tally.loaded = len(examples)
    if not examples:
        raise tally.nothing_loaded(source, "preference pairs")
    stats = {"read": prompts + tally.excluded + tally.invalid, "loaded": len(examples), "prompts": prompts}
    stats |= {"excluded": tally.excluded, "invalid": tally.invalid}
    stats["empty_responses"] = sum(is_empty_text(ex.chosen) + is_empty_text(ex.rejected) for ex in examples)
    if pairs == "all":
        stats["tied_pairs"] = tied
    return examples, stats


def _pair(rated: RatedResponses, i: int, j: int) -> PreferenceExample:
    chosen, rejected = rated.responses[i], rated.responses[j]  # an empty answer is scored like any other
    if chosen == rejected:
        raise DataError(f"identical to {rated.fields[i]} but scored differently", field=rated.fields[j])
    return PreferenceExample(
        prompt=rated.prompt,
        chosen=chosen,
        rejected=rejected,
        margin=rated.scores[i] - rated.scores[j],
        source=rated.source,
        metadata=rated.metadata | {"chosen_index": i, "rejected_index": j},
    )
