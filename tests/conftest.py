"""Shared fixtures. Everything here is made offline by the project itself (no downloads)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def trackers_offline(tmp_path_factory):
    """Experiment trackers stay offline and out of the home directory: wandb in offline mode, wandb's and trackio's files
    under the session's temporary directory (set before any test starts one: trackio reads TRACKIO_DIR on import)."""
    root = tmp_path_factory.mktemp("trackers")
    os.environ |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(root), "TRACKIO_DIR": str(root / "trackio")}
    yield root
    trackio = sys.modules.get("trackio")
    # a run still open is finished here, where pytest captures its farewell line, not at exit after the summary
    if trackio is not None and trackio.context_vars.current_run.get() is not None:
        trackio.finish()


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory):
    """The easy preference task written as TRL-format JSONL files, as a user would have them."""
    from rewardlab.data.loading import preference_to_dict
    from rewardlab.runtime import write_jsonl
    from rewardlab.tasks.easy import easy_preferences

    root = tmp_path_factory.mktemp("easy")
    write_jsonl(root / "train.jsonl", (preference_to_dict(e) for e in easy_preferences(1200, 0)))
    write_jsonl(root / "test.jsonl", (preference_to_dict(e) for e in easy_preferences(300, 99)))
    write_jsonl(root / "small.jsonl", (preference_to_dict(e) for e in easy_preferences(48, 5)))
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny matrices gain little from threads, and busy-waiting OpenMP threads crawl on a
    shared CPU. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
