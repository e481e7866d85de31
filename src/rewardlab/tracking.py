"""Experiment tracking: which trackers a run reports to (`--report-to`, with transformers' names and semantics) and how
its log records reach them through accelerate's trackers.

`--report-to` takes tracker names, repeated or comma-separated: tensorboard, wandb, trackio; `all` (every one of them
that is installed) or `none` (nothing, the default). A tracker named explicitly that is not installed is an error, raised
before a run loads anything. The scalars a tracker gets are the log record's own numbers (train-rm's log.jsonl, PPO's
metrics.jsonl), under the same keys.

Light on purpose (no accelerate import at module level): `rewardlab.config` reads the tracker names for the option's help.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rewardlab.errors import UserError

# tracker name (as accelerate and transformers spell it) -> the module that must be importable; the pip extra is the name
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
ALL, NONE = "all", "none"
PROJECT = "rewardlab"  # wandb / trackio project; tensorboard writes under OUTPUT_DIR/rewardlab/


def installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name]) is not None


def parse_report_to(values: str | Iterable[str] | None) -> list[str]:
    """The names given (a string or a list, each entry possibly a comma list), lower-cased and checked, in order, once
    each; an unknown name is an error, and `none` or `all` must stand alone (`none`: nothing)."""
    if values is None:
        return []
    entries = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    for entry in entries:
        for name in str(entry).split(","):
            name = name.strip().lower()
            if not name or name in names:
                continue
            if name not in TRACKERS and name not in (ALL, NONE):
                raise UserError(f"report_to: unknown tracker '{name}' (choose from {', '.join([*TRACKERS, ALL, NONE])})")
            names.append(name)
    if len(names) > 1 and (NONE in names or ALL in names):
        raise UserError(f"report_to: '{NONE}' and '{ALL}' stand alone, got {', '.join(names)}")
    return [] if names == [NONE] else names


def resolve_report_to(values: str | Iterable[str] | None, is_installed: Callable[[str], bool] | None = None) -> list[str]:
    """The trackers a run reports to: the names given, or every installed one for `all`; a named tracker that is not
    installed is an error (one line, with the install command). `is_installed`: `installed` unless given."""
    is_installed = is_installed or installed
    names = parse_report_to(values)
    if names == [ALL]:
        return [name for name in TRACKERS if is_installed(name)]
    missing = [name for name in names if not is_installed(name)]
    if missing:
        extras = ",".join(missing)
        raise UserError(
            f"report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            f"(pip install 'rewardlab[{extras}]')"
        )
    return names


def tracker_scalars(record: dict[str, Any], prefix: str = "", skip: Iterable[str] = ("step", "kind")) -> dict[str, float]:
    """The numbers of a log record as tracker scalars: its int and float entries under their own keys (nested dicts
    flattened to `a/b`), after `prefix`; booleans, strings and None stay out, as do the keys in `skip`."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            scalars |= tracker_scalars(value, f"{prefix}{key}/", skip=())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            scalars[f"{prefix}{key}"] = value
    return scalars


def config_scalars(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json entries that trackers store as hyperparameters (numbers, strings, booleans)."""
    return {k: v for k, v in config.items() if isinstance(v, int | float | str | bool)}


def start_tracking(accelerator, config: dict[str, Any], output_dir: str | Path) -> None:
    """Start the accelerator's trackers (those it was made with, `log_with`) with the run's config; wandb and trackio
    name the run after its output directory (tensorboard writes under it)."""
    name = Path(output_dir).as_posix()
    kwargs = {"wandb": {"name": name}, "trackio": {"name": name}}
    accelerator.init_trackers(PROJECT, config=config_scalars(config), init_kwargs=kwargs)


def finish_tracking(accelerator) -> None:
    """Close the trackers (event files flushed, wandb / trackio runs finished) without ending the process group."""
    for tracker in accelerator.trackers:
        tracker.finish()
