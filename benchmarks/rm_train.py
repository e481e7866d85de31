"""Reward-model training throughput: rewardlab's trainer vs TRL's RewardTrainer, same model, data, batch, steps and lr.

    python benchmarks/rm_train.py            # a table (about 3-4 minutes on 2 idle CPU cores)
    python benchmarks/rm_train.py --quick    # seconds
    python benchmarks/rm_train.py --json     # one JSON object per comparison

Each contender runs in its own subprocess (imports and allocator caches cannot help the other), alternately, `--repeats`
times; every run does a short warm-up training run, then the timed one. Both trainers train for exactly one epoch of the
same pairs (pairs = steps x batch), so they do the same forward/backward work on the same real tokens; what differs is how
they batch (padding) and their per-step overhead.
- rewardlab: `rewardlab.train_rm.train_reward_model` itself (defaults: length-grouped batches, chosen+rejected in one
  forward pass, linear head on the kept causal LM), vanilla BT, on the in-memory dataset; time = the trainer's own
  training-loop clock (`metrics["train"]["seconds"]`: first batch to last update; no eval, saving happens after it);
- trl: `trl.RewardTrainer` (its defaults: random batches) on `LlamaForSequenceClassification(num_labels=1)` loaded from the
  same saved tiny Llama with the same byte tokenizer; time = a callback's clock from `on_train_begin` to the last
  `on_step_end`. TRL's defaults that would change the work are aligned with rewardlab's: `gradient_checkpointing=False`
  (TRL defaults to True) and bf16 only where rewardlab also uses it (a bf16 GPU), and no eval / no saving / no logging
  integrations; its optimiser stays its default (fused AdamW);
- trl-grouped (with --trl-grouped): TRL with `train_sampling_strategy="group_by_length"` (a `length` column
  and `remove_unused_columns=False`), TRL's best effort against padding; its sampler's mega-batch is set to the 50 batches
  it uses on large datasets (on a benchmark-sized dataset transformers shrinks it to one batch: no grouping at all).
Same for all: the lr, constant schedule, no warm-up, grad clipping at 1.0, per-device batch, steps, seed.
Memory: on CPU, the subprocess's peak RSS (getrusage), also as the rise over its RSS after imports and data; on GPU,
torch.cuda.max_memory_allocated during the timed run.

Comparisons: `rm_train` = rewardlab pairs/s / TRL pairs/s (better: higher; target >= 1.3); `rm_train_peak_memory` =
rewardlab's peak memory / TRL's (lower); `rm_train_vs_trl_grouped` = rewardlab pairs/s / grouped TRL's (higher).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    MAX_LENGTH,
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
    peak_rss_mb,
    save_tiny_llama,
    setup_run,
)

CONTENDERS = ("rewardlab", "trl", "trl-grouped")
MEMORY_KEYS = ("peak_memory_mb", "memory_rise_mb")


def use_bf16(device: str) -> bool:
    """rewardlab's default: bf16 mixed precision only on a CUDA GPU that supports it."""
    return device == "cuda" and torch.cuda.is_bf16_supported()


def memory_mark(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def reset_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


# ----- rewardlab -----
def run_rewardlab(spec: dict, examples, out_dir: str) -> dict:
    from rewardlab.data.loading import PreferenceDataset
    from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

    def config(steps: int, name: str) -> RewardTrainingConfig:
        return RewardTrainingConfig(
            model=spec["model_dir"],
            train_data="<in-memory>",
            output_dir=str(Path(out_dir) / name),
            loss="bt",
            reg="none",
            lr_scheduler_type="constant",
            warmup_ratio=0.0,
            per_device_train_batch_size=spec["batch_size"],
            max_steps=steps,
            max_length=spec.get("max_length", MAX_LENGTH),
            logging_steps=10,
            seed=spec["seed"],
            bf16=use_bf16(spec["device"]),
            device=spec["device"],
            lora=spec.get("lora", False),
            learning_rate=spec["lr"],
            progress=False,
        )

    train_set = PreferenceDataset("benchmark", examples, "memory", {"read": len(examples), "loaded": len(examples)})
    datasets = {"train": train_set, "eval": {}}
    if spec["warmup_steps"]:
        train_reward_model(config(spec["warmup_steps"], "warmup"), datasets=datasets)
    reset_memory(spec["device"])
    metrics = train_reward_model(config(spec["steps"], "timed"), datasets=datasets)
    resolved = json.loads((Path(out_dir) / "timed" / "config.json").read_text())
    return {
        "seconds": metrics["train"]["seconds"],
        "steps": metrics["train"]["steps"],
        "real_tokens": epoch_tokens(spec, examples),
        "attention": resolved["kernels"]["attention"],
    }


def epoch_tokens(spec: dict, examples) -> int:
    """Real tokens in one epoch of the pairs as rewardlab encodes them (chosen + rejected)."""
    from rewardlab.data.pairs import encode_pairs
    from rewardlab.modeling.sources import load_tokenizer

    tokenizer = load_tokenizer(spec["model_dir"], progress=False)
    pairs, _ = encode_pairs(tokenizer, examples, spec.get("max_length", MAX_LENGTH), "keep_end")
    return sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in pairs)


