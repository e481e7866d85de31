"""Reading raw records (one dict each) from local files or the Hugging Face hub, with file and line for error messages.

A data spec is either a local file or a hub id:

- local: `.jsonl`, `.jsonl.gz`, `.json` (a list of objects, or an object holding exactly one list), `.parquet`, `.csv`.
- hub: `owner/name` (split "train"), `owner/name:split` or `owner/name:config:split`, loaded with
  `datasets.load_dataset`. A spec is treated as a hub id only when it is not an existing path and does not end in one of
  the local suffixes (so a mistyped file name says "file not found" instead of trying the network).

`Record.line` is where to look when something is wrong: the 1-based physical line for jsonl (blank lines are skipped
but counted), the spreadsheet row for csv (the header is line 1, so the first data row is line 2; a quoted cell spanning
lines still counts as one row), and the 1-based record index for json, parquet and hub datasets.

csv cells are always strings, so csv suits standard (string) data; conversational data (message lists) needs jsonl,
json or parquet. Numeric fields (margin, ratings) are parsed from csv strings by the format adapters.

A named spec `name=path` gives a data set a name (`--eval-data ood=hhh.jsonl`); see `parse_named_spec`.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from rewardlab.data.errors import DataError
from rewardlab.hub import hub_attempt

LOCAL_SUFFIXES = (".jsonl.gz", ".jsonl", ".json", ".parquet", ".csv")

# `owner/name`, optionally `:split` or `:config:split`. Also a bare `name` (canonical hub data sets have no owner).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+){0,2}")
# The left part of `name=path`: an identifier, hyphens allowed (`mt-bench=...`). Paths and hub ids never match it.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

OnInvalid = Callable[[DataError], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    file: str  # the spec as the user wrote it (path or hub id)
    line: int
    data: dict[str, Any]


def type_name(value: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def local_suffix(spec: str) -> str | None:
    """The supported local suffix `spec` ends with (case-insensitive), or None."""
    lower = spec.lower()
    return next((suffix for suffix in LOCAL_SUFFIXES if lower.endswith(suffix)), None)


def is_local_spec(spec: str) -> bool:
    return os.path.exists(spec) or local_suffix(spec) is not None


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """`owner/name[:config]:split` -> (repo id, config or None, split); the split defaults to "train"."""
    if not _HUB_ID.fullmatch(spec):
        raise DataError("file not found (and not a Hugging Face hub id like owner/name:split)", file=spec)
    repo, *rest = spec.split(":")
    if len(rest) == 0:
        return repo, None, "train"
    if len(rest) == 1:
        return repo, None, rest[0]
    return repo, rest[0], rest[1]


def default_name(spec: str) -> str:
    """A data set's name when none is given: the file stem (`data/ood.jsonl.gz` -> `ood`) or the hub name."""
    if is_local_spec(spec):
        base = os.path.basename(os.path.normpath(spec))
        suffix = local_suffix(base)
        return base[: -len(suffix)] if suffix else os.path.splitext(base)[0]
    repo = spec.split(":")[0]
    return repo.rsplit("/", 1)[-1]


def parse_named_spec(spec: str) -> tuple[str, str]:
    """`"ood=b.jsonl"` -> `("ood", "b.jsonl")`; `"b.jsonl"` -> `("b", "b.jsonl")`.

    Splits on the first '=' only when the left part is a plain identifier (letters, digits, '_', '-'; not starting with
    a digit) and the whole spec is not itself an existing path, so `runs/a=1/data.jsonl` stays a path.
    """
    left, sep, right = spec.partition("=")
    if sep and _NAME.fullmatch(left) and not os.path.exists(spec):
        if not right:
            raise DataError(f"no data after '{left}=' (expected name=path or name=owner/dataset)", file=spec)
        return left, right
    return default_name(spec), spec


def read_records(spec: str, *, on_invalid: OnInvalid | None = None) -> Iterator[Record]:
    """Yield the records of a local file or hub data set, in order.

    A record that cannot be read (malformed JSON line, a value that is not an object, a short csv row) raises
    `DataError` with file and line, unless `on_invalid` is given: then it is passed the error and the record is skipped.
    Problems with the source as a whole (missing file, unsupported type, hub failure) always raise.
    """
    suffix = local_suffix(spec)
    if os.path.isdir(spec):
        raise DataError("is a directory; expected a .jsonl, .jsonl.gz, .json, .parquet or .csv file", file=spec)
    if os.path.exists(spec) and suffix is None:
        raise DataError("unsupported file type; expected .jsonl, .jsonl.gz, .json, .parquet or .csv", file=spec)
    if suffix is not None and not os.path.exists(spec):
        raise DataError("file not found", file=spec)
    if suffix in (".jsonl", ".jsonl.gz"):
        yield from _read_jsonl(spec, on_invalid)
    elif suffix == ".json":
        yield from _read_json(spec, on_invalid)
    elif suffix == ".parquet":
        yield from _read_parquet(spec, on_invalid)
    elif suffix == ".csv":
        yield from _read_csv(spec, on_invalid)
    else:
        yield from _read_hub(spec, on_invalid)


