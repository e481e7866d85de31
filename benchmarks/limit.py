"""rewardlab's training step vs the compute limit: a bare forward+backward of the same model on the same tokens, no padding.

    python benchmarks/limit.py             # a table (about 3 minutes on 2 CPU cores)
    python benchmarks/limit.py --quick     # seconds
    python benchmarks/limit.py --json      # one JSON object per comparison
    python benchmarks/limit.py --profile   # also: torch.profiler's top operators for each contender

Contenders, each on the same length-grouped (2B, T) batches that rewardlab's trainer makes, each with its own copy of the
same weights and the same AdamW update + gradient clipping (so the ratio measures the forward/backward work, not the optimiser):
- rewardlab_padded and rewardlab_padding_free: `rewardlab.objective.compute_loss` (vanilla BT, no regulariser) + backward +
  clip + AdamW, as the trainer does, with `padding_free` off and on;
- packed (THE LIMIT): the batch's 2B sequences concatenated into one row with no padding, position ids restarting at each
  sequence, attention within each sequence by the SAME kernel rewardlab's padding-free mode picks for this device and
  dtype (`rewardlab.packing`: varlen FlashAttention or flex attention on CUDA, causal SDPA per segment on CPU), reward
  head applied at each sequence's last token only, BT loss, backward, same update;
- padded: the same bare forward+backward on the padded batch (decoder + head at the last token), to split the gap into
  padding cost (padded / packed) and rewardlab's own overhead (rewardlab_padded / padded).
Before timing, the limit's and rewardlab's padding-free rewards are checked against rewardlab's padded ones
(max_abs_reward_diff_packed, max_abs_reward_diff_padding_free in the output).

Comparisons (better: lower): `limit` = rewardlab in its default mode (`rewardlab_default_mode`) / packed (target <= 1.15),
with the other mode's time and ratio to packed as extra fields (`rewardlab_padded_over_packed` when the default is
padding-free); `limit_padded` = rewardlab_padded / padded; `limit_padding_cost` = padded / packed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from rewardlab.packed_attention import IMPLEMENTATION_OF
from rewardlab.packing import pack_padded, packed_attention_kwargs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_common_arguments,
    alternate,
    comparison,
    emit,
    load_average,
    machine,
    make_preference_examples,
    median_of,
    model_name,
    padding_fraction,
    pair_batches,
    rewardlab_step,
    save_tiny_llama,
    setup_run,
    synchronize,
    trainable_parameters,
)

REWARDLAB_MODES = ("padded", "padding_free")


def default_mode() -> str:
    """rewardlab's default training mode (what `limit` measures)."""
    from rewardlab.train_rm import RewardTrainingConfig

    return "padding_free" if RewardTrainingConfig.padding_free else "padded"


def pack_batch(batch: dict[str, torch.Tensor]) -> dict:
    """The real tokens of a padded (2B, T) batch as one (1, N) row (`rewardlab.packing.pack_padded`), as a dict."""
    packed = pack_padded(batch["input_ids"], batch["attention_mask"])
    return {
        "input_ids": packed.input_ids,
        "position_ids": packed.position_ids,
        "segment_lengths": packed.lengths,
        "last_index": packed.last_index,
        "n_pairs": packed.num_sequences // 2,
        "batch": packed,
    }


def packed_rewards(model, packed: dict, kind: str = "segments") -> torch.Tensor:
    """Rewards at each sequence's last token from a packed forward with attention kernel `kind` (already enabled)."""
    batch = packed["batch"]
    hidden = model.decoder(
        input_ids=packed["input_ids"],
        position_ids=packed["position_ids"],
        use_cache=False,
        **packed_attention_kwargs(kind, batch, model.causal_lm.config),
    ).last_hidden_state
    return model.head(hidden[0, packed["last_index"]]).float()