# ----- TRL -----
@contextlib.contextmanager
def at_scale_length_grouping(mega_batch_batches: int = 50):
    """HF's LengthGroupedSampler as it behaves on a large dataset: sorted within mega-batches of 50 batches.

    Below 4 such mega-batches (1600 pairs at batch 8) transformers shrinks the mega-batch, down to ONE batch for a
    benchmark-sized dataset, which groups nothing; rewardlab's sampler always uses 50. Patched for this process only.
    """
    import transformers.trainer_pt_utils as trainer_utils

    original = trainer_utils.get_length_grouped_indices

    def grouped(lengths, batch_size, mega_batch_mult=None, generator=None):
        return original(lengths, batch_size, mega_batch_batches, generator)

    trainer_utils.get_length_grouped_indices = grouped
    try:
        yield
    finally:
        trainer_utils.get_length_grouped_indices = original


class RecordingCollator:
    """Wraps TRL's collator to count real and padded token positions (padding waste) without changing the batches."""

    def __init__(self, inner):
        self.inner, self.real, self.total = inner, 0, 0

    def __call__(self, examples):
        batch = self.inner(examples)
        self.real += int(batch["attention_mask"].sum())
        self.total += batch["attention_mask"].numel()
        return batch


def trl_reward_config(spec: dict, output_dir: str, steps: int, grouped: bool):
    """TRL's RewardConfig for one run: rewardlab's optimisation settings, nothing saved or logged, no checkpointing."""
    from trl import RewardConfig

    return RewardConfig(
        output_dir=output_dir,
        per_device_train_batch_size=spec["batch_size"],
        max_steps=steps,
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        max_length=spec.get("max_length", MAX_LENGTH),
        gradient_checkpointing=False,
        bf16=use_bf16(spec["device"]),
        use_cpu=spec["device"] == "cpu",
        logging_steps=10,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=spec["seed"],
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if grouped else "random",
        remove_unused_columns=not grouped,
    )


def trl_lora(spec: dict):
    """rewardlab's LoRA defaults (GRM's) for TRL when the spec asks for LoRA: r 32, alpha 64, dropout 0.05 on q/k/v/o."""
    if not spec.get("lora"):
        return None
    from peft import LoraConfig

    return LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="SEQ_CLS")  # fmt: skip


def run_trl(spec: dict, examples, out_dir: str, grouped: bool) -> dict:
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    hf_logging.set_verbosity_error()  # the "newly initialised score weights" warning is expected here
    disable_progress_bars()

    class LoopClock(TrainerCallback):
        """Wall time from the start of the training loop to the end of the last optimiser step."""

        def __init__(self):
            self.start = self.end = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                if spec["device"] == "cuda":
                    torch.cuda.synchronize()
                self.end = time.perf_counter()

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tokenizer.pad_token is None:  # as rewardlab does (and TRL's collator needs one)
        tokenizer.pad_token = tokenizer.eos_token
    rows = [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected} for ex in examples]
    if grouped:
        eos = 1  # TRL appends EOS to both responses
        for row in rows:
            row["length"] = max(len(tokenizer(row["prompt"] + row[k])["input_ids"]) for k in ("chosen", "rejected")) + eos
    dataset = Dataset.from_list(rows)

    def train(steps: int, name: str) -> tuple[LoopClock, RecordingCollator, RewardTrainer]:
        model = AutoModelForSequenceClassification.from_pretrained(spec["model_dir"], num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        args = trl_reward_config(spec, str(Path(out_dir) / name), steps, grouped)
        clock = LoopClock()
        collator = RecordingCollator(DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id))
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[clock],
            peft_config=trl_lora(spec),
        )
        with at_scale_length_grouping() if grouped else contextlib.nullcontext():
            trainer.train()
        return clock, collator, trainer

    if spec["warmup_steps"]:
        train(spec["warmup_steps"], "warmup")
    reset_memory(spec["device"])
    clock, collator, trainer = train(spec["steps"], "timed")
    return {
        "seconds": clock.end - clock.start,
        "steps": trainer.state.global_step,
        "padding_fraction": 1.0 - collator.real / collator.total,
        "real_tokens": collator.real,
        "attention": f"{trainer.model.config._attn_implementation} (padded)",
    }


