"""Run plumbing every command shares: device and dtype, the process's rank, strict atomic JSON writers (rank-aware on
request), directories that appear whole, output paths that never lose what rewardlab did not write, the cache, and the
version stamp. Nothing here knows about reward models or training.

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

from rewardlab.choices import DTYPE_CHOICES
from rewardlab.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # keyed by rewardlab.choices.DTYPE_NAMES
_DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float": "fp32"}

# The environment variable that holds `rewardlab serve`'s API key: the server reads it, and so do its clients (verl).
API_KEY_ENV = "REWARDLAB_API_KEY"


# ----------------------------------------------------------------------------------------------------------------------
# devices and dtypes


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when available, else the CPU. Unusable requests fail in one line."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
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
        raise UserError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPE_CHOICES)}")
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


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file (UTF-8) atomically; returns the path."""
    with _atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return Path(path)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, replace: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it is renamed to `path`, on error it is removed. Readers
    therefore see a complete directory or none: a failed export or conversion leaves nothing that looks finished.

    What is already at `path` when the block ends: an empty directory is replaced; with `replace`, so is a directory
    rewardlab wrote (its marker, see `written_by_rewardlab`); with `keep_existing` (caches: another process made the same
    entry meanwhile) ours is dropped and theirs kept; anything else is refused (`UserError`) and left as it is. The new
    directory carries the marker and the modes the user's umask gives (not mkdtemp's 0700).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        seal_output_dir(tmp, main_process_only=False)
        follow_umask(tmp)
        if not os.path.lexists(path):
            os.rename(tmp, path)
        elif keep_existing and path.is_dir():
            pass
        elif path.is_dir() and not path.is_symlink() and (_holds_nothing(path) or (replace and _replaceable(path))):
            old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            raise UserError(refusal(path, "directory", replace))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# output paths: what exists and was not written by rewardlab is never removed or replaced
#
# A directory rewardlab writes carries a small marker file naming what wrote it. A file rewardlab writes is recognised by
# its content: JSON with rewardlab's version stamp, JSONL whose first row has the reward fields rewardlab writes, an HTML
# page with rewardlab's generator tag. Replacing either needs --overwrite; anything else at an output path is refused in
# one line before any work starts (`check_output_dir`, `check_output_file`).

OUTPUT_MARKER = ".rewardlab-output.json"
HTML_GENERATOR = '<meta name="generator" content="rewardlab">'
_OWN_ROW_KEYS = frozenset({"reward", "chosen_reward", "chosen_rewards"})  # score / eval-rm --scores rows


def _holds_nothing(path: Path) -> bool:
    """An empty directory, or one holding only rewardlab's marker (a run that stopped before writing anything)."""
    return all(p.name == OUTPUT_MARKER for p in path.iterdir())


def _replaceable(path: Path) -> bool:
    return written_by_rewardlab(path) and not foreign_entries(path)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(root: str | os.PathLike[str]) -> None:
    """Give `root` and everything under it the modes a plain write would (0o666 / 0o777 less the umask): safetensors and
    mkdtemp create 0600 / 0700, so other users could not read a model written on a shared machine. Only for what
    rewardlab just wrote."""
    mask = current_umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def mark_output_dir(path: str | os.PathLike[str], command: str | None = None) -> Path:
    """Create `path` (and its parents) if needed and mark it as written by rewardlab."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / OUTPUT_MARKER).exists():
        write_json(path / OUTPUT_MARKER, {"written_by": "rewardlab", "command": command, "rewardlab_version": version()})
    return path


def seal_output_dir(path: str | os.PathLike[str], command: str | None = None, *, main_process_only: bool = True) -> None:
    """Record in the marker what the finished output holds (its top-level entries), so that `--overwrite` can tell a file
    the user added later from rewardlab's own, and refuse rather than remove it."""
    if main_process_only and not is_main_process():
        return
    path = Path(path)
    marker = _read_marker(path) or {"written_by": "rewardlab", "command": command, "rewardlab_version": version()}
    entries = sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER)
    write_json(path / OUTPUT_MARKER, marker | {"entries": entries})