def padded_rewards(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = batch["attention_mask"]
    hidden = model.decoder(
        input_ids=batch["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=False
    ).last_hidden_state
    last = mask.sum(dim=1) - 1
    return model.head(hidden[torch.arange(mask.shape[0]), last]).float()


def bare_step(rewards: torch.Tensor, n_pairs: int, model, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> None:
    loss = -F.logsigmoid(rewards[:n_pairs] - rewards[n_pairs:]).mean()  # Bradley-Terry
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def to_device(batch: dict, device: str) -> dict:
    from dataclasses import fields, is_dataclass, replace

    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if is_dataclass(v):
            return replace(v, **{f.name: move(getattr(v, f.name)) for f in fields(v)})
        return v

    return {k: move(v) for k, v in batch.items()}


def build_contenders(model_dir: str, batches: list[dict], device: str, lr: float) -> tuple[dict, dict]:
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.train_rm import RewardTrainingConfig

    configs = {
        f"rewardlab_{mode}": RewardTrainingConfig(
            model=model_dir, train_data="<memory>", reg="none", learning_rate=lr, padding_free=mode == "padding_free"
        )
        for mode in REWARDLAB_MODES
    }
    cfg = configs["rewardlab_padded"]
    base = build_reward_model(model_dir, seed=cfg.seed)
    base.lm_head.requires_grad_(False)  # as the trainer does without a regulariser
    models = {name: copy.deepcopy(base).to(device).train() for name in (*configs, "packed", "padded")}
    kind = models["packed"].attention_kernel(training=True)  # the kernel rewardlab's padding-free step uses here
    models["packed"].causal_lm.set_attn_implementation(IMPLEMENTATION_OF[kind])
    optimizers = {name: torch.optim.AdamW(trainable_parameters(m), lr=lr) for name, m in models.items()}
    padded = [to_device(b, device) for b in batches]
    packed = [to_device(pack_batch(b), device) for b in batches]

    def rewardlab_runner(name: str):
        def run() -> None:
            for batch in padded:
                rewardlab_step(models[name], optimizers[name], batch, configs[name])
            synchronize(device)

        return run

    def run_packed() -> None:
        model, optimizer = models["packed"], optimizers["packed"]
        for p in packed:
            bare_step(packed_rewards(model, p, kind), p["n_pairs"], model, optimizer, cfg.max_grad_norm)
        synchronize(device)

    def run_padded() -> None:
        model, optimizer = models["padded"], optimizers["padded"]
        for batch in padded:
            bare_step(padded_rewards(model, batch), batch["margin"].shape[0], model, optimizer, cfg.max_grad_norm)
        synchronize(device)

    # The limit must compute the same function: compare rewards with dropout off, before any update.
    with torch.no_grad():
        for m in models.values():
            m.eval()
        ids, mask = padded[0]["input_ids"], padded[0]["attention_mask"]
        reference = models["rewardlab_padded"](ids, mask).sequence_rewards
        padding_free = models["rewardlab_padding_free"](ids, mask, packed=True).sequence_rewards
        diffs = {
            "packed": (packed_rewards(models["packed"], packed[0], kind) - reference).abs().max().item(),
            "padded": (padded_rewards(models["padded"], padded[0]) - reference).abs().max().item(),
            "padding_free": (padding_free - reference).abs().max().item(),
        }
        for m in models.values():
            m.train()
    diffs["attention"] = kind
    contenders = {name: rewardlab_runner(name) for name in configs}
    return contenders | {"packed": run_packed, "padded": run_padded}, diffs


def profile(contenders: dict, rows: int) -> None:
    """torch.profiler's operator table (self CPU/CUDA time) for one pass of each contender over the batches."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    sort_by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    for name, run in contenders.items():
        with torch_profile(activities=activities) as prof:
            run()
        print(f"\n=== profile: {name} ===")
        print(prof.key_averages().table(sort_by=sort_by, row_limit=rows))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=32, help="preference pairs; every repetition runs them all")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables for each contender")
    add_common_arguments(parser, repeats=5)
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.batch_size, args.hidden_size, args.num_layers, args.max_tokens, args.repeats = 4, 2, 32, 1, 60, 1
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = setup_run(args)
    torch.manual_seed(0)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_llama(tmp, args.hidden_size, args.num_layers, vocab_size=args.vocab_size)
        from rewardlab.modeling.tiny import build_byte_tokenizer

        examples = make_preference_examples(args.pairs, seed=0, max_tokens=args.max_tokens)
        batches = pair_batches(build_byte_tokenizer(), examples, args.batch_size)
        contenders, diffs = build_contenders(model_dir, batches, device, args.lr)
        runs = alternate(contenders, args.repeats, warmup=1)
        if args.profile:
            profile(contenders, rows=25)
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    info = {
        "device": machine(device),
        "model": model_name(args),
        "pairs": args.pairs,
        "batch_pairs": args.batch_size,
        "steps": len(batches),
        "real_tokens": real_tokens,
        "padding_fraction": round(padding_fraction(batches), 4),
        "max_abs_reward_diff_packed": diffs["packed"],
        "max_abs_reward_diff_padding_free": diffs["padding_free"],
        "attention": diffs["attention"],
        "rewardlab_default_mode": default_mode(),
        "load_average": [round(load_before, 2), round(load_average(), 2)],
        "threads": torch.get_num_threads(),
    }
    mode = info["rewardlab_default_mode"]
    other = "padded" if mode == "padding_free" else "padding_free"
    side_by_side = {  # rewardlab's other mode against the limit, beside the default mode's `limit`
        f"rewardlab_{other}_median_seconds": median_of(runs[f"rewardlab_{other}"]),
        f"rewardlab_{other}_over_packed": median_of(runs[f"rewardlab_{other}"]) / median_of(runs["packed"]),
    }
    results = [
        comparison("limit", runs, f"rewardlab_{mode}", "packed", "lower", target=1.15, **side_by_side, **info),
        comparison("limit_padded", runs, "rewardlab_padded", "padded", "lower", **info),
        comparison("limit_padding_cost", runs, "padded", "packed", "lower", **info),
    ]
    header = (
        f"rewardlab step vs bare forward+backward, {info['model']} on {info['device']}; {info['steps']} steps of "
        f"{args.batch_size} pairs, {real_tokens} real tokens, padding {info['padding_fraction']:.1%} of the padded batch; "
        f"rewardlab's default mode: {mode}; rewards match rewardlab's padded ones to {diffs['packed']:.1e} (limit) and "
        f"{diffs['padding_free']:.1e} (rewardlab padding-free); load average {info['load_average']}"
    )
    emit(results, args.json, header)
    return results


if __name__ == "__main__":
    main()
