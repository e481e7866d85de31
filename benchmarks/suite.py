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

Models: on CUDA, randomly initialised models with the configs of Qwen2.5-0.5B and Llama-3.2-1B written below (saved in
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
import contextlib
import importlib.util
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    load_average,
    long_tailed_length,
    machine,
    make_preference_examples,
    pair_batches,
    peak_rss_mb,
    print_table,
    words_of_length,
)

# ----- shapes (configs as published; weights random; RoPE scaling omitted: it changes no cost) -----
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
    },
    "llama-3.2-1b": {
        "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
        "tie_word_embeddings": True, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    },
    "cpu-small": {  # the single CPU benchmarks' model (benchmarks/README.md)
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 263, "tie_word_embeddings": False,
        "max_position_embeddings": 2048,
    },
    "cpu-tiny": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 263, "tie_word_embeddings": False,
        "max_position_embeddings": 2048,
    },
}  # fmt: skip
BYTE_VOCAB = 263  # the byte tokenizer's size
QWEN_VOCAB = 151936
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense, SXM; MFU only where the GPU is listed

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
TARGETS = {
    "rm_train": 1.5, "rm_train_peak_memory": 1.0, "limit": 1.15, "token_rewards_vs_sequence": 1.05,
    "grm_overhead_sft": 1.15,
}  # fmt: skip


# =====================================================================================================================
# model files
def model_config(shape: str, vocab_size: int | None = None):
    from transformers import AutoConfig

    fields = dict(SHAPES[shape])
    kind = fields.pop("model_type")
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return AutoConfig.for_model(kind, pad_token_id=0, bos_token_id=1, eos_token_id=2, **fields)


def save_model(directory: Path, shape: str, vocab_size: int | None, device: str, dtype: torch.dtype) -> str:
    """A seeded random causal LM of a shape, with the byte tokenizer, saved like a hub checkpoint (in `dtype`)."""
    from transformers import AutoModelForCausalLM

    from rewardlab.modeling.tiny import build_byte_tokenizer

    if (directory / "config.json").exists():
        return str(directory)
    config = model_config(shape, vocab_size)
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1B parameters on the GPU takes a moment, on one CPU core a while
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 2
    model.save_pretrained(directory)
    build_byte_tokenizer(model_max_length=config.max_position_embeddings).save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return str(directory)


