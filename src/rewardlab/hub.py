"""Names that are not local paths go to the Hugging Face hub: said at once, and refused at once when the hub is off.

Loading a hub id can take a minute before anything is printed (downloads, or retries of an unreachable hub that end in a
clear error). `announce` writes one line to stderr before the attempt. With the hub switched off (HF_HUB_OFFLINE, or
TRANSFORMERS_OFFLINE for models, HF_DATASETS_OFFLINE for data sets) a hub id can only come from the local hub cache;
`offline_refusal` says why it cannot when it is not there, before any library is imported, so the command fails in one
line at once.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

OFFLINE_VARIABLES = {
    "model": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
    "dataset": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
}


def offline_variable(kind: str) -> str | None:
    """The environment variable that switches the hub off for a `kind` ("model" or "dataset"), when one is set."""
    for variable in OFFLINE_VARIABLES[kind]:
        if os.environ.get(variable, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return variable
    return None


def hub_cache() -> Path:
    """huggingface_hub's cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def in_local_cache(kind: str, repo: str) -> bool:
    """Whether anything of `repo` was downloaded before: its folder in the hub cache (or, for a data set, in the
    datasets cache). Loose on purpose: a false yes only lets the library try, and fail, as it would have without us."""
    folders = [hub_cache() / f"{kind}s--{repo.replace('/', '--')}"]
    if kind == "dataset":
        home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
        datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(home) / "datasets").expanduser()
        folders.append(datasets_cache / repo.replace("/", "___"))
    return any(folder.exists() for folder in folders)


def offline_refusal(kind: str, repo: str) -> str | None:
    """Why `repo` cannot be loaded from the hub now (the hub is off and it is not in the local cache), else None."""
    variable = offline_variable(kind)
    if variable is None or in_local_cache(kind, repo):
        return None
    return f"offline ({variable} is set) and not in the local hub cache"


@functools.cache
def announce(kind: str, repo: str) -> None:
    """One line on stderr, once per process and id, before the hub is tried."""
    print(f"trying the Hugging Face hub for {kind} '{repo}' (not a local path)...", file=sys.stderr, flush=True)


def hub_attempt(kind: str, repo: str) -> str | None:
    """Before `repo` is loaded from the hub: why it cannot be (`offline_refusal`), or None once the attempt is announced."""
    refusal = offline_refusal(kind, repo)
    if refusal is None:
        announce(kind, repo)
    return refusal
