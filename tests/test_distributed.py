"""Two CPU processes (DDP over gloo, launched like `accelerate launch`/torchrun) train the same model as one process
with the same global batch."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

COMMON = ["--reg", "sft", "--lr", "3e-3", "--max-steps", "4", "--head-dropout", "0", "--no-group-by-length", "--no-progress",
          "--logging-steps", "1"]  # fmt: skip


def free_port() -> int:
    """A port no other run is using now (a fixed port collides when two test runs overlap)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun missing",
)
def test_two_processes_match_one(easy_data, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    data = ["--train-data", str(easy_data / "small.jsonl")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "rewardlab.cli", "train-rm", *data, *COMMON, "--batch-size", "4",
         "--output-dir", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "rewardlab.cli", "train-rm", *data, *COMMON,
         "--batch-size", "2", "--output-dir", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    cfg_two = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg_two["num_processes"] == 2 and cfg_two["global_batch_pairs"] == 4
    log_one = [json.loads(x) for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    for a, b in zip(log_one, log_two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    w1 = load_file(tmp_path / "one" / "model" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model" / "model.safetensors")
    from rewardlab.modeling.tiny import build_tiny_llama

    init = build_tiny_llama()[0].state_dict()
    moved = max((w1[name] - init[name]).abs().max().item() for name in w1)
    assert moved > 3e-3  # training moved the weights far more than the tolerance below
    for name in w1:  # Adam amplifies float-summation differences slightly
        torch.testing.assert_close(w1[name], w2[name], atol=1e-4, rtol=1e-3)
    # the reward statistics (every process scores the same responses) match one process's
    stats = [
        json.loads((tmp_path / run / "model" / "rewardlab_config.json").read_text())["reward_statistics"]
        for run in ("one", "two")
    ]
    assert stats[0]["count"] == stats[1]["count"] == 96
    assert stats[0]["mean"] == pytest.approx(stats[1]["mean"], abs=1e-3)
    assert stats[0]["std"] == pytest.approx(stats[1]["std"], rel=1e-3)