def body_parameters(config) -> int:
    """Parameters of the decoder's matrix products (no embeddings, no LM head): what 6 N per token counts."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    skip = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def training_flops(config, lengths: list[int], lm_head_tokens: int = 0, forward_only: bool = False) -> float:
    """Model FLOPs of a forward+backward (3x the forward) over sequences of these lengths, no padding counted:
    6 N n for the matrix products + 6 L d n^2 for causal attention (QK^T and AV, half the square), + 6 H V per token
    through the LM head (GRM's regularisers). Forward only: a third."""
    n_body = body_parameters(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = config.num_hidden_layers * heads * head_dim
    forward = sum(2 * n_body * n + 2 * attention * n * n for n in lengths)
    forward += 2 * config.hidden_size * config.vocab_size * lm_head_tokens
    return forward if forward_only else 3 * forward


# =====================================================================================================================
# measuring inside a contender process
def device_peak_tflops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


class Meter:
    """Peak memory of this process from now on: CUDA max allocated, or on CPU the RSS peak's rise over the RSS now."""

    def __init__(self, device: str):
        self.device = device
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.base = rss_mb() if device != "cuda" else 0.0

    def peak_mb(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return max(peak_rss_mb() - self.base, 0.0)


def rss_mb() -> float:
    """Resident memory now (Linux /proc; elsewhere the peak, which makes the rise a lower bound)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(run, repeats: int, warmup: int, device: str) -> list[float]:
    for _ in range(warmup):
        run()
    sync(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def result(seconds: list[float], tokens: int, meter: Meter, attention: str, dtype: str, flops: float | None, **extra):
    median = statistics.median(seconds)
    peak = device_peak_tflops(meter.device)
    return {
        "seconds": median, "seconds_all": [round(s, 5) for s in seconds], "tokens": tokens,
        "tokens_per_second": tokens / median, "peak_memory_mb": round(meter.peak_mb(), 1), "attention": attention,
        "dtype": dtype, "flops": flops, "mfu": None if flops is None or peak is None else flops / median / (peak * 1e12),
        **extra,
    }  # fmt: skip


# =====================================================================================================================
# contenders
def batches_for(spec: dict, tokenizer) -> list[dict]:
    data = spec["data"]
    examples = make_preference_examples(
        spec["pairs"], seed=0, max_tokens=data["max_tokens"], prompt_median=data["prompt_median"],
        response_median=data["response_median"],
    )  # fmt: skip
    return pair_batches(tokenizer, examples, spec["batch"], max_length=data["max_tokens"])


def real_lengths(batches: list[dict]) -> list[int]:
    return [int(n) for b in batches for n in b["attention_mask"].sum(dim=1)]


def run_rm_train(spec: dict, contender: str) -> dict:
    """rm_train / rm_train_smollm2: a warm-up run, then `repeats` one-epoch runs, each timed by its trainer's loop clock."""
    import rm_train

    device = spec["device"]
    examples = spec_examples(spec)
    bench_spec = {
        "model_dir": spec["model_dir"], "seed": 42, "batch_size": spec["batch"], "lr": 1e-5, "device": device,
        "max_length": spec["data"]["max_tokens"], "lora": spec.get("lora", False),
        "steps": len(examples) // spec["batch"], "warmup_steps": spec["warmup_steps"],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as out_dir, contextlib.redirect_stdout(sys.stderr):
        meter = Meter(device)
        runs = []
        for repeat in range(spec["repeats"]):
            step_spec = bench_spec if repeat == 0 else {**bench_spec, "warmup_steps": 0}
            if contender == "rewardlab":
                runs.append(run_rewardlab_epoch(rm_train, step_spec, examples, out_dir, warm=repeat == 0))
            else:
                runs.append(rm_train.run_trl(step_spec, examples, out_dir, grouped=False))
    tokens = runs[0]["real_tokens"]
    lengths = spec.get("lengths")
    flops = training_flops(model_config_of(spec), lengths) if lengths and not spec.get("lora") else None
    extra = {"steps": runs[0]["steps"], "pairs": len(examples)}
    if "padding_fraction" in runs[0]:
        extra["padding_fraction"] = round(runs[0]["padding_fraction"], 4)
    dtype = "bf16" if rm_train.use_bf16(device) else "fp32"
    return result([r["seconds"] for r in runs], tokens, meter, runs[0]["attention"], dtype, flops, **extra)


def run_rewardlab_epoch(rm_train, spec: dict, examples, out_dir: str, warm: bool) -> dict:
    """rm_train.run_rewardlab: its warm-up run on the first repetition only (warmup_steps 0 skips it)."""
    return rm_train.run_rewardlab(spec if warm else {**spec, "warmup_steps": 0}, examples, out_dir)


def spec_examples(spec: dict):
    if spec.get("conversational"):
        return conversational_examples(spec["pairs"], seed=0)
    data = spec["data"]
    return make_preference_examples(
        spec["pairs"], seed=42, max_tokens=data["max_tokens"], prompt_median=data["prompt_median"],
        response_median=data["response_median"],
    )  # fmt: skip


def conversational_examples(n: int, seed: int):
    """Chat pairs with HH-RLHF-like lengths in a BPE tokenizer (about 4 characters a token): one or two user turns
    (median ~90 tokens of prompt), assistant answers of median ~60 tokens, long-tailed (log-normal)."""
    import random

    from rewardlab.data.types import PreferenceExample

    rng = random.Random(seed)

    def text(median_tokens: float, cap: int) -> str:
        return words_of_length(rng, 4 * long_tailed_length(rng, median_tokens, 0.7, 3, cap)).strip().capitalize() + "."

    examples = []
    for _ in range(n):
        prompt = [{"role": "user", "content": text(45, 300)}]
        if rng.random() < 0.5:  # a second turn, as in HH-RLHF's multi-turn dialogues
            prompt += [{"role": "assistant", "content": text(40, 200)}, {"role": "user", "content": text(25, 200)}]
        chosen, rejected = ([{"role": "assistant", "content": text(60, 400)}] for _ in range(2))
        examples.append(PreferenceExample(prompt=prompt, chosen=chosen, rejected=rejected))
    return examples


def model_config_of(spec: dict):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec["model_dir"])


def run_limit(spec: dict, contender: str) -> dict:
    """limit: rewardlab's trainer step (padding-free) or the bare packed step, same kernel, same batches."""
    import limit
    from common import rewardlab_step, trainable_parameters
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.train_rm import RewardTrainingConfig, freeze_unused_lm_head

    device = spec["device"]
    cfg = RewardTrainingConfig(model=spec["model_dir"], train_data="<memory>", reg="none", learning_rate=1e-5)
    meter = Meter(device)
    model = build_reward_model(spec["model_dir"], seed=cfg.seed)
    freeze_unused_lm_head(model)  # as the trainer does without a regulariser (a tied head is the embedding: trains)
    model.to(device).train()
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=cfg.learning_rate)
    batches = [limit.to_device(b, device) for b in batches_for(spec, model.tokenizer)]
    kind = model.attention_kernel(training=True)
    if contender == "rewardlab":

        def run() -> None:
            for batch in batches:
                rewardlab_step(model, optimizer, batch, cfg)
    else:
        packed = [limit.to_device(limit.pack_batch(b), device) for b in batches]
        model.causal_lm.set_attn_implementation(limit.IMPLEMENTATION_OF[kind])

        def run() -> None:
            for p in packed:
                limit.bare_step(limit.packed_rewards(model, p, kind), p["n_pairs"], model, optimizer, cfg.max_grad_norm)

    seconds = timed(run, spec["repeats"], 1, device)
    lengths = real_lengths(batches)
    flops = training_flops(model.causal_lm.config, lengths)
    dtype = dtype_name(model.compute_dtype())
    return result(seconds, sum(lengths), meter, kind, dtype, flops, steps=len(batches))


def run_grm(spec: dict, contender: str) -> dict:
    """grm_overhead: the trainer's step with regulariser `contender` (none = vanilla BT), built as train-rm builds it."""
    import grm_overhead
    from rewardlab.modeling.sources import load_tokenizer

    device = spec["device"]
    meter = Meter(device)
    tokenizer = load_tokenizer(spec["model_dir"], progress=False)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches_for(spec, tokenizer)]
    run = grm_overhead.build_contender(spec["model_dir"], contender, batches, device, 1e-5, padding_free=True)
    seconds = timed(run, spec["repeats"], 1, device)
    lengths = real_lengths(batches)
    n_pairs = sum(int(b["margin"].shape[0]) for b in batches)
    responses = [int(b["response_mask"][: b["margin"].shape[0]].sum()) for b in batches]  # chosen rows come first
    chosen = sum(responses)
    all_responses = sum(int(b["response_mask"].sum()) for b in batches)
    head_tokens = {"none": 0, "sft": chosen, "dpo-noref": all_responses, "dpo": all_responses}[contender]
    config = model_config_of(spec)
    flops = training_flops(config, lengths, lm_head_tokens=head_tokens)
    if contender == "dpo":  # + the reference model's forward
        flops += training_flops(config, lengths, lm_head_tokens=all_responses, forward_only=True)
    from rewardlab.modeling import reward_model as rm_module

    head = torch.nn.Linear(config.hidden_size, 1)  # only the log-prob path's name matters here
    logprobs = "chunked" if contender == "none" or rm_module.liger_unavailable_reason(head, torch.device(device)) else "liger"
    dtype = weights_dtype(config)  # no autocast in the trainer's bare step: the weights' dtype is the compute dtype
    attention = attention_of(spec, dtype, training=True)
    return result(seconds, sum(lengths), meter, attention, dtype_name(dtype), flops, pairs=n_pairs, response_tokens=all_responses,
                  logprobs=logprobs if contender != "none" else None)  # fmt: skip


def weights_dtype(config) -> torch.dtype:
    """The dtype a saved model loads in (transformers loads the saved dtype)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def attention_of(spec: dict, dtype: torch.dtype, training: bool) -> str:
    from rewardlab.packing import select_packed_attention

    return select_packed_attention(model_config_of(spec), spec["device"], dtype, training=training)


def run_tokens(spec: dict, contender: str) -> dict:
    """token_rewards_vs_sequence: score the same rows with r3hf token rewards, or sequence rewards only."""
    import token_rewards
    from rewardlab.data.templates import encode_prompt_response
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.scoring import score_completions

    device = spec["device"]
    meter = Meter(device)
    rm = build_reward_model(spec["model_dir"], seed=0).to(device).eval()
    pairs = token_rewards.make_pairs(spec["rows"], 0, spec["prompt"], spec["response"])
    method = "r3hf" if contender == "r3hf" else None

    def run() -> None:
        score_completions(rm, pairs, token_rewards=method, batch_size=spec["batch"])

    seconds = timed(run, spec["repeats"], 1, device)
    lengths = [len(encode_prompt_response(rm.tokenizer, p, r).input_ids) for p, r in pairs]
    with torch.no_grad():
        kind = rm.attention_kernel(training=False)
    flops = training_flops(rm.causal_lm.config, lengths, forward_only=True)
    return result(seconds, sum(lengths), meter, kind, dtype_name(rm.compute_dtype()), flops, rows=len(pairs))


def run_ppo(spec: dict, contender: str) -> dict:
    """ppo_step: one PPO step (rollout + update) with r3hf or sparse token rewards, from the same saved state."""
    import copy

    from transformers import AutoModelForCausalLM

    from rewardlab.modeling.reward_model import RewardHead, RewardModel, RewardModelConfig
    from rewardlab.modeling.sources import load_tokenizer
    from rewardlab.rl.ppo import PPOConfig, PPOTrainer
    from rewardlab.tasks.world import make_prompts

    device = spec["device"]
    meter = Meter(device)
    tokenizer = load_tokenizer(spec["model_dir"], progress=False)
    policy = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
    reward_lm = AutoModelForCausalLM.from_pretrained(spec["model_dir"])
    head = RewardHead(reward_lm.config.hidden_size, "linear", dropout=0.0).to(next(reward_lm.parameters()).dtype)
    reward_model = RewardModel(reward_lm, tokenizer, head, RewardModelConfig(base_model=spec["model_dir"], head_dropout=0.0))
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = PPOConfig(
            output_dir=out_dir, batch_size=spec["batch"], minibatch_size=spec["minibatch"], ppo_epochs=2,
            max_new_tokens=spec["new_tokens"], progress=False, save_policy=False, device=device,
            reward_shaping=contender,
        )  # fmt: skip
        prompts = make_prompts("train", spec["batch"], seed=0)
        trainer = PPOTrainer(cfg, policy=(policy, tokenizer), reward_model=reward_model, prompts=prompts)
        start_model = copy.deepcopy(trainer.model.state_dict())
        start_optimizer = copy.deepcopy(trainer.optimizer.state_dict())
        parts: list[dict] = []

        def step() -> None:
            trainer.model.load_state_dict(start_model)
            trainer.optimizer.load_state_dict(start_optimizer)
            rollout = trainer.rollout(prompts, step=0)  # fixed seed: the same responses for both contenders
            update = trainer.update(rollout)
            t = rollout.timings
            parts.append({
                "update_seconds": update["update_seconds"], "reward_seconds": t["reward_seconds"],
                "generated_tokens": t["generated_tokens"],
                "responses_hash": hash(tuple(rollout.batch.response_ids.flatten().tolist())) % 2**31,
            })  # fmt: skip

        seconds = timed(step, spec["repeats"], 1, device)
    timed_parts = parts[1:]
    tokens = int(timed_parts[0]["generated_tokens"])
    with torch.no_grad():
        kind = reward_model.attention_kernel(training=False)
    mixed = trainer.accelerator.mixed_precision == "bf16"
    dtype = "bf16" if mixed else dtype_name(next(policy.parameters()).dtype)
    return result(
        seconds, tokens, meter, kind, dtype, None,
        update_seconds=statistics.median(p["update_seconds"] for p in timed_parts),
        reward_seconds=statistics.median(p["reward_seconds"] for p in timed_parts),
        responses_hash=timed_parts[0]["responses_hash"],
    )  # fmt: skip


RUNNERS = {"rm_train": run_rm_train, "limit": run_limit, "grm": run_grm, "tokens": run_tokens, "ppo": run_ppo}


def contender_process(kind: str, contender: str, spec: dict, conn) -> None:
    """Body of one contender process: run it, send back its measurements (or the error)."""
    try:
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        conn.send({"ok": RUNNERS[kind](spec, contender)})
    except BaseException as err:  # noqa: BLE001  (an OOM or a bug costs this row only, and says why)
        conn.send({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]})
    finally:
        conn.close()


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


def row(
    benchmark: str, measured: dict, numerator: str, denominator: str, better: str, key: str, context: dict,
    target: float | None | str = "default", **extra,
):  # fmt: skip
    """One comparison: the ratio of the contenders' medians of `key`, with what each measured. Targets are the issue's
    (set for a GPU); `met` says whether this run meets them."""
    top, bottom = measured[numerator], measured[denominator]
    ratio = top[key] / bottom[key]
    target = TARGETS.get(benchmark) if target == "default" else target
    met = None if target is None else (ratio >= target if better == "higher" else ratio <= target)
    out = {
        "benchmark": benchmark, "ratio": ratio, "better": better, "target": target, "met": met,
        "device": context["device"], "attention": top["attention"], "dtype": top["dtype"],
        "numerator": numerator, "denominator": denominator, "ratio_of": key,
        "tokens_per_second": top["tokens_per_second"], "peak_memory_mb": top["peak_memory_mb"], "mfu": top["mfu"],
        "model_tflops_per_second": tflops(top), "denominator_model_tflops_per_second": tflops(bottom),
        "seconds": top["seconds"], "seconds_all": top["seconds_all"],
        "denominator_attention": bottom["attention"], "denominator_tokens_per_second": bottom["tokens_per_second"],
        "denominator_peak_memory_mb": bottom["peak_memory_mb"], "denominator_mfu": bottom["mfu"],
        "denominator_seconds": bottom["seconds"], "denominator_seconds_all": bottom["seconds_all"],
        "model": context["model"], "threads": context["threads"], **extra,
    }  # fmt: skip
    if len(top.get("rounds_seconds", [])) > 1:
        out["rounds_ratios"] = [a / b for a, b in zip(top["rounds_seconds"], bottom["rounds_seconds"], strict=True)]
    return out


def tflops(measured: dict) -> float | None:
    """Model FLOPs per second achieved (useful work only: padding a contender computes is not counted)."""
    return None if measured.get("flops") is None else measured["flops"] / measured["seconds"] / 1e12


def skipped_row(benchmark: str, reason: str, context: dict, **extra) -> dict:
    return {"benchmark": benchmark, "ratio": None, "better": None, "target": None, "met": None,
            "device": context["device"], "attention": None, "dtype": None, "tokens_per_second": None,
            "peak_memory_mb": None, "mfu": None, "skipped": reason, **extra}  # fmt: skip


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

    def progress(name: str, seconds: float, error: str | None) -> None:
        status = f"FAILED: {error}" if error else "done"
        print(f"[suite {time.perf_counter() - started:6.0f} s] {name} {status} ({seconds:.0f} s)", file=sys.stderr, flush=True)

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def model_dir(shape: str, vocab: int | None = None) -> str:
            vocab = vocab or SHAPES[shape]["vocab_size"]  # one directory per (shape, vocabulary)
            return save_model(root / f"{shape}-{vocab}", shape, vocab, args.device, dtype)

        def spec(section: str, **more) -> dict:
            return {**plan[section], "device": args.device, "threads": args.threads, "data": plan["data"], **more}

        def add(kind, contenders, s, build):
            if kind == "rm_train" and importlib.util.find_spec("trl") is None:
                rows.append(skipped_row(build.__name__, "TRL is not installed (pip install trl, or rewardlab[bench])", context))
                return
            measured = measure(runner, kind, contenders, s, args.rounds, progress)
            if "error" in measured:
                print(measured.get("traceback") or "", file=sys.stderr)
                rows.append(skipped_row(build.__name__, measured["error"], context))
                return
            rows.extend(build(measured))

        if "rm_train" in args.selected:
            s = spec("rm_train")
            s["model_dir"] = model_dir(s["shape"])
            context["model"] = f"{s['shape']} (random init)"
            tokenizer_lengths = lengths_of(s)
            s["lengths"] = tokenizer_lengths

            def rm_train(m):
                ctx = {**context, "model": f"{s['shape']} (random init)"}
                extra = {
                    "pairs": m["rewardlab"]["pairs"], "batch_pairs": s["batch"], "real_tokens": m["rewardlab"]["tokens"],
                    "trl_real_tokens": m["trl"]["tokens"], "padding_fraction_trl": m["trl"].get("padding_fraction"),
                }  # fmt: skip
                return [
                    row("rm_train", m, "rewardlab", "trl", "higher", "tokens_per_second", ctx, **extra),
                    row("rm_train_peak_memory", m, "rewardlab", "trl", "lower", "peak_memory_mb", ctx, **extra),
                ]

            add("rm_train", ["rewardlab", "trl"], s, rm_train)

        if "limit" in args.selected:
            s = spec("limit")
            s["model_dir"] = model_dir(s["shape"])

            def limit(m):
                ctx = {**context, "model": f"{s['shape']} (random init)"}
                return [row("limit", m, "rewardlab", "bare", "lower", "seconds", ctx, steps=m["rewardlab"]["steps"])]

            add("limit", ["rewardlab", "bare"], s, limit)

        if "grm_overhead" in args.selected:
            for vocab in (BYTE_VOCAB, QWEN_VOCAB):
                s = spec("grm")
                s["model_dir"] = model_dir(s["shape"], vocab)

                def grm_overhead(m, vocab=vocab, shape=s["shape"]):
                    ctx = {**context, "model": f"{shape} (random init), vocabulary {vocab}"}
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

                add("grm", ["none", "sft", "dpo-noref", "dpo"], s, grm_overhead)

        if "token_rewards_vs_sequence" in args.selected:
            s = spec("tokens")
            s["model_dir"] = model_dir(s["shape"])

            def token_rewards_vs_sequence(m):
                return [row("token_rewards_vs_sequence", m, "r3hf", "sequence", "lower", "seconds",
                            {**context, "model": f"{s['shape']} (random init)"}, rows=m["r3hf"]["rows"])]  # fmt: skip

            add("tokens", ["r3hf", "sequence"], s, token_rewards_vs_sequence)

        if "ppo_step" in args.selected:
            s = spec("ppo")
            s["model_dir"] = model_dir(s["shape"])

            def ppo_step(m):
                ctx = {**context, "model": f"{s['shape']} policy and reward model (random init)"}
                return [row("ppo_step", m, "r3hf", "sparse", "lower", "seconds", ctx,
                            update_ratio=m["r3hf"]["update_seconds"] / m["sparse"]["update_seconds"],
                            reward_ratio=m["r3hf"]["reward_seconds"] / m["sparse"]["reward_seconds"],
                            same_responses=m["r3hf"]["responses_hash"] == m["sparse"]["responses_hash"],
                            generated_tokens=m["r3hf"]["tokens"])]  # fmt: skip

            add("ppo", ["r3hf", "sparse"], s, ppo_step)

        if "rm_train_smollm2" in args.selected and not args.quick:
            directory, reason = smollm2_dir()
            if directory is None:
                rows.append(skipped_row("rm_train_smollm2", reason, context))
            else:
                s = spec("smollm2", model_dir=directory, lora=True, conversational=True,
                         data={**plan["data"], "max_tokens": 1024})  # fmt: skip

                def rm_train_smollm2(m):
                    ctx = {**context, "model": "smollm2-135m (SmolLM2-135M-Instruct), LoRA r 32 on q/k/v/o"}
                    return [row("rm_train_smollm2", m, "rewardlab", "trl", "higher", "tokens_per_second", ctx,
                                real_tokens=m["rewardlab"]["tokens"], trl_real_tokens=m["trl"]["tokens"],
                                pairs=m["rewardlab"]["pairs"], padding_fraction_trl=m["trl"].get("padding_fraction"),
                                data="conversational pairs, HH-RLHF-like lengths (synthetic words)")]  # fmt: skip

                add("rm_train", ["rewardlab", "trl"], s, rm_train_smollm2)

    wall = time.perf_counter() - started
    for r in rows:
        r.setdefault("suite_seconds", round(wall, 1))
        r["load_average"] = [round(load_before, 2), round(load_average(), 2)]
    emit(rows, args)
    return rows


def lengths_of(spec: dict) -> list[int]:
    """Real sequence lengths of the rm_train data as rewardlab tokenises it (for the FLOPs of one epoch)."""
    from rewardlab.data.pairs import encode_pairs
    from rewardlab.modeling.sources import load_tokenizer

    tokenizer = load_tokenizer(spec["model_dir"], progress=False)
    pairs, _ = encode_pairs(tokenizer, spec_examples(spec), spec["data"]["max_tokens"], "keep_end")
    return [len(s.input_ids) for p in pairs for s in (p.chosen, p.rejected)]


def emit(rows: list[dict], args) -> None:
    if args.output:
        from rewardlab.runtime import write_json

        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "rows.json", rows)
        plot(rows, out / "ratios.png")
    if args.json:
        for r in rows:
            print(json.dumps(r, allow_nan=False, default=str) if all_finite(r) else json.dumps(strict(r)))
        return
    table = []
    for r in rows:
        if r.get("skipped"):
            table.append([r["benchmark"], "-", "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        target = "" if r["target"] is None else (">= " if r["better"] == "higher" else "<= ") + str(r["target"])
        vocab = f" V={r['vocab_size']}" if "vocab_size" in r else ""
        mem = f"{r['peak_memory_mb']:.0f}/{r['denominator_peak_memory_mb']:.0f} MB"
        tps = f"{r['tokens_per_second']:.0f}/{r['denominator_tokens_per_second']:.0f}"
        mfu = "" if r["mfu"] is None else f"{r['mfu']:.1%}/{r['denominator_mfu']:.1%}"
        table.append([r["benchmark"] + vocab, f"{r['ratio']:.3f}", r["better"], target, r["attention"], r["dtype"], tps,
                      f"{mem} {mfu}".strip()])  # fmt: skip
    print(f"{rows[0]['device'] if rows else ''}; load average {rows[0]['load_average'] if rows else ''}")
    print_table(["benchmark", "ratio", "better", "target", "attention", "dtype", "tokens/s", "peak memory, MFU"], table)


def all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


def strict(value):
    from rewardlab.runtime import strict_json

    return strict_json(value)


def plot(rows: list[dict], path: Path) -> None:
    """Each ratio as a bar, its target as a tick: a glance at what is met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.get("ratio") is not None]
    labels = [r["benchmark"] + (f" V={r['vocab_size']}" if "vocab_size" in r else "") for r in shown]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(shown) + 1.2))
    ax.barh(labels, [r["ratio"] for r in shown], color=["tab:green" if r["met"] else "tab:gray" for r in shown])
    for i, r in enumerate(shown):
        if r["target"] is not None:
            ax.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="black")
    ax.axvline(1.0, color="black", lw=0.5, ls=":")
    ax.invert_yaxis()
    ax.set_xlabel("ratio (bars: measured; ticks: targets; green: target met)")
    ax.set_title(f"{shown[0]['device'] if shown else ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