# ----- one contender in one process -----
def run_contender(contender: str, spec: dict) -> dict:
    """Warm-up + timed run of one contender in this process; returns pairs/s, memory and the loop time."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    examples = make_preference_examples(spec["pairs"], seed=spec["seed"], max_tokens=spec["max_tokens"])
    base_memory = memory_mark(spec["device"])
    # The trainers print logs to stdout; keep stdout for the benchmark's own output.
    with tempfile.TemporaryDirectory() as out_dir, contextlib.redirect_stdout(sys.stderr):
        if contender == "rewardlab":
            result = run_rewardlab(spec, examples, out_dir)
        else:
            result = run_trl(spec, examples, out_dir, grouped=contender == "trl-grouped")
    peak = memory_mark(spec["device"])
    pairs_done = result["steps"] * spec["batch_size"]
    return {
        **result,
        "pairs_per_second": pairs_done / result["seconds"],
        "peak_memory_mb": peak,
        "memory_rise_mb": peak - base_memory if spec["device"] != "cuda" else peak,
    }


def run_in_subprocess(contender: str, spec: dict) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--spec", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{contender} worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimiser steps per run (= one epoch)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps of the untimed warm-up run")
    parser.add_argument("--trl-grouped", action="store_true", help="also run TRL with length-grouped batches")
    parser.add_argument("--inline", action="store_true", help="run contenders in this process (tests, debugging)")
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup_steps, args.batch_size, args.hidden_size, args.num_layers = 2, 1, 2, 32, 1
        args.max_tokens, args.repeats = 60, 1
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_contender(args.worker, json.loads(args.spec))))
        return []
    device = setup_run(args)
    load_before = load_average()
    contenders = ["rewardlab", "trl"] + (["trl-grouped"] if args.trl_grouped else [])
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "model_dir": save_tiny_llama(tmp, args.hidden_size, args.num_layers, vocab_size=args.vocab_size),
            "pairs": args.steps * args.batch_size,
            "seed": 42,
            "max_tokens": args.max_tokens,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "lr": args.lr,
            "device": device,
            "threads": args.threads,
        }
        run = run_contender if args.inline else run_in_subprocess
        runs = alternate({name: (lambda name=name: run(name, spec)) for name in contenders}, args.repeats, warmup=0)

    from rewardlab.modeling.tiny import build_byte_tokenizer

    examples = make_preference_examples(spec["pairs"], seed=spec["seed"], max_tokens=args.max_tokens)
    rewardlab_batches = pair_batches(build_byte_tokenizer(), examples, args.batch_size, seed=spec["seed"])
    info = {
        "device": machine(device),
        "model": model_name(args),
        "batch_pairs": args.batch_size,
        "steps": args.steps,
        "real_tokens": sum(int(b["attention_mask"].sum()) for b in rewardlab_batches),
        "trl_real_tokens": runs["trl"][0]["real_tokens"],
        "padding_fraction_rewardlab": round(padding_fraction(rewardlab_batches), 4),
        "padding_fraction_trl": round(runs["trl"][0]["padding_fraction"], 4),
        "load_average": [round(load_before, 2), round(load_average(), 2)],
        "threads": args.threads or torch.get_num_threads(),
        "isolation": "in-process" if args.inline else "subprocess per run",
    }
    memory = {f"{key}_{name}": round(median_of(runs[name], key), 1) for name in contenders for key in MEMORY_KEYS}
    results = [
        comparison("rm_train", runs, "rewardlab", "trl", "higher", key="pairs_per_second", target=1.3, **info, **memory),
        comparison("rm_train_peak_memory", runs, "rewardlab", "trl", "lower", key="peak_memory_mb", **info),
    ]
    if args.trl_grouped:
        results.append(
            comparison(
                "rm_train_vs_trl_grouped",
                runs,
                "rewardlab",
                "trl-grouped",
                "higher",
                key="pairs_per_second",
                padding_fraction_trl_grouped=round(runs["trl-grouped"][0]["padding_fraction"], 4),
                **info,
            )
        )
    header = (
        f"reward-model training, {info['model']} on {info['device']}; {args.steps} steps x "
        f"{args.batch_size} pairs, {info['real_tokens']} real tokens; padding rewardlab {info['padding_fraction_rewardlab']:.1%}"
        f", TRL {info['padding_fraction_trl']:.1%}; load average {info['load_average']}"
    )
    emit(results, args.json, header)
    return results


if __name__ == "__main__":
    main()
