"""Shared harness for the speed benchmarks: data, model, alternating timer, the trainer's step, and output.

Conventions every benchmark follows (issue 6):
- contenders run alternately, in an order rotated every repetition (A B, B A, ...), after a warm-up, so drifts in machine
  load hit all of them alike; a comparison reports the ratio of MEDIANS and, as a noise gauge, the range of the
  per-repetition ratios;
- `--json` prints one JSON object per comparison with `benchmark`, `ratio`, `better` ("higher" or "lower") plus extras;
  without it, a table.

The data are synthetic preference pairs whose token lengths are long-tailed (log-normal, clipped to 20..400 tokens with the
byte tokenizer: one token per byte), because padding waste, and so most of the difference between trainers, only shows on
variable-length data. Speed does not depend on the weights, so the model is a seeded random tiny Llama of a chosen size.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rewardlab.data.pairs import PairCollator, encode_pairs, length_grouped_batches
from rewardlab.data.types import PreferenceExample

# A model where the matrix products dominate per-call overhead, yet a step takes about a second on 2 CPU cores.
DEFAULT_HIDDEN = 256
DEFAULT_LAYERS = 4
DEFAULT_HEADS = 4
MAX_LENGTH = 512  # above the longest generated sequence: nothing is truncated or filtered by either trainer

VOCABULARY = (
    "the model reward policy answer question because however token value people write first then each good bad water "
    "light house river city small large quickly often never always think explain example result data train step loss"
)
WORDS = VOCABULARY.split()


# ----- data -----
def long_tailed_length(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    """A log-normal length (most short, a few long, as in chat data), clipped to [low, high]."""
    return int(min(high, max(low, round(median * rng.lognormvariate(0.0, sigma)))))


def words_of_length(rng: random.Random, n_chars: int) -> str:
    """Random words cut to exactly `n_chars` characters (= tokens for the byte tokenizer; all ASCII)."""
    text = ""
    while len(text) < n_chars:
        text += rng.choice(WORDS) + " "
    return text[:n_chars]


def make_preference_examples(
    n: int,
    seed: int = 0,
    min_tokens: int = 20,
    max_tokens: int = 400,
    prompt_median: float = 40.0,
    response_median: float = 60.0,
    sigma: float = 0.8,
) -> list[PreferenceExample]:
    """Preference pairs whose prompt+response lengths (tokens, EOS included) are long-tailed within [min_tokens, max_tokens].

    Chosen and rejected get independent lengths, as in real data, so a pair's two rows differ in length too.
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        prompt_len = long_tailed_length(rng, prompt_median, sigma, 4, max_tokens // 2)

        def response(prompt_len: int = prompt_len) -> str:
            # -1 for the EOS the trainers append; at least 1 response character
            total = long_tailed_length(rng, prompt_len + response_median, sigma, max(min_tokens, prompt_len + 2), max_tokens)
            return " " + words_of_length(rng, total - prompt_len - 2)

        examples.append(PreferenceExample(prompt=words_of_length(rng, prompt_len), chosen=response(), rejected=response()))
    return examples


def pair_batches(
    tokenizer, examples: list[PreferenceExample], batch_size: int, seed: int = 0, max_length: int = MAX_LENGTH
) -> list[dict[str, torch.Tensor]]:
    """The batches rewardlab's trainer would make by default: tokenised, length-grouped, chosen+rejected as one (2B, T)."""
    pairs, _ = encode_pairs(tokenizer, examples, max_length, "keep_end")
    collate = PairCollator(tokenizer.pad_token_id)
    return [collate([pairs[i] for i in batch]) for batch in length_grouped_batches([p.length for p in pairs], batch_size, seed)]


def padding_fraction(batches: list[dict[str, torch.Tensor]]) -> float:
    """Share of the (rows x width) positions that are padding, over all batches."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    return 1.0 - real / total


# ----- model -----
def save_tiny_llama(
    directory: str | Path, hidden_size: int, num_layers: int, num_heads: int = DEFAULT_HEADS, vocab_size: int | None = None
) -> str:
    """Save a seeded tiny Llama (causal LM + byte tokenizer) of the given size, so trainers load it by path.

    `vocab_size` above the byte tokenizer's 263 enlarges the embeddings and LM head (the extra ids are never produced):
    the LM-head cost of the sft/dpo regularisers then resembles a real model's (32k-256k vocabularies).
    """
    from rewardlab.modeling.tiny import build_tiny_llama

    model, tokenizer = build_tiny_llama(seed=0, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads)
    if vocab_size is not None and vocab_size > len(tokenizer):
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


# ----- the trainer's step -----
def rewardlab_step(model, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], cfg) -> None:
    """One optimiser update exactly as `train_reward_model` does it (no accelerate wrapper: one process, no mixed precision)."""
    from rewardlab.objective import compute_loss

    stats = compute_loss(model, batch, cfg, cfg.padding_free)
    stats["loss"].backward()
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ----- timing -----
def alternate(
    contenders: dict[str, Callable[[], dict | None]], repeats: int, warmup: int = 1
) -> dict[str, list[dict[str, float]]]:
    """Run every contender `warmup` times (discarded), then `repeats` rounds, rotating the order each round.

    A contender returns its own measurements (a dict with at least `seconds`), or anything else to be timed by wall clock here.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            measured = contenders[name]()
            wall = time.perf_counter() - start
            results[name].append(measured if isinstance(measured, dict) else {"seconds": wall})
    return results


def median_of(runs: list[dict[str, float]], key: str = "seconds") -> float:
    return statistics.median(run[key] for run in runs)


def comparison(
    benchmark: str,
    runs: dict[str, list[dict[str, float]]],
    numerator: str,
    denominator: str,
    better: str,
    key: str = "seconds",
    **extra,
) -> dict:
    """One comparison: ratio of the medians of `key`, with the spread of the per-repetition ratios as a noise gauge."""
    top, bottom = median_of(runs[numerator], key), median_of(runs[denominator], key)
    paired = [a[key] / b[key] for a, b in zip(runs[numerator], runs[denominator], strict=True)]
    return {
        "benchmark": benchmark,
        "ratio": top / bottom,
        "better": better,
        "numerator": numerator,
        "denominator": denominator,
        f"{numerator}_median_{key}": top,
        f"{denominator}_median_{key}": bottom,
        "paired_ratio_min": min(paired),
        "paired_ratio_max": max(paired),
        "paired_ratios": [round(r, 4) for r in paired],
        "repeats": len(paired),
        **extra,
    }


# ----- environment -----
def load_average() -> float:
    return os.getloadavg()[0]


def warn_if_busy(threads: int) -> None:
    """Several torch threads on a busy machine wait on each other at every operator: timings measure contention, not code."""
    cores = os.cpu_count() or 1
    if threads != 1 and load_average() > cores - 0.5:
        print(
            f"warning: load average {load_average():.1f} on {cores} cores; multi-threaded timings will mostly measure "
            "thread contention. Consider --threads 1.",
            file=sys.stderr,
        )


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def default_device() -> str:
    from rewardlab.runtime import resolve_device

    return str(resolve_device())


# ----- command line -----
def add_common_arguments(parser, repeats: int) -> None:
    """The options every benchmark shares: model size, data, repetitions, threads, device, output."""
    parser.add_argument("--hidden-size", type=int, default=DEFAULT_HIDDEN)
    parser.add_argument("--num-layers", type=int, default=DEFAULT_LAYERS)
    parser.add_argument("--vocab-size", type=int, default=None, help="enlarge the LM head to this vocabulary (default 263)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-tokens", type=int, default=400, help="longest sequence (prompt + response)")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="a tiny setting that runs in seconds (smoke test)")
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison")


