"""Cost of R3HF token rewards: one forward pass vs sequence scoring alone, and vs scoring every prefix separately.

    python benchmarks/token_rewards.py            # a table
    python benchmarks/token_rewards.py --json     # one JSON object per comparison: benchmark, ratio, better, ...

Contenders run alternately (order rotated every repetition) after a warm-up, and the ratio of the median times is
reported with the range of per-repetition ratios (benchmarks/common.py). The model is the built-in tiny-llama reward
model (random weights; speed does not depend on them); the data are seeded prompt/response pairs with long-tailed
(log-normal) lengths, one token per byte.

- token_rewards_vs_sequence: `score_completions(token_rewards="r3hf")` / `score_completions()` on the same rows.
  Target <= 1.1: token rewards come from the forward pass that scoring does anyway.
- token_rewards_vs_prefix_scoring: the one-pass r3hf / the naive alternative, where every prefix x y<=t is scored as its
  own sequence (same batch size) and consecutive scores are differenced.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from rewardlab.data.templates import encode_prompt_response, pad_sequences
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.scoring import score_completions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    alternate,
    comparison,
    default_device,
    emit,
    load_average,
    long_tailed_length,
    machine,
    words_of_length,
)


def make_pairs(n: int, seed: int, prompt_tokens: float, response_tokens: float) -> list[tuple[str, str]]:
    """Prompt/response pairs with long-tailed lengths around the given medians (in bytes = tokens), like chat data."""
    import random

    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = words_of_length(rng, long_tailed_length(rng, prompt_tokens, 0.6, 8, 600)).strip() + "?"
        response = " " + words_of_length(rng, long_tailed_length(rng, response_tokens, 0.6, 4, 900)).strip() + "."
        pairs.append((prompt, response))
    return pairs


@torch.inference_mode()
def naive_prefix_r3hf(rm, pairs: list[tuple[str, str]], batch_size: int) -> list[list[float]]:
    """R3HF the slow way: each prefix of each sequence is a separate row; one score per row, then differences."""
    out = []
    pad_id = rm.tokenizer.pad_token_id
    for prompt, response in pairs:
        encoded = encode_prompt_response(rm.tokenizer, prompt, response)
        prefixes = [
            type(encoded)(encoded.input_ids[:end], encoded.response_start)
            for end in range(encoded.response_start, len(encoded.input_ids) + 1)
        ]
        values: list[float] = []
        for lo in range(0, len(prefixes), batch_size):
            ids, mask, _ = pad_sequences(prefixes[lo : lo + batch_size], pad_id)
            values += rm(ids.to(rm.device), mask.to(rm.device)).sequence_rewards.tolist()
        out.append([b - a for a, b in zip(values[:-1], values[1:], strict=True)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="pairs scored in the one-pass comparison")
    parser.add_argument("--naive-rows", type=int, default=4, help="pairs in the prefix-scoring comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=float, default=120.0, help="median prompt length (bytes = tokens)")
    parser.add_argument("--response-tokens", type=float, default=200.0, help="median response length")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison")
    args = parser.parse_args()

    device = args.device or default_device()
    rm = build_reward_model("tiny-llama", seed=0).to(device).eval()
    pairs = make_pairs(args.rows, 0, args.prompt_tokens, args.response_tokens)
    tokens = [len(encode_prompt_response(rm.tokenizer, p, r).input_ids) for p, r in pairs]
    context = {
        "rows": len(pairs),
        "tokens_median": statistics.median(tokens),
        "tokens_max": max(tokens),
        "device": machine(device),
        "load_average": load_average(),
    }

    def run(method: str | None, rows: list[tuple[str, str]]) -> Callable[[], None]:
        def score() -> None:  # returns None: `alternate` times it by wall clock
            score_completions(rm, rows, token_rewards=method, batch_size=args.batch_size)

        return score

    def prefix_scoring() -> None:
        naive_prefix_r3hf(rm, few, args.batch_size)

    runs = alternate({"r3hf": run("r3hf", pairs), "sequence": run(None, pairs)}, args.repeats)
    results = [comparison("token_rewards_vs_sequence", runs, "r3hf", "sequence", "lower", target=1.1, **context)]

    few = pairs[: args.naive_rows]
    one_pass = score_completions(rm, few, token_rewards="r3hf", batch_size=args.batch_size)
    naive = naive_prefix_r3hf(rm, few, args.batch_size)
    gap = max(abs(a - b) for r, n in zip(one_pass, naive, strict=True) for a, b in zip(r.token_rewards, n, strict=True))
    runs = alternate(
        {"r3hf": run("r3hf", few), "prefix_scoring": prefix_scoring},
        max(3, args.repeats // 2),
    )
    results.append(
        comparison("token_rewards_vs_prefix_scoring", runs, "r3hf", "prefix_scoring", "lower", rows=len(few), max_abs_diff=gap)
    )
    header = (
        f"tiny-llama reward model on {context['device']}; {context['rows']} rows, median {context['tokens_median']} "
        f"tokens; one-pass r3hf vs per-prefix scoring max |difference| {gap:.2e}"
    )
    emit(results, args.json, header)


if __name__ == "__main__":
    main()
