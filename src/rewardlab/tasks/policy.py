"""The world's base policy: a tiny Llama pretrained here on noisy demonstrations of every task, cached on disk.

The demonstrations are sloppy on purpose (`noisy_answer`): a share of them are perfect, the rest carry a per-example
error rate drawn uniformly in [0, max_error_rate]. The policy therefore samples answers of varied quality (some perfect,
many partly wrong), which is what preference data, best-of-N and PPO need. It sees all families in all styles, the OOD
ones included, so a reward model built on it knows the OOD tasks from pretraining but never from preferences.

The model and tokenizer are saved with `save_pretrained` in `$REWARDLAB_CACHE/base-policy/<hash of config>` (default
cache ~/.cache/rewardlab) and loaded back with the Auto classes, i.e. by the same code path as a hub model.

World 4 (`config.world_version`, see `rewardlab.tasks.world`): half the demonstrations end with the style cue, and every
answer's end token is followed by its rating token, so next-token prediction at the end of an answer learns its quality.

The step policy (`BasePolicyConfig.with_steps()`, `get_step_policy`) is the same model pretrained on a mix: a share
`step_share` of its demonstrations are step tasks (`rewardlab.tasks.steps`: one intermediate result a line), sloppy at
the same rates (a share `clean_fraction` exact, the others with each step wrong in context w.p. ~ U(0, max_error_rate),
as `sample_step_solution` writes them, errors carried forward), rated in world 4 by the outcome gold of the last line.
It is cached under its own key; with `step_share = 0` (every existing config) nothing changes: the keys, the
demonstrations and the cached policies are those of before. Step answers are longer (up to ~26 tokens): generate them
with `config.max_new_tokens` (STEP_MAX_NEW_TOKENS), not the world's 16.
A step policy may instead start from the world's base policy (`warm_start_steps` > 0: the same config without step
tasks, cached as usual) and train that many steps on the mix, warmed up over a tenth of them: the demo's step policy,
which learns the chains' format and part of their steps in a fraction of the time from scratch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from rewardlab.data.templates import encode_prompt_response
from rewardlab.generation import sample
from rewardlab.masks import pad_rows
from rewardlab.modeling.tiny import build_byte_tokenizer, tiny_llama_config
from rewardlab.progress import progress as show_progress
from rewardlab.runtime import atomic_directory, write_json
from rewardlab.runtime import cache_dir as default_cache_dir
from rewardlab.tasks.steps import (
    StepTask,
    gold_step_labels,
    join_steps,
    make_step_tasks,
    outcome_gold,
    parse_step_prompt,
    random_step_task,
    sample_step_solution,
    split_steps,
)
from rewardlab.tasks.world import (
    FAMILIES,
    STYLE_CUE,
    WORLD_VERSION,
    GoldReward,
    TaskInstance,
    feedback_token,
    gold_score,
    make_tasks,
    noisy_answer,
    random_input,
    split_pairs,
    world_spec,
)

WORLD_MAX_NEW_TOKENS = 16  # the world's answers: at most 7 symbols, a cue and EOS (tasks.preferences.MAX_NEW_TOKENS)
STEP_MAX_NEW_TOKENS = 32  # step answers: up to 3 lines of 8 symbols, 2 separators, a cue and EOS (~27 tokens)
STEP_SHARE = 0.5  # the step policy's share of step-task demonstrations


@dataclass(frozen=True)
class BasePolicyConfig:
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clean_fraction: float = 0.3  # share of demonstrations with no error
    max_error_rate: float = 0.5  # the others: per-symbol error rate ~ U(0, max_error_rate)
    seed: int = 0
    world_version: int = WORLD_VERSION  # a new version changes the demonstrations (rewardlab.tasks.world.WORLDS)
    step_share: float = 0.0  # share of step-task demonstrations (0: the world's base policy; > 0: a step policy)
    # > 0 (a step policy): start from the world's base policy (`base_config()`) and train this many steps on the mix
    # instead of `steps` from scratch
    warm_start_steps: int = 0

    @classmethod
    def quick(cls, world_version: int = WORLD_VERSION) -> BasePolicyConfig:
        """A reduced budget for tests (seconds): learns the format and part of the tasks."""
        return cls(hidden_size=64, num_layers=2, steps=400, batch_size=32, lr=5e-3, warmup_steps=30, world_version=world_version)

    def with_steps(self, step_share: float = STEP_SHARE, warm_start_steps: int = 0) -> BasePolicyConfig:
        """This config as a step policy: the same model and budget, `step_share` of its demonstrations step tasks; with
        `warm_start_steps`, that many steps from the world's base policy instead of `steps` from scratch."""
        return replace(self, step_share=step_share, warm_start_steps=warm_start_steps)

    def base_config(self) -> BasePolicyConfig:
        """The world's base policy this config starts from when it warm-starts (no step tasks)."""
        return replace(self, step_share=0.0, warm_start_steps=0)

    @property
    def max_new_tokens(self) -> int:
        """Generation length that fits every answer this policy was taught to write."""
        return STEP_MAX_NEW_TOKENS if self.step_share else WORLD_MAX_NEW_TOKENS

    def key(self) -> str:
        """Cache key: the world version and every other field (a world-3 config keeps the key it had before versions were
        a field; a config without step tasks the key it had before `step_share` was one)."""
        if not 0.0 <= self.step_share <= 1.0:
            raise ValueError(f"step_share must be in [0, 1], got {self.step_share}")
        if self.warm_start_steps and not self.step_share:
            raise ValueError("warm_start_steps needs step_share > 0: it makes a step policy from the world's base policy")
        skipped = {"world_version"} | ({"step_share"} if not self.step_share else set())
        skipped |= {"warm_start_steps"} if not self.warm_start_steps else set()  # earlier keys stay as they were
        fields = {k: v for k, v in asdict(self).items() if k not in skipped}
        payload = json.dumps({"world": self.world_version, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies summed over all CPUs from /proc/stat, or None where there is no /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)  # idle + iowait


def idle_cores(interval: float = 0.2) -> float:
    """How many cores are idle right now: sampled from /proc/stat over `interval` seconds, else from the 1-minute load
    average (which lags: just after another job it still reports the load that job left)."""
    cores = os.cpu_count() or 1
    before = _cpu_times()
    if before is not None:
        time.sleep(interval)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            return cores * (after[0] - before[0]) / (after[1] - before[1])
    try:
        return cores - os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return float(cores)


def training_threads() -> int:
    """Threads for pretraining: at most 2 (the matrices are tiny) and no more than the idle cores, because busy-waiting
    OpenMP threads on an oversubscribed CPU make every step ~10x slower."""
    return max(1, min(2, round(idle_cores())))


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """Run the block with `count` torch threads (the previous count is restored after); yields the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)


def demonstration(task: TaskInstance, config: BasePolicyConfig, rng: random.Random) -> str:
    """One (possibly sloppy) demonstrated answer for `task`; in world 4, ended by the style cue w.p. `cue_rate`."""
    if rng.random() < config.clean_fraction:
        answer = task.answer
    else:
        error_rate = rng.uniform(0.0, config.max_error_rate)
        answer = noisy_answer(task.answer, FAMILIES[task.family].answer_alphabet, error_rate, rng)
    cue_rate = world_spec(config.world_version).cue_rate
    if cue_rate and rng.random() < cue_rate:  # drawn apart from the errors: the cue says nothing about quality
        answer += STYLE_CUE
    return answer


def step_demonstration(task: StepTask, config: BasePolicyConfig, rng: random.Random) -> str:
    """One (possibly sloppy) step answer: exact w.p. `clean_fraction`, else each step wrong in context w.p. a rate
    ~ U(0, max_error_rate) (`sample_step_solution`); in world 4, ended by the style cue w.p. `cue_rate`."""
    if rng.random() < config.clean_fraction:
        steps = task.values
    else:
        steps = sample_step_solution(task, rng.uniform(0.0, config.max_error_rate), rng)
    answer = join_steps(steps)
    cue_rate = world_spec(config.world_version).cue_rate
    if cue_rate and rng.random() < cue_rate:
        answer += STYLE_CUE
    return answer


def demonstration_ids(tokenizer: PreTrainedTokenizerFast, config: BasePolicyConfig, rng: random.Random) -> list[int]:
    """Token ids of one pretraining sequence: a chat-formatted demonstration (the answer ends in EOS); in world 4,
    `feedback_turns` exchanges, each answer's EOS followed at once by its rating token. A step policy makes each
    exchange a step task w.p. `step_share` (no draw at all when it is 0, so the world's demonstrations stay as they were)."""
    spec = world_spec(config.world_version)
    pairs = split_pairs("all")
    ids: list[int] = []
    for _ in range(spec.feedback_turns if spec.feedback else 1):
        if config.step_share and rng.random() < config.step_share:
            step_task = random_step_task(rng)
            messages, answer = step_task.messages, step_demonstration(step_task, config, rng)
            gold = outcome_gold(step_task, answer)
        else:
            family, style = rng.choice(pairs)
            task = TaskInstance(family, style, random_input(family, rng))
            messages, answer = task.messages, demonstration(task, config, rng)
            gold = gold_score(answer, task.answer)
        response = [{"role": "assistant", "content": answer}]
        ids += encode_prompt_response(tokenizer, messages, response).input_ids
        if spec.feedback:
            ids += tokenizer(feedback_token(gold), add_special_tokens=False).input_ids
    return ids


def pretraining_batch(
    tokenizer: PreTrainedTokenizerFast, config: BasePolicyConfig, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) for a batch of chat-formatted demonstrations over all families and styles, right padded."""
    sequences = [demonstration_ids(tokenizer, config, rng) for _ in range(config.batch_size)]
    input_ids, attention_mask = pad_rows(sequences, tokenizer.pad_token_id, side="right")
    labels = input_ids.masked_fill(attention_mask == 0, -100)  # the LM loss ignores padding
    return input_ids, labels


def lr_at(step: int, config: BasePolicyConfig) -> float:
    """Linear warmup then cosine decay to 10% of the peak, over `steps` (a warm start: over `warm_start_steps`, warmed
    up over a tenth of them)."""
    total = config.warm_start_steps or config.steps
    warmup = max(1, total // 10) if config.warm_start_steps else config.warmup_steps
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain_base_policy(
    config: BasePolicyConfig, progress: bool = True, start: LlamaForCausalLM | None = None
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict[str, Any]]:
    """Train a fresh tiny Llama on the world's demonstrations, or go on training a copy of `start` (a warm start:
    `config.warm_start_steps` steps); returns (model, tokenizer, training stats)."""
    if (start is None) == bool(config.warm_start_steps):
        raise ValueError("a warm start (config.warm_start_steps > 0) needs the model it starts from, and only it does")
    tokenizer = build_byte_tokenizer(model_max_length=128)
    if start is not None:
        model = copy.deepcopy(start)
    else:
        model_config = tiny_llama_config(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            max_positions=128,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = LlamaForCausalLM(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    rng = random.Random(f"rewardlab-pretrain-{config.seed}" + (f"-warm-{config.warm_start_steps}" if start is not None else ""))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    model.train()
    began, began_cpu = time.perf_counter(), time.process_time()
    losses = []
    desc = "warm-starting step policy" if start is not None else "pretraining base policy"
    bar = show_progress(range(config.warm_start_steps or config.steps), desc=desc, enabled=progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        input_ids, labels = pretraining_batch(tokenizer, config, rng)
        loss = model(input_ids=input_ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    stats = {
        "train_seconds": time.perf_counter() - began,
        "train_cpu_seconds": time.process_time() - began_cpu,
        "threads": torch.get_num_threads(),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
    }
    return model, tokenizer, stats


def get_base_policy(
    config: BasePolicyConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, Path]:
    """The cached base policy for `config` (trained and saved on first use, on `threads` torch threads; None:
    `training_threads()`): (model, tokenizer, path)."""
    config = config or BasePolicyConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "base-policy" / config.key()
    if not (path / "config.json").exists():
        start = get_base_policy(config.base_config(), root, progress, threads)[0] if config.warm_start_steps else None
        with torch_threads(threads or training_threads()):
            model, tokenizer, stats = pretrain_base_policy(config, progress=progress, start=start)
        with atomic_directory(path, keep_existing=True) as tmp:  # whole or not at all; a concurrent copy wins
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(
                tmp / "rewardlab_base_policy.json", {"config": asdict(config), "world_version": config.world_version, **stats}
            )
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer, path


def get_step_policy(
    config: BasePolicyConfig | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, Path]:
    """The cached step policy: `get_base_policy` of `config.with_steps()` (default: the world's default config)."""
    config = config or BasePolicyConfig()
    return get_base_policy(config if config.step_share else config.with_steps(), cache_dir=cache_dir, progress=progress)


def evaluate_gold(
    model: Any,
    tokenizer: Any,
    split: str,
    n_prompts: int = 256,
    *,
    seed: int = 0,
    temperature: float = 0.7,
    batch_size: int = 128,
    progress: bool = False,
) -> dict[str, float]:
    """Mean gold reward of one sample per prompt of `split`, plus the share of perfect and of finished responses."""
    prompts = [t.messages for t in make_tasks(split, n_prompts, seed)]
    batch = sample(
        model,
        tokenizer,
        prompts,
        max_new_tokens=16,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    scores = GoldReward().score(batch.prompts_of_samples(), batch.texts())
    return {
        "mean_gold": sum(scores) / len(scores),
        "perfect": sum(s == 1.0 for s in scores) / len(scores),
        "finished": sum(s.finished for s in batch.samples) / len(batch.samples),
    }


def evaluate_steps(
    model: Any,
    tokenizer: Any,
    split: str,
    n_prompts: int = 256,
    *,
    seed: int = 0,
    temperature: float = 0.7,
    batch_size: int = 128,
    max_new_tokens: int = STEP_MAX_NEW_TOKENS,
    progress: bool = False,
) -> dict[str, float]:
    """One sample per step prompt of `split` (`rewardlab.tasks.steps` splits): the mean outcome gold (the last line's),
    the share exactly right, the share of written steps correct ("value" semantics: equal to the chain's value), the
    share with every step correct, the share with as many lines as operations, and the share finished (EOS)."""
    tasks = make_step_tasks(split, n_prompts, seed)
    batch = sample(
        model,
        tokenizer,
        [t.messages for t in tasks],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    prompts, texts = batch.prompts_of_samples(), batch.texts()
    outcome = [outcome_gold(p, t) for p, t in zip(prompts, texts, strict=True)]
    labels = [gold_step_labels(p, t) for p, t in zip(prompts, texts, strict=True)]
    n = len(texts)
    return {
        "mean_outcome_gold": sum(outcome) / n,
        "outcome_correct": sum(g == 1.0 for g in outcome) / n,
        "step_accuracy": sum(map(sum, labels)) / sum(map(len, labels)),
        "all_steps_correct": sum(all(row) for row in labels) / n,
        "step_count_right": sum(len(split_steps(t)) == len(parse_step_prompt(p).ops) for p, t in zip(prompts, texts, strict=True))
        / n,
        "finished": sum(s.finished for s in batch.samples) / n,
    }
