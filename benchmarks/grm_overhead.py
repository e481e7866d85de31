"""Cost of GRM's text-generation regularisers: training-step time with `sft`, `dpo`, `dpo-noref` relative to vanilla BT.

    python benchmarks/grm_overhead.py            # a table (about 3 minutes on 2 idle CPU cores)
    python benchmarks/grm_overhead.py --quick    # seconds
    python benchmarks/grm_overhead.py --json     # one JSON object per comparison
    python benchmarks/grm_overhead.py --no-padding-free   # padded batches (default: rewardlab's default, padding-free)

Every contender is a reward model built by `build_reward_model` exactly as `train_reward_model` builds it for that
regulariser (full fine-tuning; `dpo` keeps a frozen reference copy, `none` freezes the unused LM head), with its own AdamW,
and runs the trainer's step (`rewardlab.objective.compute_loss`, backward, clip, AdamW) over the same length-grouped batches,
padding-free unless `--no-padding-free` (as the trainer's `padding_free`).
Contenders alternate, the order rotating every repetition; time = one pass over all batches.

Comparisons (better: lower): `grm_overhead_sft` (target <= 1.15), `grm_overhead_dpo_noref` (target <= 1.2),
`grm_overhead_dpo` (no target: it adds a reference forward pass), each = regularised step time / vanilla step time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_common_arguments,
    alternate,
    comparison,
    emit,
    load_average,
    machine,
    make_preference_examples,
    model_name,
    padding_fraction,
    pair_batches,
    rewardlab_step,
    save_tiny_llama,
    setup_run,
    synchronize,
    trainable_parameters,
)

REGULARIZERS = ("none", "sft", "dpo-noref", "dpo")
TARGETS = {"sft": 1.15, "dpo-noref": 1.2}


def build_contender(model_dir: str, reg: str, batches: list[dict], device: str, lr: float, padding_free: bool):
    """A step runner for one regulariser, set up as `train_reward_model` sets it up."""
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.train_rm import RewardTrainingConfig

    cfg = RewardTrainingConfig(model=model_dir, train_data="<memory>", reg=reg, learning_rate=lr, padding_free=padding_free)
    model = build_reward_model(model_dir, reference_copy=reg == "dpo", seed=cfg.seed)
    if reg == "none":
        model.freeze_lm_head()  # as the trainer does: unused without a regulariser (unless tied to the embedding)
    model.to(device).train()
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=lr, weight_decay=cfg.weight_decay)

    def run() -> None:
        for batch in batches:
            rewardlab_step(model, optimizer, batch, cfg)
        synchronize(device)

    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=32, help="preference pairs; every repetition runs them all")
    parser.add_argument(
        "--padding-free", action=argparse.BooleanOptionalAction, default=None, help="packed batches (default: rewardlab's)"
    )
    add_common_arguments(parser, repeats=5)
    args = parser.parse_args(argv)
    if args.padding_free is None:
        from rewardlab.train_rm import RewardTrainingConfig

        args.padding_free = RewardTrainingConfig.padding_free
    if args.quick:
        args.pairs, args.batch_size, args.hidden_size, args.num_layers, args.max_tokens, args.repeats = 4, 2, 32, 1, 60, 1
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = setup_run(args)
    load_before = load_average()
    from rewardlab.modeling.tiny import build_byte_tokenizer

    examples = make_preference_examples(args.pairs, seed=0, max_tokens=args.max_tokens)
    batches = pair_batches(build_byte_tokenizer(), examples, args.batch_size)
    on_device = [{k: v.to(device) for k, v in b.items()} for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_llama(tmp, args.hidden_size, args.num_layers, vocab_size=args.vocab_size)
        contenders = {reg: build_contender(model_dir, reg, on_device, device, args.lr, args.padding_free) for reg in REGULARIZERS}
        runs = alternate(contenders, args.repeats, warmup=1)
    response_tokens = sum(int(b["response_mask"].sum()) for b in batches)
    info = {
        "device": machine(device),
        "model": model_name(args),
        "pairs": args.pairs,
        "batch_pairs": args.batch_size,
        "steps": len(batches),
        "real_tokens": sum(int(b["attention_mask"].sum()) for b in batches),
        "response_tokens": response_tokens,
        "padding_fraction": round(padding_fraction(batches), 4),
        "padding_free": args.padding_free,
        "load_average": [round(load_before, 2), round(load_average(), 2)],
        "threads": torch.get_num_threads(),
    }
    results = [
        comparison(f"grm_overhead_{reg.replace('-', '_')}", runs, reg, "none", "lower", target=TARGETS.get(reg), **info)
        for reg in ("sft", "dpo-noref", "dpo")
    ]
    header = (
        f"GRM regulariser step time vs vanilla BT, {info['model']} on {info['device']}; {info['steps']} steps of "
        f"{args.batch_size} pairs, {info['real_tokens']} real tokens ({response_tokens} response), "
        f"{'padding-free' if args.padding_free else 'padded'}; "
        f"load average {info['load_average']}"
    )
    emit(results, args.json, header)
    return results


if __name__ == "__main__":
    main()
