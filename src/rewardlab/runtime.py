"""Run plumbing every command shares: device and dtype, the process's rank, strict atomic JSON writers (rank-aware on
request), directories that appear whole, the cache, and the version stamp. Nothing here knows about reward models or training.

Devices: `resolve_device(None)` is CUDA when a GPU is visible, else the CPU; `resolve_dtype("auto", device)` is bf16 on a
GPU that supports it and fp32 otherwise (fp32 on CPU: bf16 matmuls there are slower, and scores drift).

JSON: every file rewardlab writes is strict JSON (RFC 8259). Python's json module writes bare `NaN` / `Infinity`, which
other parsers reject; `write_json` and `write_jsonl` write `null` in their place instead. Writes are atomic: the data goes to
a temporary file of a unique name in the same directory, which replaces the target only once complete, so a crash leaves the
previous file (or none), never half of one.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
_DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float": "fp32"}


# ----------------------------------------------------------------------------------------------------------------------
# devices and dtypes


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when available, else the CPU. Unusable requests fail in one line."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """`auto`/None: bf16 on a CUDA device that supports it, else fp32. Also fp32 | bf16 | fp16 (or torch's names)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_ALIASES.get(str(dtype), str(dtype)) if dtype is not None else "auto"
    if name == "auto":
        device = resolve_device(device)
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next((name for name, value in DTYPES.items() if value == dtype), str(dtype).removeprefix("torch."))


# ----------------------------------------------------------------------------------------------------------------------
# processes


def process_rank() -> int:
    """This process's global rank: torch.distributed's once a process group exists, else the launcher's `RANK` (torchrun
    and `accelerate launch` set it before the group is made), else 0 (a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes a run's shared files (the one of global rank 0)."""
    return process_rank() == 0


# ----------------------------------------------------------------------------------------------------------------------
# strict, atomic JSON


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-Infinity) replaced by None, recursively, so it serialises as JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON text (non-finite floats become null; any left would raise rather than write `NaN`)."""
    return json.dumps(strict_json(value), indent=indent, ensure_ascii=False, allow_nan=False)


@contextmanager
def _atomic_file(path: str | os.PathLike[str]) -> Iterator[Any]:
    """A binary file handle whose content replaces `path` only if the block completes."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with mode 0o666 lets the umask decide permissions, like a plain open() would
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as raw:
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str | os.PathLike[str], value: Any, *, main_process_only: bool = False) -> Path:
    """Write strict JSON atomically (indented); returns the path. `main_process_only`: other processes of a distributed
    run write nothing (they would write the same file at once)."""
    if main_process_only and not is_main_process():
        return Path(path)
    with _atomic_file(path) as f:
        f.write((dumps(value, indent=2) + "\n").encode("utf-8"))
    return Path(path)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]], *, main_process_only: bool = False) -> int:
    """Write rows as strict JSON lines (gzip when the path ends in .gz), atomically; returns the number of rows written
    (0 on a process other than the main one, with `main_process_only`).

    An error while writing (in `rows` too) leaves any existing file untouched and no partial file behind.
    """
    if main_process_only and not is_main_process():
        return 0
    count = 0
    with _atomic_file(path) as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if os.fspath(path).endswith(".gz") else raw
        for row in rows:
            out.write(dumps(row).encode("utf-8") + b"\n")
            count += 1
        if out is not raw:
            out.close()  # flushes the gzip trailer into raw
    return count


class JsonlAppender:
    """Append strict JSON lines to a log as a run goes (flushed per line, so a killed run keeps what it logged)."""

    def __init__(self, path: str | os.PathLike[str], enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(dumps(row) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# directories that appear whole, the cache


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it is renamed to `path` (replacing an older one), on error it
    is removed. Readers therefore see a complete directory or none: a failed export or conversion leaves nothing that looks
    finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_dir() -> Path:
    """rewardlab's cache (base policies, converted models): `$REWARDLAB_CACHE`, default ~/.cache/rewardlab."""
    return Path(os.environ.get("REWARDLAB_CACHE", Path.home() / ".cache" / "rewardlab"))


def version() -> str:
    """The installed rewardlab version, stamped into every config.json."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("rewardlab")
    except PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------------------------------------------------
# training that goes wrong


class NonFiniteError(ValueError):
    """A loss or gradient norm that is NaN or infinite: training stops rather than step (and save) a broken model."""


def first_non_finite(values: dict[str, torch.Tensor | float]) -> str | None:
    """`"loss = nan"` for the first non-finite value of `values` (scalars), or None when all are finite."""
    for name, value in values.items():
        number = float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(number):
            return f"{name} = {number}"
    return None
