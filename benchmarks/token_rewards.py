"""Cost of R3HF token rewards: one forward pass vs sequence scoring alone, and vs scoring every prefix separately.

    python benchmarks/token_rewards.py            # a table
    python benchmarks/token_rewards.py --json     # one JSON object per comparison: benchmark, ratio, better, ...

Contenders run alternately (A, B, A, B, ...) after a warm-up, several repetitions each, and the median times are
compared, so drifts in machine load hit both alike. The model is the built-in tiny-llama reward model (random weights;
speed does not depend on them); the data are seeded prompt/response pairs with log-normally distributed lengths.

- token_rewards_vs_sequence: `score_completions(token_rewards="r3hf")` / `score_completions()` on the same rows.
  Target <= 1.1: token rewards come from the forward pass that scoring does anyway.
- token_rewards_vs_prefix_scoring: the one-pass r3hf / the naive alternative, where every prefix x y<=t is scored as its
  own sequence (same batch size) and consecutive scores are differenced.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

import torch

from rewardlab.data.templates import encode_prompt_response, pad_sequences
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.scoring import score_completions

VOCABULARY = (
    "the model reward policy answer question because however token value people write first then each good bad "
    "water light house river city small large quickly often never always think explain example result data"
)
WORDS = VOCABULARY.split()


def make_pairs(n: int, seed: int, prompt_words: float, response_words: float) -> list[tuple[str, str]]:
    """Prompt/response pairs whose lengths (in words) are log-normal around the given medians, like chat data."""
    rng = random.Random(seed)

    def text(median: float) -> str:
        length = max(1, int(rng.lognormvariate(0.0, 0.6) * median))
        return " ".join(rng.choice(WORDS) for _ in range(length))

    return [(text(prompt_words) + "?", " " + text(response_words) + ".") for _ in range(n)]


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


def alternate(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run the contenders in turn `repeats` times after one warm-up round; wall times in seconds."""
    for run in contenders.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def comparison(name: str, times: dict[str, list[float]], numerator: str, denominator: str, **extra) -> dict:
    top, bottom = statistics.median(times[numerator]), statistics.median(times[denominator])
    return {
        "benchmark": name,
        "ratio": top / bottom,
        "better": "lower",
        f"{numerator}_median_s": top,
        f"{denominator}_median_s": bottom,
        "repeats": len(times[numerator]),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=128, help="pairs scored in the one-pass comparison")
    parser.add_argument("--naive-rows", type=int, default=12, help="pairs in the prefix-scoring comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--prompt-words", type=float, default=25.0, help="median prompt length in words")
    parser.add_argument("--response-words", type=float, default=40.0, help="median response length in words")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object per comparison")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rm = build_reward_model("tiny-llama", seed=0).to(device).eval()
    pairs = make_pairs(args.rows, 0, args.prompt_words, args.response_words)
    tokens = [len(encode_prompt_response(rm.tokenizer, p, r).input_ids) for p, r in pairs]
    data = {"rows": len(pairs), "tokens_median": statistics.median(tokens), "tokens_max": max(tokens), "device": device}

    def run(method: str | None, rows: list[tuple[str, str]]) -> Callable[[], object]:
        return lambda: score_completions(rm, rows, token_rewards=method, batch_size=args.batch_size)

    times = alternate({"r3hf": run("r3hf", pairs), "sequence": run(None, pairs)}, args.repeats)
    results = [comparison("token_rewards_vs_sequence", times, "r3hf", "sequence", target=1.1, **data)]

    few = pairs[: args.naive_rows]
    one_pass = score_completions(rm, few, token_rewards="r3hf", batch_size=args.batch_size)
    naive = naive_prefix_r3hf(rm, few, args.batch_size)
    gap = max(abs(a - b) for r, n in zip(one_pass, naive, strict=True) for a, b in zip(r.token_rewards, n, strict=True))
    times = alternate(
        {"r3hf": run("r3hf", few), "prefix_scoring": lambda: naive_prefix_r3hf(rm, few, args.batch_size)},
        max(3, args.repeats // 2),
    )
    results.append(
        comparison("token_rewards_vs_prefix_scoring", times, "r3hf", "prefix_scoring", rows=len(few), max_abs_diff=gap)
    )

    if args.json:
        for result in results:
            print(json.dumps(result))
        return
    print(f"tiny-llama reward model on {device}; {data['rows']} rows, median {data['tokens_median']} tokens")
    for r in results:
        names = [k for k in r if k.endswith("_median_s")]
        timing = ", ".join(f"{k[: -len('_median_s')]} {r[k] * 1000:.1f} ms" for k in names)
        print(f"{r['benchmark']:<34} ratio {r['ratio']:.3f} (lower is better; {timing}; median of {r['repeats']})")
    print(f"one-pass r3hf vs per-prefix scoring: max |difference| {results[1]['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
