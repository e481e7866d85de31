"""Step tasks for the symbol world: chains of the world's operations, answered one intermediate result a line, with a
programmatic gold for every step (process reward models: step labels, the first wrong step, the outcome).

A step task applies 2-3 operations (`STEP_FAMILIES`: the world's families but copy, which would make a step that changes
nothing) to one input, in order, phrased in one of the world's styles with the chain as the task keyword:

    shift then dedup then rotate: abca     ->   bcdb        (shift abca)
                                                bcd         (dedup bcdb)
                                                cdb         (rotate bcd): the last line is the final answer

A solution is its steps joined by STEP_SEPARATOR ("\\n", one token for the byte tokenizer); `split_steps` inverts it.

Step semantics (decided here). The correct values are v_0 = op_0(x), v_i = op_i(v_{i-1}): the chain from the input,
never from what a solution wrote. With n operations and k written steps s_0 .. s_{k-1}:
- "value" (the default, what the files carry): step i is correct iff i < n and s_i = v_i, and the last written step,
  being the final answer, is also wrong when k < n (a solution that stops early). A step that follows correctly from
  an earlier wrong one (the error propagated) is therefore wrong, a step back on the correct value is right, and the
  last step's label is the outcome (final answer exactly right);
- "local": step i is correct iff it is op_i applied to step i-1 AS WRITTEN (the input for i = 0): valid in context, so
  steps after an error can be right (the same rules for i >= n and an early stop);
- "prefix": correct iff this step and every earlier one are correct: all wrong after the first error (Math-Shepherd's
  "still on a correct path", as in TRL's stepwise datasets).
`first_error` (ProcessBench's label: the earliest wrong step, -1 if none) is the same under all three: before the first
wrong step every step equals its correct value, so the first step that is not its correct value is also the first that
does not follow from its predecessor. One trailing style cue on the last step is ignored, as the world's gold reward
does. The outcome gold is the world's `gold_score` of the last line against the chain's answer (graded, in [0, 1]).

Splits follow the world's ID/OOD split: train, validation and test_id use chains of ID families (reverse, sort, rotate)
in ID styles, the three kept apart by a hash of (chain, input) (test_id 20%, validation 10%, so no task is shared);
test_ood holds every chain with an OOD family (dedup, shift) or an OOD style.

Data (`make_step_data`, `write_step_data`): a controlled share of all-correct solutions, the others with one error
planted at a uniformly drawn step (`corrupt_step`: a wrong symbol, a dropped or inserted symbol, the operation skipped
or another family's applied), after which the later steps either follow from the wrong value (propagated) or return to
the correct values (isolated). Files: TRL's stepwise format (`prompt`, `completions`, `labels`) and ProcessBench's
(`id`, `problem`, `steps`, `label`, `final_answer_correct`), both with `source` (the chain) and `subset`.
`write_step_prompts` writes a split's prompts for best-of-N / PPO as the world's `write_prompts` does.

Candidates for best-of-N (`sample_step_solutions`): N solutions a prompt, each step computed from the solution's own
previous line and wrong (in context) with probability `error_rate`, so errors propagate as a sloppy solver's do.
Everything is deterministic in its seed (string-seeded `random.Random`, so the same on every platform).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardlab.data.types import DEFAULT_STEP_SEPARATOR, Message, Text
from rewardlab.errors import UserError
from rewardlab.runtime import write_json, write_jsonl
from rewardlab.tasks.world import (
    FAMILIES,
    ID_FAMILIES,
    ID_STYLES,
    LETTERS,
    OOD_FAMILIES,
    STYLES,
    gold_score,
    random_input,
    strip_cue,
)

STEP_SEPARATOR = DEFAULT_STEP_SEPARATOR  # one line a step: what PRM training, step views and step rewards read by default
CHAIN_JOINER = " then "  # "shift then dedup then rotate"
STEP_FAMILIES = tuple(f for f in FAMILIES if f != "copy")
ID_STEP_FAMILIES = tuple(f for f in STEP_FAMILIES if f in ID_FAMILIES)
STEP_LENGTHS = (2, 3)  # operations per chain
STEP_SPLITS = ("train", "validation", "test_id", "test_ood")
TEST_ID_FRACTION, VALIDATION_FRACTION = 0.2, 0.1  # hash buckets of ID (chain, input)
SEMANTICS = ("value", "local", "prefix")
ERROR_KINDS = ("symbol", "drop", "insert", "skip", "wrong_op")
DATA_SIZES = {"train": 2_000, "validation": 250, "test_id": 500, "test_ood": 1_000}


@dataclass(frozen=True)
class StepTask:
    ops: tuple[str, ...]  # family names, applied in order
    style: str
    input: str

    @property
    def chain(self) -> str:
        return CHAIN_JOINER.join(self.ops)

    @property
    def prompt_text(self) -> str:
        return STYLES[self.style].format(task=self.chain, x=self.input)

    @property
    def messages(self) -> list[Message]:
        return [{"role": "user", "content": self.prompt_text}]

    @property
    def values(self) -> list[str]:
        """The correct steps: v_i = op_i(v_{i-1}), v_{-1} = the input."""
        out, value = [], self.input
        for op in self.ops:
            value = FAMILIES[op].solve(value)
            out.append(value)
        return out

    @property
    def answer(self) -> str:
        return self.values[-1]

    @property
    def has_ood_family(self) -> bool:
        return any(op in OOD_FAMILIES for op in self.ops)

    @property
    def is_id(self) -> bool:
        return all(op in ID_FAMILIES for op in self.ops) and self.style in ID_STYLES

    @property
    def source(self) -> str:
        return "+".join(self.ops)

    @property
    def subset(self) -> str:
        """Coarse enough to evaluate per subset: whether the chain holds an OOD family, and the style."""
        return f"{'ood' if self.has_ood_family else 'id'}-ops/{self.style}"


# ---------------------------------------------------------------- prompts and steps

_CHAIN = r"(?P<task>[a-z]+(?: then [a-z]+)*)"
_STEP_PATTERNS = {
    style: re.compile("^" + re.escape(template).replace(r"\{task\}", _CHAIN).replace(r"\{x\}", r"(?P<x>\S+)") + "$")
    for style, template in STYLES.items()
}


def _user_text(prompt: Text) -> str:
    if isinstance(prompt, list):
        user_turns = [m["content"] for m in prompt if m.get("role") == "user"]
        if not user_turns:
            raise UserError("prompt has no user message")
        return user_turns[-1]
    # Accept the byte tokenizer's chat rendering `<|user|>...</s><|assistant|>` as the world's parse_prompt does.
    return re.sub(r"^(<\|user\|>)|(</s>)?(<\|assistant\|>)?$", "", prompt.strip())


def parse_step_prompt(prompt: Text | StepTask) -> StepTask:
    """Recover the step task from a prompt: a StepTask, a message list (last user turn), user text or a chat rendering."""
    if isinstance(prompt, StepTask):
        return prompt
    text = _user_text(prompt)
    for style, pattern in _STEP_PATTERNS.items():
        match = pattern.match(text)
        if not match:
            continue
        ops = tuple(match["task"].split(CHAIN_JOINER))
        if not all(op in FAMILIES for op in ops):
            continue
        task = StepTask(ops, style, match["x"])
        if any(symbol not in LETTERS for symbol in task.input):
            raise UserError(f"not a valid step-task input: {task.input!r}")
        return task
    raise UserError(f"not a rewardlab step-task prompt: {text!r}")


def split_steps(response: str) -> list[str]:
    """A written solution's steps: its lines (an empty response is one empty, wrong step)."""
    return response.split(STEP_SEPARATOR)