def _read_marker(path: Path) -> dict | None:
    try:
        value = json.loads((path / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def output_sealed(path: str | os.PathLike[str]) -> bool:
    """Whether rewardlab finished the directory `path`: its marker lists what it holds (`seal_output_dir`)."""
    path = Path(path)
    return path.is_dir() and isinstance((_read_marker(path) or {}).get("entries"), list)


def foreign_entries(path: Path) -> list[str]:
    """Top-level entries of a sealed rewardlab output that its marker does not list (added after rewardlab finished)."""
    entries = (_read_marker(path) or {}).get("entries")
    if not isinstance(entries, list):
        return []  # not sealed (a run that stopped early, or from before markers): nothing to compare with
    return sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER and p.name not in entries)


def written_by_rewardlab(path: str | os.PathLike[str]) -> bool:
    """Whether rewardlab wrote `path`: a directory with the marker (or, from before markers, a run directory whose
    config.json carries rewardlab's version stamp), or a file rewardlab recognises as its own output by its content."""
    path = Path(path)
    if path.is_symlink():
        return False
    if path.is_dir():
        return (path / OUTPUT_MARKER).is_file() or _file_is_ours(path / "config.json")
    return path.is_file() and _file_is_ours(path)


def _file_is_ours(path: Path) -> bool:
    """By content, whatever the file's name: JSON lines whose first row has rewardlab's reward fields (plain or gzip), a
    JSON document with rewardlab's version stamp (at the top or in its `config`), an HTML page with rewardlab's tag."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return _row_is_ours(f.readline())
        if HTML_GENERATOR.encode() in head:
            return True
        if not head.lstrip().startswith(b"{"):
            return False
        with open(path, encoding="utf-8") as f:
            if _row_is_ours(f.readline()):
                return True
        if path.stat().st_size > 64 * 2**20:  # rewardlab's JSON documents are small; a large one is JSON lines or not ours
            return False
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, EOFError):  # unreadable, not UTF-8, not JSON: not something rewardlab wrote
        return False
    if not isinstance(value, dict):
        return False
    config = value.get("config")
    return "rewardlab_version" in value or (isinstance(config, dict) and "rewardlab_version" in config)


def _row_is_ours(line: str) -> bool:
    try:
        row = json.loads(line or "null")
    except ValueError:
        return False
    return isinstance(row, dict) and bool(_OWN_ROW_KEYS & row.keys())


def refusal(path: Path, kind: str, overwrite: bool, flag: str = "output") -> str:
    """The one-line reason an existing `path` is not replaced, and what to do."""
    if kind == "directory" and not path.is_dir():
        return f"{flag} {path}: exists and is not a directory; choose another path (nothing was changed)"
    if kind == "file" and path.is_dir():
        return f"{flag} {path}: is a directory; give a file path (nothing was changed)"
    if not written_by_rewardlab(path):
        return f"{flag} {path}: exists and was not written by rewardlab, so it is never replaced; choose a new path"
    if path.is_dir() and (added := foreign_entries(path)):
        shown = ", ".join(added[:3]) + (f" and {len(added) - 3} more" if len(added) > 3 else "")
        return f"{flag} {path}: a rewardlab output that now also holds {shown}, which rewardlab did not write; move it out first"
    if overwrite:
        return f"{flag} {path}: changed while rewardlab worked; nothing was replaced"
    return f"{flag} {path}: holds an earlier rewardlab output; pass --overwrite to replace it, or choose a new path"


def _overlapping_input(output: Path, inputs: Iterable[str | os.PathLike[str] | None]) -> str | None:
    """The first existing local input that `output` is, contains or lies inside (names and hub ids are skipped)."""
    out = output.expanduser().resolve()
    for given in inputs:
        if given is None or not os.path.exists(Path(given).expanduser()):
            continue
        source = Path(given).expanduser().resolve()
        if out == source or source in out.parents or out in source.parents:
            return str(given)
    return None


def _check_placement(path: Path, flag: str, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    if (source := _overlapping_input(path, inputs)) is not None:
        raise UserError(f"{flag} {path}: is, contains or lies inside the input {source}; choose a path apart from it")
    existing = next(p for p in [path, *path.absolute().parents] if os.path.lexists(p))
    if existing != path and not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a directory; choose another path")
    writable_dir = existing if existing.is_dir() else existing.parent
    if not os.access(writable_dir, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {writable_dir} is not writable; choose another path")


def check_output_dir(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    flag: str = "--output-dir",
) -> Path:
    """Check, before any work, that rewardlab may write the directory `path`: it does not exist, is empty, or holds an
    earlier rewardlab output that `overwrite` (or `resume`: continue in it) allows; it is apart from every input; it can be
    created. A refusal is a `UserError` naming the path and what to do. Nothing is written.

    Only the main process of a launch writes outputs, so only it checks: another rank could see the main one's fresh run."""
    path = Path(path).expanduser()
    if not is_main_process():
        return path
    _check_placement(path, flag, inputs)
    if not os.path.lexists(path):
        return path
    if path.is_dir() and not path.is_symlink() and _holds_nothing(path):
        return path
    if path.is_dir() and written_by_rewardlab(path) and (resume or (overwrite and not foreign_entries(path))):
        return path
    raise UserError(refusal(path, "directory", overwrite, flag))


def claim_output_dir(
    path: str | os.PathLike[str],
    command: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    flag: str = "--output-dir",
) -> Path:
    """`check_output_dir`, then make the directory rewardlab's: an earlier rewardlab output is removed first when
    `overwrite` (and not `resume`), and the directory is created and marked. Call it once the settings are valid."""
    path = check_output_dir(path, overwrite=overwrite, resume=resume, inputs=inputs, flag=flag)
    if overwrite and not resume and path.is_dir() and not _holds_nothing(path):
        old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
        os.rename(path, old)  # checked above: a directory rewardlab wrote
        shutil.rmtree(old, ignore_errors=True)
    return mark_output_dir(path, command)


def check_output_file(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    flag: str = "--output",
) -> Path:
    """Check, before any work, that rewardlab may write the file `path`: it does not exist, or it is an earlier rewardlab
    output and `overwrite` is set; it is not an input nor inside one; its directory can be created. Nothing is written."""
    path = Path(path).expanduser()
    if not is_main_process():
        return path
    _check_placement(path, flag, inputs)
    if os.path.lexists(path) and not (overwrite and path.is_file() and not path.is_symlink() and written_by_rewardlab(path)):
        raise UserError(refusal(path, "file", overwrite, flag))
    return path


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


class NonFiniteError(UserError):
    """A loss or gradient norm that is NaN or infinite: training stops rather than step (and save) a broken model."""


def first_non_finite(values: dict[str, torch.Tensor | float]) -> str | None:
    """`"loss = nan"` for the first non-finite value of `values` (scalars), or None when all are finite."""
    for name, value in values.items():
        number = float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(number):
            return f"{name} = {number}"
    return None
