"""Scale-out with the kept LM head: FSDP2 over two CPU processes (gloo) trains a GRM reward model exactly as one process
does. The GRM regularisers call the LM head inside the forward, in chunks recomputed in the backward, so the sharded
head must be gathered for every call; the dpo variant also shards a frozen reference copy.

accelerate does not run FSDP on CPU processes (with ACCELERATE_USE_FSDP or an explicit plugin it reports MULTI_CPU and
runs DDP, checked below), so the sharding here is torch's `fully_shard`, applied as accelerate's transformer-based wrap
applies it; the GPU recipe through `accelerate launch` is in docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_distributed import free_port

WORKER = Path(__file__).resolve().parent / "fsdp_worker.py"


def run_worker(out: Path, processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, str(WORKER), "--out", str(out)]
    else:
        torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
        cmd = [torchrun, "--nproc_per_node", str(processes), "--master_port", str(free_port()), str(WORKER), "--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun missing")
def test_fsdp_two_processes_train_grm_as_one(tmp_path):
    one = run_worker(tmp_path / "one.json", 1)
    two = run_worker(tmp_path / "two.json", 2)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for reg in ("sft", "dpo"):
        assert len(one[reg]["losses"]) == 3
        for run in (one, two):  # step 2 measured the gradient norms (and still trains as one process does, below)
            assert run[reg]["norms"]["reward_grad_norm"] > 1e-3 and run[reg]["norms"]["reg_grad_norm"] > 1e-5
        for a, b in zip(one[reg]["losses"], two[reg]["losses"], strict=True):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
        assert one[reg]["weights"].keys() == two[reg]["weights"].keys()
        assert any("lm_head" in name for name in one[reg]["weights"])  # the kept LM head trains, sharded
        for name, w in one[reg]["weights"].items():
            assert max(abs(x - y) for x, y in zip(w, two[reg]["weights"][name], strict=True)) < 1e-5, name
        # training moved the weights far beyond that tolerance
        moved = max(
            abs(x - y) for name, w in one[reg]["weights"].items() for x, y in zip(w, one[reg]["initial"][name], strict=True)
        )
        assert moved > 1e-3


ACCELERATE_ON_CPU = """
import os, sys
from accelerate import Accelerator, FullyShardedDataParallelPlugin
accelerator = Accelerator(cpu=True, fsdp_plugin=FullyShardedDataParallelPlugin(fsdp_version=2))
with open(os.path.join(sys.argv[1], f"rank{accelerator.process_index}.txt"), "w") as f:
    f.write(str(accelerator.distributed_type))
"""


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun missing")
def test_accelerate_runs_no_fsdp_on_cpu_processes(tmp_path):
    """Why the test above shards with torch directly: on CPU processes accelerate keeps MULTI_CPU (DDP), plugin or not.
    If a later accelerate changes this, this test fails and the trainer's own FSDP path can be tested on CPU."""
    script = tmp_path / "accelerate_fsdp.py"
    script.write_text(ACCELERATE_ON_CPU)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(script), str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    kinds = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]  # a file each: stdout interleaves
    assert kinds == ["DistributedType.MULTI_CPU"] * 2


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_saving_from_a_gathered_state_dict_writes_the_same_files(lora, tmp_path):
    """What train-rm does after FSDP / ZeRO-3 training (the module's own weights are shards there): save from the
    gathered full state dict. Here the state dict is the module's own, so every file must come out the same."""
    from safetensors.torch import load_file

    from helpers import perturb
    from rewardlab.modeling.reward_model import LoraSettings, build_reward_model

    model = build_reward_model("tiny-llama", lora=LoraSettings(r=4, alpha=8) if lora else None, reference_copy=not lora)
    perturb(model)
    model.save_pretrained(tmp_path / "own")
    model.save_pretrained(tmp_path / "gathered", state_dict=model.state_dict())
    weights = sorted(p.relative_to(tmp_path / "own") for p in (tmp_path / "own").rglob("*.safetensors"))
    assert len(weights) == (3 if lora else 2)  # head + model, or head + adapter + base model
    for name in weights:
        own, gathered = load_file(tmp_path / "own" / name), load_file(tmp_path / "gathered" / name)
        assert own.keys() == gathered.keys() and own, name
        for key in own:
            assert (own[key] == gathered[key]).all(), (name, key)