def join_steps(steps: Sequence[str]) -> str:
    return STEP_SEPARATOR.join(steps)


def _as_steps(steps: Sequence[str] | str) -> list[str]:
    return split_steps(steps) if isinstance(steps, str) else list(steps)


# ---------------------------------------------------------------- step gold


def _apply(op: str, symbols: str) -> str | None:
    """op applied to written text, None where the operation is undefined on it (a symbol outside a-h for shift)."""
    try:
        return FAMILIES[op].solve(symbols)
    except (ValueError, IndexError):
        return None


def gold_step_labels(prompt: Text | StepTask, steps: Sequence[str] | str, semantics: str = "value") -> list[bool]:
    """One bool a written step (a list of steps, or the solution text split on STEP_SEPARATOR); the module docstring
    defines the three semantics."""
    if semantics not in SEMANTICS:
        raise UserError(f"unknown step semantics {semantics!r}; expected one of {SEMANTICS}")
    task = parse_step_prompt(prompt)
    steps = _as_steps(steps)
    if not steps:
        raise UserError("a solution needs at least one step")
    n, values = len(task.ops), task.values
    written = [*steps[:-1], strip_cue(steps[-1])]  # the final answer may end with the style cue
    labels = []
    for i, step in enumerate(written):
        if i >= n:
            ok = False  # a step with no operation
        elif semantics == "local":
            ok = step == _apply(task.ops[i], written[i - 1] if i else task.input)
        else:
            ok = step == values[i]
        labels.append(ok)
    if len(steps) < n:
        labels[-1] = False  # the last line is the final answer, and this one comes too early
    if semantics == "prefix":
        labels = list(itertools.accumulate(labels, lambda a, b: a and b))
    return labels


