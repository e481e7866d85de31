"""Every speed comparison in one run, a process per contender: the suite a lent GPU runs in minutes.

    python benchmarks/suite.py --device cuda --json           # real shapes (Qwen2.5-0.5B, Llama-3.2-1B configs), < 8 min
    python benchmarks/suite.py --device cpu --quick --json    # the same code paths on tiny shapes, < 3 min on 2 cores
    python benchmarks/suite.py --device cpu --threads 1       # CPU shapes (as the single benchmarks), + rm_train_smollm2
    python benchmarks/suite.py --only rm_train,limit --output runs/suite   # a subset; rows.json + ratios.png

Comparisons (each contender is its own process, forked from a server that imported torch and transformers once, so
peak memory is its own and a crash or OOM costs only its row):
- `rm_train` (higher; target >= 1.5 on GPU): rewardlab's trainer (`train_reward_model`, vanilla BT, padding-free) vs
  TRL's RewardTrainer (defaults, gradient checkpointing off as rewardlab's), one epoch of the same pairs, tokens/s; also
  `rm_train_peak_memory` (lower; target <= 1);
- `limit` (lower; <= 1.15): rewardlab's training step vs a bare packed forward+backward with the SAME attention kernel;
- `grm_overhead_sft` / `_dpo_noref` / `_dpo` (lower; sft <= 1.15 at 151,936): a GRM step / a vanilla step, at the byte
  vocabulary (263) and at Qwen's 151,936 (rows carry `vocab_size`);
- `token_rewards_vs_sequence` (lower; <= 1.05): r3hf token rewards / sequence scoring, same rows;
- `ppo_step` (lower): a PPO step with r3hf / sparse rewards (same responses; extras split update and reward time);
- `rm_train_smollm2` (higher; full runs only): rewardlab vs TRL on the real SmolLM2-135M-Instruct with LoRA, on
  conversational pairs of HH-RLHF-like lengths, tokens/s.

Models: on CUDA, randomly initialised models with the configs of Qwen2.5-0.5B and Llama-3.2-1B (`suite_models.SHAPES`; saved in
bf16 like a real checkpoint, so every contender trains and scores in bf16); on CPU, small Llamas in fp32. Text: the
byte tokenizer (one token per byte; token ids below 263 whatever the vocabulary). Data: long-tailed lengths
(`common.make_preference_examples`), up to 2,048 tokens on CUDA.

Every row: `benchmark`, `ratio`, `better`, `target`, `device`, `attention` (the numerator's kernel:
segments | varlen | flex; the denominator's in `denominator_attention`), `dtype`, `tokens_per_second`,
`peak_memory_mb` (CUDA: max allocated; CPU: the process's peak RSS rise over its RSS when the contender started), `mfu`
(model FLOPs / time / the GPU's dense bf16 peak, where both are known; null on CPU), the same for the denominator, and
each contender's per-repetition seconds. Ratios are of medians over repetitions inside each process; `--rounds N` runs
every process N times in alternating order and reports the median over rounds (use it on a busy CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine  # noqa: E402
from suite_contenders import contender_process, spec_examples  # noqa: E402
from suite_models import BYTE_VOCAB, QWEN_VOCAB, SHAPES, save_model  # noqa: E402
from suite_report import TARGETS, emit, row, skipped_row  # noqa: E402

# ----- what each setting runs -----
PLANS: dict[str, dict] = {
    "cuda": {
        "rm_train": {"shape": "qwen2.5-0.5b", "pairs": 96, "batch": 8, "warmup_steps": 2, "repeats": 2},
        "limit": {"shape": "llama-3.2-1b", "pairs": 48, "batch": 8, "repeats": 3},
        "grm": {"shape": "qwen2.5-0.5b", "pairs": 32, "batch": 8, "repeats": 3},
        "tokens": {"shape": "llama-3.2-1b", "rows": 128, "batch": 16, "prompt": 300.0, "response": 500.0, "repeats": 3},
        "ppo": {"shape": "qwen2.5-0.5b", "batch": 16, "minibatch": 8, "new_tokens": 64, "repeats": 3},
        "data": {"max_tokens": 2048, "prompt_median": 250.0, "response_median": 250.0},
        "smollm2": {"pairs": 32, "batch": 4, "warmup_steps": 1, "repeats": 2},
    },
    "cpu": {
        "rm_train": {"shape": "cpu-small", "pairs": 48, "batch": 8, "warmup_steps": 1, "repeats": 2},
        "limit": {"shape": "cpu-small", "pairs": 32, "batch": 8, "repeats": 3},
        "grm": {"shape": "cpu-small", "pairs": 32, "batch": 8, "repeats": 3},
        "tokens": {"shape": "cpu-small", "rows": 64, "batch": 16, "prompt": 120.0, "response": 200.0, "repeats": 3},
        "ppo": {"shape": "cpu-small", "batch": 16, "minibatch": 8, "new_tokens": 48, "repeats": 3},
        "data": {"max_tokens": 400, "prompt_median": 40.0, "response_median": 60.0},
        "smollm2": {"pairs": 16, "batch": 4, "warmup_steps": 1, "repeats": 1},
    },
    "cpu-quick": {
        "rm_train": {"shape": "cpu-tiny", "pairs": 4, "batch": 2, "warmup_steps": 1, "repeats": 1},
        "limit": {"shape": "cpu-tiny", "pairs": 4, "batch": 2, "repeats": 2},
        "grm": {"shape": "cpu-tiny", "pairs": 4, "batch": 2, "repeats": 2},
        "tokens": {"shape": "cpu-tiny", "rows": 8, "batch": 4, "prompt": 30.0, "response": 40.0, "repeats": 2},
        "ppo": {"shape": "cpu-tiny", "batch": 4, "minibatch": 2, "new_tokens": 8, "repeats": 2},
        "data": {"max_tokens": 60, "prompt_median": 15.0, "response_median": 20.0},
    },
}
BENCHMARKS = ("rm_train", "limit", "grm_overhead", "token_rewards_vs_sequence", "ppo_step", "rm_train_smollm2")


# =====================================================================================================================
# the parent: one process per contender
class Runner:
    def __init__(self, isolate: bool, timeout: float):
        self.isolate, self.timeout = isolate, timeout
        if isolate:
            self.context = mp.get_context("forkserver")
            self.context.set_forkserver_preload(
                ["__main__", "torch", "transformers", "accelerate", "peft", "rewardlab.train_rm", "rewardlab.scoring",
                 "rewardlab.rl.ppo", "trl"]
            )  # fmt: skip

    def __call__(self, kind: str, contender: str, spec: dict) -> dict:
        if not self.isolate:
            parent, child = mp.Pipe()
            contender_process(kind, contender, spec, child)
            return parent.recv()
        parent, child = self.context.Pipe(duplex=False)
        process = self.context.Process(target=contender_process, args=(kind, contender, spec, child))
        process.start()
        child.close()
        try:
            if not parent.poll(self.timeout):
                process.kill()
                return {"error": f"timed out after {self.timeout:.0f} s"}
            return parent.recv()
        except EOFError:
            return {"error": f"the process died (exit code {process.exitcode}; out of memory?)"}
        finally:
            process.join(10)


def measure(runner: Runner, kind: str, contenders: list[str], spec: dict, rounds: int, progress) -> dict:
    """Every contender `rounds` times, the order rotating each round; per contender the round with the median time."""
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    for r in range(rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for contender in order:
            start = time.perf_counter()
            out = runner(kind, contender, spec)
            progress(f"{kind}:{contender}", time.perf_counter() - start, out.get("error"))
            if "error" in out:
                return {"error": f"{kind}:{contender}: {out['error']}", "traceback": out.get("traceback")}
            runs[contender].append(out["ok"])
    return {c: sorted(v, key=lambda x: x["seconds"])[len(v) // 2] | {"rounds_seconds": [x["seconds"] for x in v]}
            for c, v in runs.items()}  # fmt: skip


def smollm2_dir() -> tuple[str | None, str | None]:
    """The converted SmolLM2-135M-Instruct directory, or why it is not available (no download is ever attempted)."""
    try:
        from rewardlab.modeling.sources import convert_gguf, smollm2_gguf_path

        return str(convert_gguf(smollm2_gguf_path(), progress=False)), None
    except Exception as err:  # noqa: BLE001
        return None, str(err).splitlines()[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: the same code paths in seconds (CPU smoke run)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row on stdout")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per contender (0: torch's default)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--rounds", type=int, default=1, help="processes per contender, alternating order")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one contender process may take")
    parser.add_argument("--output", default=None, help="directory for rows.json and ratios.png")
    parser.add_argument("--inline", action="store_true", help="contenders in this process (tests; memory figures void)")
    args = parser.parse_args(argv)
    from rewardlab.runtime import resolve_device

    args.device = resolve_device(args.device).type
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: the suite runs on cpu or cuda")
    selected = set(BENCHMARKS if args.only is None else args.only.split(","))
    if selected - set(BENCHMARKS):
        parser.error(f"--only: unknown {', '.join(sorted(selected - set(BENCHMARKS)))} (choose from {', '.join(BENCHMARKS)})")
    args.selected = selected
    return args


def lengths_of(spec: dict) -> list[int]:
    """Real sequence lengths of the rm_train data as rewardlab tokenises it (for the FLOPs of one epoch)."""
    from rewardlab.data.pairs import encode_pairs
    from rewardlab.modeling.sources import load_tokenizer

    tokenizer = load_tokenizer(spec["model_dir"], progress=False)
    pairs, _ = encode_pairs(tokenizer, spec_examples(spec), spec["data"]["max_tokens"], "keep_end")
    return [len(s.input_ids) for p in pairs for s in (p.chosen, p.rejected)]


# =====================================================================================================================
# the comparisons
@dataclass
class Session:
    """What the comparisons of one suite run share: its settings, the contender runner, model files, the rows so far."""

    args: argparse.Namespace
    plan: dict
    context: dict
    runner: Runner
    root: Path  # where the model files go (a temporary directory)
    dtype: torch.dtype
    started: float
    rows: list[dict] = field(default_factory=list)

    def progress(self, name: str, seconds: float, error: str | None) -> None:
        status = f"FAILED: {error}" if error else "done"
        print(
            f"[suite {time.perf_counter() - self.started:6.0f} s] {name} {status} ({seconds:.0f} s)", file=sys.stderr, flush=True
        )

    def model_dir(self, shape: str, vocab: int | None = None) -> str:
        vocab = vocab or SHAPES[shape]["vocab_size"]  # one directory per (shape, vocabulary)
        return save_model(self.root / f"{shape}-{vocab}", shape, vocab, self.args.device, self.dtype)

    def spec(self, section: str, **more) -> dict:
        return {**self.plan[section], "device": self.args.device, "threads": self.args.threads, "data": self.plan["data"], **more}

    def add(self, kind: str, contenders: list[str], spec: dict, build: Callable[[dict], list[dict]]) -> None:
        """Measure `contenders` and add the rows `build` makes of their measurements (a skipped row, named after
        `build`, when a contender fails)."""
        if kind == "rm_train" and importlib.util.find_spec("trl") is None:
            self.rows.append(
                skipped_row(build.__name__, "TRL is not installed (pip install trl, or rewardlab[bench])", self.context)
            )
            return
        measured = measure(self.runner, kind, contenders, spec, self.args.rounds, self.progress)
        if "error" in measured:
            print(measured.get("traceback") or "", file=sys.stderr)
            self.rows.append(skipped_row(build.__name__, measured["error"], self.context))
            return
        self.rows.extend(build(measured))


def compare_rm_train(session: Session) -> None:
    s = session.spec("rm_train")
    s["model_dir"] = session.model_dir(s["shape"])
    session.context["model"] = f"{s['shape']} (random init)"
    s["lengths"] = lengths_of(s)

    def rm_train(m):
        ctx = {**session.context, "model": f"{s['shape']} (random init)"}
        extra = {
            "pairs": m["rewardlab"]["pairs"], "batch_pairs": s["batch"], "real_tokens": m["rewardlab"]["tokens"],
            "trl_real_tokens": m["trl"]["tokens"], "padding_fraction_trl": m["trl"].get("padding_fraction"),
        }  # fmt: skip
        return [
            row("rm_train", m, "rewardlab", "trl", "higher", "tokens_per_second", ctx, **extra),
            row("rm_train_peak_memory", m, "rewardlab", "trl", "lower", "peak_memory_mb", ctx, **extra),
        ]

    session.add("rm_train", ["rewardlab", "trl"], s, rm_train)


def compare_limit(session: Session) -> None:
    s = session.spec("limit")
    s["model_dir"] = session.model_dir(s["shape"])

    def limit(m):
        ctx = {**session.context, "model": f"{s['shape']} (random init)"}
        return [row("limit", m, "rewardlab", "bare", "lower", "seconds", ctx, steps=m["rewardlab"]["steps"])]

    session.add("limit", ["rewardlab", "bare"], s, limit)


def compare_grm_overhead(session: Session) -> None:
    for vocab in (BYTE_VOCAB, QWEN_VOCAB):
        s = session.spec("grm")
        s["model_dir"] = session.model_dir(s["shape"], vocab)

        def grm_overhead(m, vocab=vocab, shape=s["shape"]):
            ctx = {**session.context, "model": f"{shape} (random init), vocabulary {vocab}"}
            return [
                row(
                    f"grm_overhead_{reg.replace('-', '_')}",
                    m,
                    reg,
                    "none",
                    "lower",
                    "seconds",
                    ctx,
                    vocab_size=vocab,
                    logprobs=m[reg].get("logprobs"),
                    response_tokens=m[reg]["response_tokens"],
                    target=TARGETS.get("grm_overhead_sft") if reg == "sft" and vocab == QWEN_VOCAB else None,
                )  # fmt: skip
                for reg in ("sft", "dpo-noref", "dpo")
            ]

        session.add("grm", ["none", "sft", "dpo-noref", "dpo"], s, grm_overhead)


def compare_token_rewards(session: Session) -> None:
    s = session.spec("tokens")
    s["model_dir"] = session.model_dir(s["shape"])

    def token_rewards_vs_sequence(m):
        return [row("token_rewards_vs_sequence", m, "r3hf", "sequence", "lower", "seconds",
                    {**session.context, "model": f"{s['shape']} (random init)"}, rows=m["r3hf"]["rows"])]  # fmt: skip

    session.add("tokens", ["r3hf", "sequence"], s, token_rewards_vs_sequence)


def compare_ppo_step(session: Session) -> None:
    s = session.spec("ppo")
    s["model_dir"] = session.model_dir(s["shape"])

    def ppo_step(m):
        ctx = {**session.context, "model": f"{s['shape']} policy and reward model (random init)"}
        return [row("ppo_step", m, "r3hf", "sparse", "lower", "seconds", ctx,
                    update_ratio=m["r3hf"]["update_seconds"] / m["sparse"]["update_seconds"],
                    reward_ratio=m["r3hf"]["reward_seconds"] / m["sparse"]["reward_seconds"],
                    same_responses=m["r3hf"]["responses_hash"] == m["sparse"]["responses_hash"],
                    generated_tokens=m["r3hf"]["tokens"])]  # fmt: skip

    session.add("ppo", ["r3hf", "sparse"], s, ppo_step)


def compare_rm_train_smollm2(session: Session) -> None:
    if session.args.quick:
        return
    directory, reason = smollm2_dir()
    if directory is None:
        session.rows.append(skipped_row("rm_train_smollm2", reason, session.context))
        return
    s = session.spec("smollm2", model_dir=directory, lora=True, conversational=True,
                     data={**session.plan["data"], "max_tokens": 1024})  # fmt: skip

    def rm_train_smollm2(m):
        ctx = {**session.context, "model": "smollm2-135m (SmolLM2-135M-Instruct), LoRA r 32 on q/k/v/o"}
        return [row("rm_train_smollm2", m, "rewardlab", "trl", "higher", "tokens_per_second", ctx,
                    real_tokens=m["rewardlab"]["tokens"], trl_real_tokens=m["trl"]["tokens"],
                    pairs=m["rewardlab"]["pairs"], padding_fraction_trl=m["trl"].get("padding_fraction"),
                    data="conversational pairs, HH-RLHF-like lengths (synthetic words)")]  # fmt: skip

    session.add("rm_train", ["rewardlab", "trl"], s, rm_train_smollm2)


COMPARISONS: dict[str, Callable[[Session], None]] = {  # in BENCHMARKS order
    "rm_train": compare_rm_train, "limit": compare_limit, "grm_overhead": compare_grm_overhead,
    "token_rewards_vs_sequence": compare_token_rewards, "ppo_step": compare_ppo_step,
    "rm_train_smollm2": compare_rm_train_smollm2,
}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    plan_name = "cpu-quick" if args.quick and args.device == "cpu" else args.device
    plan = PLANS[plan_name]
    if args.quick and args.device == "cuda":  # a GPU smoke run: the CPU-quick sizes on the GPU
        plan = PLANS["cpu-quick"]
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    started, load_before = time.perf_counter(), load_average()
    context = {"device": machine(args.device), "device_kind": args.device, "threads": args.threads or torch.get_num_threads()}
    runner = Runner(isolate=not args.inline, timeout=args.timeout)
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(args, plan, context, runner, Path(tmp), dtype, started)
        for name in BENCHMARKS:
            if name in args.selected:
                COMPARISONS[name](session)
    rows = session.rows
    wall = time.perf_counter() - started
    for r in rows:
        r.setdefault("suite_seconds", round(wall, 1))
        r["load_average"] = [round(load_before, 2), round(load_average(), 2)]
    emit(rows, args)
    return rows


if __name__ == "__main__":
    main()