def setup_run(args) -> str:
    """Apply --threads, silence download-style progress bars, warn on a busy machine; returns the device."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    if device == "cpu":
        warn_if_busy(torch.get_num_threads())
    return device


def model_name(args) -> str:
    vocab = f", vocab {args.vocab_size}" if args.vocab_size else ""
    return f"tiny-llama hidden {args.hidden_size}, {args.num_layers} layers{vocab}"


# ----- output -----
def emit(results: list[dict], as_json: bool, header: str = "") -> None:
    """JSON lines, or a table: benchmark, ratio, which way is better, target, and the numbers behind the ratio."""
    if as_json:
        for result in results:
            print(json.dumps(result))
        return
    if header:
        print(header)
    rows = []
    for r in results:
        medians = ", ".join(f"{k.replace('_median_', ' ')} {fmt(v)}" for k, v in r.items() if "_median_" in k)
        target = r.get("target")
        target_text = "" if target is None else (f">= {target}" if r["better"] == "higher" else f"<= {target}")
        spread = f"{r['paired_ratio_min']:.3f}..{r['paired_ratio_max']:.3f}" if "paired_ratio_min" in r else ""
        rows.append([r["benchmark"], f"{r['ratio']:.3f}", r["better"], target_text, spread, medians])
    print_table(["benchmark", "ratio", "better", "target", "per-rep range", "medians"], rows)


def fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for i, row in enumerate([header, *rows]):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