def first_error(prompt: Text | StepTask, steps: Sequence[str] | str) -> int:
    """ProcessBench's label: the index of the earliest wrong step, -1 if every step is right."""
    labels = gold_step_labels(prompt, steps)
    return labels.index(False) if False in labels else -1


def outcome_gold(prompt: Text | StepTask, steps: Sequence[str] | str) -> float:
    """The world's gold reward of the final line (the last step) against the chain's answer, in [0, 1]."""
    steps = _as_steps(steps)
    return gold_score(steps[-1], parse_step_prompt(prompt).answer) if steps else 0.0


def outcome_correct(prompt: Text | StepTask, steps: Sequence[str] | str) -> bool:
    return outcome_gold(prompt, steps) == 1.0


def _response_text(response: Text) -> str:
    if isinstance(response, list):
        return "".join(m["content"] for m in response if m.get("role", "assistant") == "assistant")
    return response


class StepGoldReward:
    """The step world's programmatic reward with a reward model's call shape: `score` is the outcome gold of each
    response (its last line), `step_labels` the per-step gold ("value" semantics)."""

    name = "builtin-steps"

    def score(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [outcome_gold(p, _response_text(r)) for p, r in zip(prompts, responses, strict=True)]

    def step_labels(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[list[bool]]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [gold_step_labels(p, _response_text(r)) for p, r in zip(prompts, responses, strict=True)]

    __call__ = score


# ---------------------------------------------------------------- tasks and splits


def step_bucket(task: StepTask) -> str:
    """The ID split an ID (chain, input) belongs to, by a fixed hash: test_id, validation or train."""
    digest = hashlib.sha256(f"steps|{task.source}|{task.input}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < TEST_ID_FRACTION:
        return "test_id"
    return "validation" if u < TEST_ID_FRACTION + VALIDATION_FRACTION else "train"


def _random_chain(families: Sequence[str], length: int, rng: random.Random) -> tuple[str, ...]:
    """`length` operations, no operation twice in a row (reverse or sort twice is a step that does nothing useful)."""
    ops: list[str] = []
    for _ in range(length):
        ops.append(rng.choice([f for f in families if not ops or f != ops[-1]]))
    return tuple(ops)


# test_ood's three kinds, taken in turn (as the world's test_ood cycles its pairs): (OOD family in the chain, OOD style)
_OOD_KINDS = ((False, True), (True, False), (True, True))


def iter_step_tasks(split: str, seed: int, lengths: Sequence[int] = STEP_LENGTHS) -> Iterator[StepTask]:
    """An endless, seeded stream of step tasks of a split (module docstring). test_ood takes in turn a chain of ID
    families in an OOD style, one with an OOD family in an ID style, and one with both, so each kind is a third."""
    if split not in STEP_SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {STEP_SPLITS}")
    rng = random.Random(f"rewardlab-steps-{split}-{seed}")
    for index in itertools.count():
        ood_family, ood_style = _OOD_KINDS[index % len(_OOD_KINDS)] if split == "test_ood" else (False, False)
        styles = tuple(s for s in STYLES if (s in ID_STYLES) != ood_style)
        length = rng.choice(lengths)  # drawn once: the rejections below must not favour longer chains
        while True:
            ops = _random_chain(STEP_FAMILIES if ood_family else ID_STEP_FAMILIES, length, rng)
            if ood_family and not any(op in OOD_FAMILIES for op in ops):
                continue
            # dedup's inputs hold a repeat for sure; every other operation keeps a repeat, so dedup anywhere removes one
            task = StepTask(ops, rng.choice(styles), random_input("dedup" if "dedup" in ops else ops[0], rng))
            if split == "test_ood" or step_bucket(task) == split:
                break
        yield task


def make_step_tasks(split: str, n: int, seed: int, lengths: Sequence[int] = STEP_LENGTHS) -> list[StepTask]:
    return list(itertools.islice(iter_step_tasks(split, seed, lengths), n))


def random_step_task(rng: random.Random, lengths: Sequence[int] = STEP_LENGTHS) -> StepTask:
    """A step task over every family and style, OOD ones included (the step policy's pretraining draws these, as the
    world's base policy sees every (family, style) pair)."""
    ops = _random_chain(STEP_FAMILIES, rng.choice(lengths), rng)
    return StepTask(ops, rng.choice(tuple(STYLES)), random_input("dedup" if "dedup" in ops else ops[0], rng))


# ---------------------------------------------------------------- errors and data


def corrupt_step(target: str, previous: str, op: str, rng: random.Random) -> str:
    """A wrong step where `target` (= op(previous)) is right: a non-empty string != target, of a kind drawn from
    ERROR_KINDS; a kind that cannot make a different string here falls back to a wrong symbol (which always can)."""
    kind = rng.choice(ERROR_KINDS)
    wrong = ""
    if kind == "drop" and len(target) > 1:
        i = rng.randrange(len(target))
        wrong = target[:i] + target[i + 1 :]
    elif kind == "insert":
        i = rng.randrange(len(target) + 1)
        wrong = target[:i] + rng.choice(LETTERS) + target[i:]
    elif kind == "skip":
        wrong = previous
    elif kind == "wrong_op":
        wrong = _apply(rng.choice([f for f in STEP_FAMILIES if f != op]), previous) or ""
    if not wrong or wrong == target:
        i = rng.randrange(len(target))
        wrong = target[:i] + rng.choice([s for s in LETTERS if s != target[i]]) + target[i + 1 :]
    return wrong


@dataclass(frozen=True)
class StepExample:
    task: StepTask
    steps: tuple[str, ...]
    labels: tuple[bool, ...]  # "value" semantics
    first_error: int  # -1: all steps correct
    outcome: float  # outcome_gold: the final line's gold reward
    propagated: bool | None = None  # whether later steps follow the planted error; None without one

    @property
    def text(self) -> str:
        return join_steps(self.steps)


def _example(task: StepTask, steps: Sequence[str], propagated: bool | None) -> StepExample:
    labels = gold_step_labels(task, steps)
    return StepExample(
        task,
        tuple(steps),
        tuple(labels),
        labels.index(False) if False in labels else -1,
        outcome_gold(task, steps),
        propagated,
    )


def planted_solution(task: StepTask, error_step: int, propagate: bool, rng: random.Random) -> list[str]:
    """The correct steps up to `error_step`, a wrong one there, then steps that follow from it (`propagate`) or the
    correct values again. Its first error is `error_step` by construction."""
    values = task.values
    steps = values[:error_step]
    previous = steps[-1] if steps else task.input
    steps.append(corrupt_step(values[error_step], previous, task.ops[error_step], rng))
    for i in range(error_step + 1, len(task.ops)):
        steps.append(FAMILIES[task.ops[i]].solve(steps[-1]) if propagate else values[i])
    return steps


def make_step_data(
    split: str,
    n: int,
    seed: int = 0,
    *,
    correct_share: float = 0.5,
    propagate_rate: float = 0.5,
    lengths: Sequence[int] = STEP_LENGTHS,
) -> list[StepExample]:
    """`n` labelled solutions of `split`'s tasks: exactly round(n * correct_share) all correct (at positions drawn by the
    seed), the others with one planted error (uniform step; propagated w.p. `propagate_rate`)."""
    if not 0.0 <= correct_share <= 1.0 or not 0.0 <= propagate_rate <= 1.0:
        raise UserError(f"correct_share and propagate_rate must be in [0, 1], got {correct_share}, {propagate_rate}")
    rng = random.Random(f"rewardlab-step-data-{split}-{seed}")
    tasks = make_step_tasks(split, n, seed, lengths)
    correct = set(rng.sample(range(n), round(n * correct_share)))
    examples = []
    for i, task in enumerate(tasks):
        if i in correct:
            examples.append(_example(task, task.values, None))
            continue
        error_step = rng.randrange(len(task.ops))
        propagate = rng.random() < propagate_rate
        examples.append(_example(task, planted_solution(task, error_step, propagate, rng), propagate))
    return examples


def step_preference_pairs(
    split: str, n: int, seed: int = 0, propagate_rate: float = 0.5, chat: bool = False
) -> list[dict[str, Any]]:
    """`n` preference pairs of `split`'s tasks for an outcome reward model: the correct solution over one with a planted
    error (uniform step, propagated w.p. `propagate_rate`), both written as steps. Plain text: the prompt ends with the
    step separator, so the joined text reads as a PRM reads it (`rewardlab.data.step_encoding` adds none after it);
    `chat`: the prompt as a user message and each solution as the assistant's turn, as the step policy writes them."""
    rng = random.Random(f"rewardlab-step-pairs-{split}-{seed}")
    pairs = []
    for task in make_step_tasks(split, n, seed):
        error_step = rng.randrange(len(task.ops))
        rejected = planted_solution(task, error_step, rng.random() < propagate_rate, rng)
        prompt, chosen, rejected_text = task.prompt_text + STEP_SEPARATOR, join_steps(task.values), join_steps(rejected)
        if chat:
            prompt, chosen, rejected_text = task.messages, _assistant(chosen), _assistant(rejected_text)
        pairs.append(
            {"prompt": prompt, "chosen": chosen, "rejected": rejected_text, "source": task.source, "subset": task.subset}
        )
    return pairs


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------- files


def stepwise_record(example: StepExample, semantics: str = "value", chat: bool = False) -> dict[str, Any]:
    """TRL's stepwise-supervision row: prompt (user text; `chat`: a user message, the steps then read as the assistant's
    turn), completions (the steps, without separators), labels."""
    labels = list(example.labels) if semantics == "value" else gold_step_labels(example.task, example.steps, semantics)
    return {
        "prompt": example.task.messages if chat else example.task.prompt_text,
        "completions": list(example.steps),
        "labels": labels,
        "source": example.task.source,
        "subset": example.task.subset,
    }


def processbench_record(example: StepExample, row_id: str) -> dict[str, Any]:
    """ProcessBench's row: problem, steps, label (first wrong step, -1 if none), final_answer_correct."""
    return {
        "id": row_id,
        "generator": "rewardlab-steps",
        "problem": example.task.prompt_text,
        "steps": list(example.steps),
        "final_answer_correct": example.outcome == 1.0,
        "label": example.first_error,
        "source": example.task.source,
        "subset": example.task.subset,
    }


def write_step_data(
    out_dir: str | Path,
    *,
    sizes: dict[str, int] | None = None,
    seed: int = 0,
    correct_share: float = 0.5,
    propagate_rate: float = 0.5,
    semantics: str = "value",
    lengths: Sequence[int] = STEP_LENGTHS,
    chat: bool = False,
) -> dict[str, Path]:
    """Write <split>_stepwise.jsonl (TRL; `chat`: prompts as user messages) and <split>_processbench.jsonl (plain, as
    ProcessBench's) for each split of `sizes` (default DATA_SIZES), and steps.json (the settings and measured shares);
    returns {name: path}."""
    if semantics not in SEMANTICS:
        raise UserError(f"unknown step semantics {semantics!r}; expected one of {SEMANTICS}")
    sizes = dict(DATA_SIZES if sizes is None else sizes)
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    measured: dict[str, dict[str, float]] = {}
    for split, n in sizes.items():
        examples = make_step_data(split, n, seed, correct_share=correct_share, propagate_rate=propagate_rate, lengths=lengths)
        paths[f"{split}_stepwise"] = out_dir / f"{split}_stepwise.jsonl"
        write_jsonl(paths[f"{split}_stepwise"], (stepwise_record(e, semantics, chat) for e in examples))
        paths[f"{split}_processbench"] = out_dir / f"{split}_processbench.jsonl"
        write_jsonl(paths[f"{split}_processbench"], (processbench_record(e, f"{split}-{i}") for i, e in enumerate(examples)))
        measured[split] = {
            "all_correct_share": sum(e.first_error == -1 for e in examples) / max(1, n),
            "final_answer_correct_share": sum(e.outcome == 1.0 for e in examples) / max(1, n),
        }
    paths["settings"] = out_dir / "steps.json"
    write_json(
        paths["settings"],
        {
            "seed": seed,
            "sizes": sizes,
            "correct_share": correct_share,
            "propagate_rate": propagate_rate,
            "semantics": semantics,
            "lengths": list(lengths),
            "separator": STEP_SEPARATOR,
            "chat": chat,
            "measured": measured,
        },
    )
    return paths


def write_step_prompts(path: str | Path, split: str, n: int, seed: int = 0) -> Path:
    """Step-task prompts of a split for best-of-N / PPO, one JSON object a line: prompt (messages), source, subset (the
    world's `write_prompts` layout)."""
    records = [{"prompt": t.messages, "source": t.source, "subset": t.subset} for t in make_step_tasks(split, n, seed)]
    write_jsonl(path, records)
    return Path(path)


# ---------------------------------------------------------------- best-of-N candidates


def sample_step_solution(task: StepTask, error_rate: float, rng: random.Random) -> list[str]:
    """One sloppy solution: each step is op_i of the solution's own previous line, made wrong w.p. `error_rate`."""
    steps: list[str] = []
    previous = task.input
    for op in task.ops:
        step = FAMILIES[op].solve(previous)
        if rng.random() < error_rate:
            step = corrupt_step(step, previous, op, rng)
        steps.append(step)
        previous = step
    return steps


def sample_step_solutions(tasks: Sequence[StepTask | Text], n: int, error_rate: float, seed: int = 0) -> list[list[list[str]]]:
    """`n` candidate solutions (lists of steps) for each task, for best-of-N without a trained policy. Candidate c of
    task t draws from its own seeded stream, so the first n of a larger n are the same candidates and a task's
    candidates do not depend on the other tasks. Share of steps wrong in context ("local" labels): `error_rate`."""
    if not 0.0 <= error_rate <= 1.0:
        raise UserError(f"error_rate must be in [0, 1], got {error_rate}")
    parsed = [parse_step_prompt(t) for t in tasks]
    return [
        [sample_step_solution(task, error_rate, random.Random(f"rewardlab-step-sampler-{seed}-{t}-{c}")) for c in range(n)]
        for t, task in enumerate(parsed)
    ]


__all__ = [
    "DATA_SIZES",
    "SEMANTICS",
    "STEP_FAMILIES",
    "STEP_SEPARATOR",
    "STEP_SPLITS",
    "StepExample",
    "StepGoldReward",
    "StepTask",
    "corrupt_step",
    "first_error",
    "gold_step_labels",
    "iter_step_tasks",
    "join_steps",
    "make_step_data",
    "make_step_tasks",
    "outcome_correct",
    "outcome_gold",
    "parse_step_prompt",
    "planted_solution",
    "processbench_record",
    "random_step_task",
    "sample_step_solution",
    "sample_step_solutions",
    "split_steps",
    "step_preference_pairs",
    "stepwise_record",
    "write_step_data",
    "write_step_prompts",
]
