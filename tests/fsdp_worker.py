"""Train the tiny reward model with a GRM regulariser for a few steps, in one process or sharded over several with FSDP2.

    python tests/fsdp_worker.py --out one.json                              # one process, the whole batch
    torchrun --nproc_per_node 2 tests/fsdp_worker.py --out two.json         # FSDP2 (fully_shard) over gloo, half each

Used by tests/test_fsdp.py. Every step runs rewardlab's own objective (`rewardlab.objective.compute_loss`: BT plus the
regulariser, whose log-probs come from the kept LM head in small chunks recomputed in the backward), then clipping and
AdamW, as the trainer does; the second step also measures each loss term's gradient norm at the last hidden layer, as
the trainer's logging steps do. Sharding is what accelerate's transformer-based FSDP2 wrap does: each decoder layer is its
own unit, the rest (embeddings, LM head, reward head, the dpo reference copy) the root unit. Writes the per-step losses
(mean over processes) and the final full weights (gathered) as JSON on the first process.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

from rewardlab.data.pairs import collate_pairs, encode_pairs
from rewardlab.modeling.reward_model import KernelSettings, build_reward_model
from rewardlab.objective import compute_loss
from rewardlab.tasks.easy import easy_preferences
from rewardlab.train_rm import RewardTrainingConfig

PAIRS_PER_STEP = 4


def full_weights(model: torch.nn.Module) -> dict[str, list[float]]:
    """Every trainable parameter, whole (sharded ones gathered from all processes: every process must call this)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            full = p.full_tensor() if isinstance(p, DTensor) else p
            out[name] = full.detach().flatten()[:64].tolist()  # a slice of each is enough to compare
    return out


def train(reg: str, steps: int, rank: int, world: int) -> dict:
    cfg = RewardTrainingConfig(train_data="-", reg=reg, head_dropout=0.0, logprob_chunk_size=16, learning_rate=3e-3)
    # several log-prob chunks per batch: the head is called again in backward
    kernels = KernelSettings(logprob_chunk_tokens=cfg.logprob_chunk_size)
    model = build_reward_model("tiny-llama", head_dropout=0.0, reference_copy=reg == "dpo", seed=0, kernels=kernels)
    if reg == "none":
        model.freeze_lm_head()
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in model.causal_lm.model.layers:
            fully_shard(layer)
        if model.reference is not None:
            for layer in model.reference.model.layers:
                fully_shard(layer)
        fully_shard(model)
    model.train()
    initial = full_weights(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    pairs, _ = encode_pairs(model.tokenizer, easy_preferences(PAIRS_PER_STEP * steps, 5), max_length=None)
    losses, norms = [], {}
    for step in range(steps):
        global_batch = pairs[step * PAIRS_PER_STEP : (step + 1) * PAIRS_PER_STEP]
        batch = collate_pairs(global_batch[rank::world], model.tokenizer.pad_token_id, "right")
        stats = compute_loss(model, batch, cfg, cfg.padding_free, measure_gradients=step == 1)
        if step == 1:  # this process's batch: comparable across processes only in kind, not in value
            norms = {k: float(stats[k]) for k in ("reward_grad_norm", "reg_grad_norm")}
        stats["loss"].backward()  # FSDP averages gradients over processes: the mean over the global batch
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = stats["loss"].detach().clone()
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        losses.append(loss.item())
    return {"losses": losses, "norms": norms, "weights": full_weights(model), "initial": initial}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--regs", default="sft,dpo")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    results = {reg: train(reg, args.steps, rank, world) for reg in args.regs.split(",")}
    if rank == 0:
        from rewardlab.runtime import write_json

        write_json(args.out, {"world_size": world, **results})
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    print(json.dumps({"done": True}))
