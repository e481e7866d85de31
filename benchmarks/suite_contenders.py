"""The suite's contenders: what one contender process runs and measures (`contender_process`), one runner per kind."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from common import long_tailed_length, make_preference_examples, pair_batches, peak_rss_mb, words_of_length
from suite_models import PEAK_BF16_TFLOPS, training_flops


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
    from rewardlab.kernel_check import kernel_fallbacks

    median = statistics.median(seconds)
    peak = device_peak_tflops(meter.device)
    return {
        "seconds": median, "seconds_all": [round(s, 5) for s in seconds], "tokens": tokens,
        "tokens_per_second": tokens / median, "peak_memory_mb": round(meter.peak_mb(), 1), "attention": attention,
        "dtype": dtype, "flops": flops, "mfu": None if flops is None or peak is None else flops / median / (peak * 1e12),
        "kernel_fallbacks": kernel_fallbacks(),  # this process's kernels that failed their check (rewardlab.kernel_check)
        **extra,
    }  # fmt: skip


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
    from rewardlab.train_rm import RewardTrainingConfig

    device = spec["device"]
    cfg = RewardTrainingConfig(model=spec["model_dir"], train_data="<memory>", reg="none", learning_rate=1e-5)
    meter = Meter(device)
    model = build_reward_model(spec["model_dir"], seed=cfg.seed)
    model.freeze_lm_head()  # as the trainer does without a regulariser (a tied head is the embedding: trains)
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
    from rewardlab.modeling.logprobs import liger_unavailable_reason

    head = torch.nn.Linear(config.hidden_size, 1)  # only the log-prob path's name matters here
    logprobs = "chunked" if contender == "none" or liger_unavailable_reason(head, torch.device(device)) else "liger"
    dtype = weights_dtype(config)  # no autocast in the trainer's bare step: the weights' dtype is the compute dtype
    attention = attention_of(spec, dtype, training=True)
    return result(seconds, sum(lengths), meter, attention, dtype_name(dtype), flops, pairs=n_pairs, response_tokens=all_responses,
                  logprobs=logprobs if contender != "none" else None)  # fmt: skip


def weights_dtype(config) -> torch.dtype:
    """The dtype a saved model loads in (transformers loads the saved dtype)."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def attention_of(spec: dict, dtype: torch.dtype, training: bool) -> str:
    from rewardlab.packed_attention import select_packed_attention

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

    from rewardlab.modeling.head import RewardHead
    from rewardlab.modeling.reward_model import RewardModel, RewardModelConfig
    from rewardlab.modeling.sources import load_tokenizer
    from rewardlab.rl.ppo import PPOTrainer
    from rewardlab.rl.ppo_config import PPOConfig
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
