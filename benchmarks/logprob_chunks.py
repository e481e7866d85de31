"""Memory and time of the GRM regularisers' LM-head log-probs: one pass vs chunks with recomputation.

    python benchmarks/logprob_chunks.py            # a table (about a minute on 2 CPU cores)
    python benchmarks/logprob_chunks.py --quick    # seconds
    python benchmarks/logprob_chunks.py --json     # one JSON object per comparison

The regularisers need log pi(y_t | ...) for every response token: the LM head over K response hidden states, (K, V)
logits, log-softmax, gather. With a large vocabulary these logits are the largest tensors of a training step. rewardlab
makes them in chunks of `logprob_chunk_size` tokens and checkpoints each chunk (logits freed after the forward,
recomputed in the backward). Contenders, each in its own subprocess so that peak memory is its own, run alternately:
- one-pass: `RewardModel._token_logprobs` with `kernels.logprob_chunk_tokens = 0`;
- chunked: the same with `kernels.logprob_chunk_tokens = --chunk` (rewardlab's default 2048).
Each measures forward + backward of sum(log-probs) w.r.t. the hidden states and the LM head's weight (as in training).
Memory: on CPU the rise of the subprocess's peak RSS over its RSS after building the inputs; on GPU the rise of
torch.cuda.max_memory_allocated.

Comparisons (better: lower): `logprob_chunks_peak_memory` = chunked / one-pass peak-memory rise; `logprob_chunks_time` =
chunked / one-pass time (the price: one more LM-head matmul per chunk in the backward).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, comparison, default_device, emit, load_average, machine, peak_rss_mb  # noqa: E402

CONTENDERS = ("one-pass", "chunked")


def run_contender(contender: str, spec: dict) -> dict:
    from rewardlab.modeling.reward_model import build_reward_model

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model = build_reward_model("tiny-llama").to(device)  # supplies the config the log-prob code reads (soft-capping)
    model.kernels.logprob_chunk_tokens = spec["chunk"] if contender == "chunked" else 0
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(spec["hidden"], spec["vocab"], bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) / spec["hidden"] ** 0.5)
    head = head.to(device)
    hidden = torch.randn(spec["tokens"], spec["hidden"], generator=g).to(device).requires_grad_(True)
    targets = torch.randint(spec["vocab"], (spec["tokens"],), generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = peak_rss_mb()
    start = time.perf_counter()
    model._token_logprobs(hidden, targets, head).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rise = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else peak_rss_mb() - base
    return {"seconds": seconds, "peak_memory_rise_mb": max(rise, 1e-3), "checksum": float(hidden.grad.abs().sum())}


def run_in_subprocess(contender: str, spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", contender, "--spec", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192, help="response tokens K (8 pairs x 2 x 512 by default)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--inline", action="store_true", help="run the contenders in this process (tests; memory figures void)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_contender(args.worker, json.loads(args.spec))))
        return []
    if args.quick:
        args.tokens, args.vocab_size, args.chunk, args.repeats = 512, 4000, 128, 1
    if args.threads:
        torch.set_num_threads(args.threads)  # as the workers do, so the reported machine line is theirs
    spec = {
        "tokens": args.tokens, "hidden": args.hidden_size, "vocab": args.vocab_size, "chunk": args.chunk,
        "threads": args.threads, "device": args.device or default_device(),
    }  # fmt: skip
    load_before = load_average()
    run = run_contender if args.inline else run_in_subprocess
    runs = alternate({name: (lambda name=name: run(name, spec)) for name in CONTENDERS}, args.repeats)
    checksums = {name: runs[name][0]["checksum"] for name in CONTENDERS}
    context = {
        **spec, "machine": machine(spec["device"]), "load_average": [round(load_before, 2), round(load_average(), 2)],
        "same_gradients": abs(checksums["chunked"] - checksums["one-pass"]) <= 1e-4 * abs(checksums["one-pass"]),
    }  # fmt: skip
    results = [
        comparison("logprob_chunks_peak_memory", runs, "chunked", "one-pass", "lower", key="peak_memory_rise_mb", **context),
        comparison("logprob_chunks_time", runs, "chunked", "one-pass", "lower", **context),
    ]
    header = (
        f"LM-head log-probs of {args.tokens} response tokens, hidden {args.hidden_size}, vocab {args.vocab_size}, chunks of "
        f"{args.chunk}; {context['machine']}; load average {context['load_average']}; same gradients: "
        f"{context['same_gradients']}"
    )
    emit(results, args.json, header)
    return results


if __name__ == "__main__":
    main()
