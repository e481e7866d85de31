"""Batched sampling from any HF causal LM, the tensors that score or train on the samples, and a JSONL round trip.

Convention (`rewardlab.data.templates`): a conversational prompt is rendered with the tokenizer's chat template
(`add_generation_prompt=True`), a string prompt is used as is (with the tokenizer's usual special tokens, e.g. BOS);
response ids are the generated tokens up to and including the first EOS. Prompts are LEFT padded for
`model.generate` so every row's continuation starts at the same column.

General generation, below both `rewardlab.tasks` (the built-in world samples its preference pairs with it) and
`rewardlab.rl` (best-of-N, PPO rollouts), so neither imports the other to generate.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rewardlab.data.errors import DataError
from rewardlab.data.templates import encode_prompt
from rewardlab.data.types import Text
from rewardlab.errors import MissingPathError, UserError
from rewardlab.masks import pad_rows
from rewardlab.progress import progress as show_progress


@dataclass
class Sample:
    prompt_index: int  # index into SampleBatch.prompts
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including the first EOS; nothing after it
    finished: bool  # True iff the response ends with EOS (False: cut by max_new_tokens)
    text: str  # response decoded without special tokens


@dataclass
class SampleBatch:
    prompts: list[Text]
    samples: list[Sample]  # prompt-major: the n samples of prompt 0, then those of prompt 1, ...
    settings: dict[str, Any] = field(default_factory=dict)  # how they were sampled (n, temperature, top_p, seed, ...)

    def __len__(self) -> int:
        return len(self.samples)

    def prompts_of_samples(self) -> list[Text]:
        return [self.prompts[s.prompt_index] for s in self.samples]

    def texts(self) -> list[str]:
        return [s.text for s in self.samples]


class PromptCycle:
    """Prompts in a seeded shuffled cycle, the same order on every process; each process takes its own slice."""

    def __init__(self, prompts: Sequence[Text], seed: int):
        self.prompts = list(prompts)
        self._rng = random.Random(seed)
        self._order: list[int] = []

    def take(self, per_process: int, process_index: int = 0, num_processes: int = 1) -> list[Text]:
        chosen = []
        while len(chosen) < per_process * num_processes:
            if not self._order:
                self._order = list(range(len(self.prompts)))
                self._rng.shuffle(self._order)
            chosen.append(self._order.pop())
        return [self.prompts[i] for i in chosen[process_index * per_process : (process_index + 1) * per_process]]


def prompt_token_ids(tokenizer: Any, prompt: Text) -> list[int]:
    """Token ids of the prompt as rendered for generation (`rewardlab.data.templates.encode_prompt`)."""
    return list(encode_prompt(tokenizer, prompt))


def truncate_at_eos(token_ids: Sequence[int], eos_id: int) -> tuple[list[int], bool]:
    """Tokens up to and including the first EOS, and whether there was one."""
    ids = list(token_ids)
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1], True
    return ids, False


def _eos_id(tokenizer: Any, model: Any) -> int:
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        eos_id = model.generation_config.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    if eos_id is None:
        raise UserError("neither the tokenizer nor the model defines an EOS token")
    return int(eos_id)


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Text],
    *,
    n: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 0.7,
    top_p: float = 0.95,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> SampleBatch:
    """`n` samples per prompt with `model.generate` (temperature 0 = greedy). Deterministic for a given seed and
    batch_size: batch k is drawn from a generator seeded with (seed, k), and the global RNG is left untouched."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    eos_id = _eos_id(tokenizer, model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    prompts = list(prompts)
    encoded = [prompt_token_ids(tokenizer, p) for p in prompts]
    jobs = [(i, encoded[i]) for i in range(len(prompts)) for _ in range(n)]  # prompt-major order
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    samples: list[Sample] = []
    n_batches = math.ceil(len(jobs) / batch_size)
    for batch_index in show_progress(range(n_batches), desc="sampling", enabled=progress, leave=False):
        chunk = jobs[batch_index * batch_size : (batch_index + 1) * batch_size]
        input_ids, attention_mask = pad_rows([ids for _, ids in chunk], pad_id, side="left")
        gen_kwargs: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:  # greedy; silence sampling defaults a generation_config may carry
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed * 1_000_003 + batch_index)
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
                **gen_kwargs,
            )
        continuations = output[:, input_ids.shape[1] :].tolist()
        for (prompt_index, prompt_ids), continuation in zip(chunk, continuations, strict=True):
            response_ids, finished = truncate_at_eos(continuation, eos_id)
            samples.append(
                Sample(
                    prompt_index=prompt_index,
                    prompt_ids=list(prompt_ids),
                    response_ids=response_ids,
                    finished=finished,
                    text=tokenizer.decode(response_ids, skip_special_tokens=True),
                )
            )
    model.train(was_training)
    settings = {
        "n": n,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "batch_size": batch_size,
        "seed": seed,
    }
    return SampleBatch(prompts=prompts, samples=samples, settings=settings)


# ---------------------------------------------------------------- JSONL round trip

_SAMPLE_FIELDS = {"prompt_index": int, "prompt_ids": list, "response_ids": list, "finished": bool, "text": str}


def save_samples(path: str | Path, batch: SampleBatch) -> Path:
    """One JSON object per sample: its prompt, the Sample fields and the sampling settings."""
    from rewardlab.runtime import write_jsonl

    rows = ({"prompt": batch.prompts[s.prompt_index], **asdict(s), "settings": batch.settings} for s in batch.samples)
    write_jsonl(path, rows)
    return Path(path)


def load_samples(path: str | Path) -> SampleBatch:
    """Inverse of `save_samples`; a malformed line raises DataError naming file, line and field."""
    path = Path(path)
    prompts: dict[int, Text] = {}
    samples: list[Sample] = []
    settings: dict[str, Any] = {}
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError as err:  # a --samples path that is not there: the user's to fix, in the same words
        raise MissingPathError(str(err)) from None
    with f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"invalid JSON ({err.msg})", file=str(path), line=line_no) from None
            if not isinstance(record, dict):
                raise DataError("expected a JSON object", file=str(path), line=line_no)
            for name, kind in {**_SAMPLE_FIELDS, "prompt": (str, list)}.items():
                if name not in record:
                    raise DataError("missing", file=str(path), line=line_no, field=name)
                if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
                    raise DataError(f"wrong type {type(record[name]).__name__}", file=str(path), line=line_no, field=name)
            index = record["prompt_index"]
            if prompts.setdefault(index, record["prompt"]) != record["prompt"]:
                raise DataError(
                    f"prompt differs from an earlier line with prompt_index {index}", file=str(path), line=line_no, field="prompt"
                )
            settings = record.get("settings") or settings
            samples.append(Sample(**{name: record[name] for name in _SAMPLE_FIELDS}))
    if prompts and sorted(prompts) != list(range(len(prompts))):
        raise DataError("prompt_index values must be 0..n-1 with none missing", file=str(path), field="prompt_index")
    return SampleBatch(prompts=[prompts[i] for i in range(len(prompts))], samples=samples, settings=settings)