def _reject(err: DataError, on_invalid: OnInvalid | None) -> None:
    if on_invalid is None:
        raise err
    on_invalid(err)


def _check_object(value: Any, file: str, line: int, on_invalid: OnInvalid | None) -> Record | None:
    if isinstance(value, dict):
        return Record(file, line, value)
    _reject(DataError(f"expected a JSON object, got {type_name(value)}", file=file, line=line), on_invalid)
    return None


def _read_jsonl(path: str, on_invalid: OnInvalid | None) -> Iterator[Record]:
    opener = gzip.open if path.lower().endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            # Bytes, decoded per line, so a bad byte is reported at its line rather than failing the whole file.
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    _reject(DataError(f"not valid UTF-8 ({exc.reason})", file=path, line=lineno), on_invalid)
                    continue
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    _reject(DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=lineno), on_invalid)
                    continue
                record = _check_object(value, path, lineno, on_invalid)
                if record is not None:
                    yield record
    except (OSError, EOFError) as exc:  # includes gzip.BadGzipFile and truncated gzip streams
        raise DataError(f"cannot read file: {exc}", file=path, line=lineno + 1 if lineno else None) from None


def _read_json(path: str, on_invalid: OnInvalid | None) -> Iterator[Record]:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason})", file=path) from None
    except json.JSONDecodeError as exc:
        # A parse error is about the file's text, so report the physical line.
        raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno) from None
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataError(
                f"expected a list of objects, or an object holding exactly one list (found {len(lists)} lists)",
                file=path,
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataError(f"expected a list of objects, got {type_name(data)}", file=path)
    for index, value in enumerate(data, 1):
        record = _check_object(value, path, index, on_invalid)
        if record is not None:
            yield record


def _read_parquet(path: str, on_invalid: OnInvalid | None) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                index += 1
                yield Record(path, index, row)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read parquet file: {exc}", file=path) from None


def _read_csv(path: str, on_invalid: OnInvalid | None) -> Iterator[Record]:
    line = 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for line, row in enumerate(reader, 2):
                if None in row:  # DictReader files surplus cells under the key None
                    _reject(DataError("more cells than header columns", file=path, line=line), on_invalid)
                elif any(value is None for value in row.values()):
                    _reject(DataError("fewer cells than header columns", file=path, line=line), on_invalid)
                else:
                    yield Record(path, line, dict(row))
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason})", file=path) from None
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", file=path, line=line + 1) from None


def _read_hub(spec: str, on_invalid: OnInvalid | None) -> Iterator[Record]:
    repo, config, split = parse_hub_spec(spec)
    refusal = hub_attempt("dataset", repo)
    if refusal is not None:
        raise DataError(f"not a local file, and the Hugging Face hub: {refusal}", file=spec)
    try:
        import datasets

        dataset = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # network, auth, missing split...: all one user-facing error
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"not a local file, and loading it from the Hugging Face hub failed: {first_line}", file=spec) from None
    for index, row in enumerate(dataset, 1):
        record = _check_object(row, spec, index, on_invalid)
        if record is not None:
            yield record


# ----------------------------------------------------------------------------------------------------------------------
# counting what happened to a source's records (every loader shares this)

MAX_KEPT_ERRORS = 10  # skipped-record messages kept on a data set, for a warning


def located(err: DataError, record: Record) -> DataError:
    """`err` (raised by an adapter, with a field) placed at the record's file and line."""
    return DataError(err.message, file=record.file, line=record.line, field=err.field)


class RecordTally:
    """Counts what happened to the records of one source; keeps the first few skipped-record errors."""

    def __init__(self, skip_invalid: bool):
        self.skip_invalid = skip_invalid
        self.loaded = self.excluded = self.invalid = 0
        self.errors: list[str] = []

    def reject(self, err: DataError) -> None:
        """Raise `err`, or count and remember it when skipping invalid records."""
        if not self.skip_invalid:
            raise err
        self.invalid += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(str(err))

    def records(self, source: str) -> Iterator[Record]:
        return read_records(source, on_invalid=self.reject if self.skip_invalid else None)

    def parsed(
        self, records: Iterable[Record], parse: Callable[[dict[str, Any]], T | None], limit: int | None = None
    ) -> Iterator[T]:
        """Each record's `parse(record.data)`: a DataError is rejected (raised, or counted when skipping invalid records)
        with the record's file and line, None counts as excluded; stops after `limit` loaded."""
        for record in records:
            try:
                item = parse(record.data)
            except DataError as err:
                self.reject(located(err, record))
                continue
            if item is None:
                self.excluded += 1
                continue
            self.loaded += 1
            yield item
            if self.loaded == limit:
                return

    @property
    def stats(self) -> dict[str, int]:
        read = self.loaded + self.excluded + self.invalid
        return {"read": read, "loaded": self.loaded, "excluded": self.excluded, "invalid": self.invalid}

    def nothing_loaded(self, source: str, what: str) -> DataError:
        s = self.stats
        detail = f"read {s['read']}, excluded {s['excluded']}, invalid {s['invalid']}"
        if self.errors:
            detail += f"; first error: {self.errors[0]}"
        return DataError(f"no usable {what} ({detail})", file=source)
