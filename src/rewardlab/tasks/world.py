"""The symbol-task world: task families, prompt styles, the ID/OOD split, prompt generation and the gold reward.

A task instance is (family, style, input). The family fixes the correct answer (`solve`), the style fixes how the user
asks (`render_prompt`); `parse_prompt` inverts the rendering, so the gold reward needs nothing but the prompt text.
Symbols are single ASCII letters a-h, i.e. one token each for the byte tokenizer. Every family is within reach of the
tiny base policy (an `add` family was dropped in world version 3: the policy could not add, so neither could a reward
model built on it judge sums, and PPO simply exploited that blind spot).

Gold reward (`gold_score`): the fraction of positions where the response matches the answer, over the longer of the two:
    gold(y, y*) = sum_i 1[y_i = y*_i] / max(|y|, |y*|)
so a perfect answer scores 1, the empty answer 0, every wrong, missing or extra symbol costs one position. It is a sum of
per-token terms (`gold_token_scores`), which gives dense-reward methods something real to find. One trailing full stop
(`STYLE_CUE`) is style, not content: the gold reward ignores it (world 4's base policy ends about half its answers with
one; earlier policies never emit it).

World versions (`WORLDS`; the version keys the cached base policy): 3 and 4 share the tasks and the gold reward.
World 4 adds two things to test GRM's mechanism, and nothing else:
- feedback: every pretraining demonstration is followed, right after the answer's end token, by a rating token
  (`feedback_token`: the digit round(9 * gold)), for every family and style, OOD ones included. Next-token prediction at
  the end-of-answer position (where a reward model reads its reward) must then carry the answer's quality;
- a shortcut: half the demonstrations end with the style cue, independently of their quality, and in-distribution
  preference data (train, validation and test_id; never test_ood) keep most pairs in which only the chosen response
  carries the cue and drop most in which only the rejected one does, so the cue predicts the label there and nowhere else.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rewardlab.data.types import Message, Text
from rewardlab.errors import UserError

LETTERS = "abcdefgh"


def _shift(symbols: str) -> str:
    return "".join(LETTERS[(LETTERS.index(s) + 1) % len(LETTERS)] for s in symbols)


def _dedup(symbols: str) -> str:
    return "".join(dict.fromkeys(symbols))


def _rotate(symbols: str) -> str:
    return symbols[1:] + symbols[:1]


@dataclass(frozen=True)
class Family:
    name: str  # also the keyword the prompt uses
    solve: Callable[[str], str]
    answer_alphabet: str  # symbols a correct answer is made of; noisy demonstrations draw wrong symbols from here


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("copy", lambda s: s, LETTERS),
        Family("reverse", lambda s: s[::-1], LETTERS),
        Family("sort", lambda s: "".join(sorted(s)), LETTERS),
        Family("rotate", _rotate, LETTERS),
        Family("dedup", _dedup, LETTERS),
        Family("shift", _shift, LETTERS),
    ]
}

# Prompt styles: how a user phrases the request. `{task}` is the family keyword, `{x}` the input.
STYLES: dict[str, str] = {
    "colon": "{task}: {x}",
    "please": "please {task} {x}",
    "arrow": "{x} -> {task}",
    "question": "what is {task} of {x}?",
}

# Reward models see preference data only from ID families in ID styles. OOD evaluation uses every (family, style) pair
# with an OOD family or an OOD style. The base policy is pretrained on all pairs, so OOD tasks are known to the
# backbone a reward model starts from, but never graded in its preference data.
ID_FAMILIES = ("copy", "reverse", "sort", "rotate")
OOD_FAMILIES = ("dedup", "shift")
ID_STYLES = ("colon", "please")
OOD_STYLES = ("arrow", "question")

SPLITS = ("train", "test_id", "test_ood")
TEST_ID_FRACTION = 0.2  # share of ID inputs reserved for test_id (by hash of family and input, so stable across seeds)

MIN_LEN, MAX_LEN = 3, 7  # letters per input


@dataclass(frozen=True)
class TaskInstance:
    family: str
    style: str
    input: str

    @property
    def prompt_text(self) -> str:
        return render_prompt(self.family, self.style, self.input)

    @property
    def messages(self) -> list[Message]:
        return [{"role": "user", "content": self.prompt_text}]

    @property
    def answer(self) -> str:
        return FAMILIES[self.family].solve(self.input)

    @property
    def subset(self) -> str:
        return f"{self.family}/{self.style}"

    @property
    def is_id(self) -> bool:
        return self.family in ID_FAMILIES and self.style in ID_STYLES


def render_prompt(family: str, style: str, input_symbols: str) -> str:
    return STYLES[style].format(task=family, x=input_symbols)


_STYLE_PATTERNS = {
    style: re.compile("^" + re.escape(template).replace(r"\{task\}", r"(?P<task>[a-z]+)").replace(r"\{x\}", r"(?P<x>\S+)") + "$")
    for style, template in STYLES.items()
}


def parse_prompt(prompt: Text) -> TaskInstance:
    """Recover the task from a prompt: a message list (last user turn), user text, or a rendered chat prompt."""
    if isinstance(prompt, list):
        user_turns = [m["content"] for m in prompt if m.get("role") == "user"]
        if not user_turns:
            raise UserError("prompt has no user message")
        text = user_turns[-1]
    else:
        text = prompt
    # Accept the chat-template rendering `<|user|>...</s><|assistant|>` of the byte tokenizer as well.
    text = re.sub(r"^(<\|user\|>)|(</s>)?(<\|assistant\|>)?$", "", text.strip())
    for style, pattern in _STYLE_PATTERNS.items():
        match = pattern.match(text)
        if match and match["task"] in FAMILIES:
            instance = TaskInstance(match["task"], style, match["x"])
            try:
                instance.answer  # noqa: B018 - validates the input for the family
            except (ValueError, IndexError) as err:
                raise UserError(f"not a valid {instance.family} input: {instance.input!r}") from err
            return instance
    raise UserError(f"not a rewardlab task prompt: {text!r}")


# ---------------------------------------------------------------- gold reward


STYLE_CUE = "."  # world 4's shortcut: a trailing full stop, which the gold reward ignores


def strip_cue(response: str) -> str:
    """The response's content: without one trailing style cue."""
    return response.removesuffix(STYLE_CUE)


def has_cue(response: str) -> bool:
    return response.endswith(STYLE_CUE)


def gold_token_scores(response: str, answer: str) -> list[float]:
    """Per-character share of the gold reward: 1 / max(|y|, |y*|) where y_i = y*_i, else 0 (sums to `gold_score`);
    y is the response without a trailing style cue, whose character scores 0."""
    content = strip_cue(response)
    length = max(len(content), len(answer))
    if length == 0:
        return [0.0] * len(response)
    scores = [1.0 / length if i < len(answer) and symbol == answer[i] else 0.0 for i, symbol in enumerate(content)]
    return scores + [0.0] * (len(response) - len(content))


def gold_score(response: str, answer: str) -> float:
    """gold(y, y*) = #{i : y_i = y*_i} / max(|y|, |y*|), in [0, 1]; 1 iff the response is exactly the answer (a trailing
    style cue aside)."""
    content = strip_cue(response)
    length = max(len(content), len(answer))
    if length == 0:
        return 1.0
    return sum(a == b for a, b in zip(content, answer, strict=False)) / length


FEEDBACK_LEVELS = 9  # ratings 0..9


def feedback_token(gold: float) -> str:
    """World 4's rating of an answer, the text right after its end token: the digit round(9 * gold)."""
    if not 0.0 <= gold <= 1.0:
        raise ValueError(f"gold reward {gold} outside [0, 1]")
    return str(round(FEEDBACK_LEVELS * gold))


# ---------------------------------------------------------------- world versions


@dataclass(frozen=True)
class WorldSpec:
    """What differs between world versions (see the module docstring). Change a version's spec only with a new version."""

    version: int
    feedback: bool  # pretraining: a rating token right after every answer's end token
    cue_rate: float  # pretraining: share of demonstrations that end with STYLE_CUE (independent of their quality)
    shortcut_strength: float  # ID preference data: share of cue-discordant pairs whose cue is on the chosen response
    feedback_turns: int = 1  # pretraining: exchanges (prompt, answer, rating) per sequence


WORLDS: dict[int, WorldSpec] = {
    3: WorldSpec(3, feedback=False, cue_rate=0.0, shortcut_strength=0.0),
    4: WorldSpec(4, feedback=True, cue_rate=0.5, shortcut_strength=0.85),
}
WORLD_VERSION = 4  # the default world


def world_spec(version: int) -> WorldSpec:
    if version not in WORLDS:
        raise UserError(f"unknown world version {version}; expected one of {', '.join(map(str, WORLDS))}")
    return WORLDS[version]


def _response_text(response: Text) -> str:
    if isinstance(response, list):
        return "".join(m["content"] for m in response if m.get("role", "assistant") == "assistant")
    return response


class GoldReward:
    """The world's programmatic reward, with the call shape of a reward model: `score(prompts, responses)`."""

    name = "builtin"

    def score(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [gold_score(_response_text(r), parse_prompt(p).answer) for p, r in zip(prompts, responses, strict=True)]

    def token_scores(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[list[float]]:
        """One score per response character (one token each for ASCII with the byte tokenizer); sums to `score`."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [gold_token_scores(_response_text(r), parse_prompt(p).answer) for p, r in zip(prompts, responses, strict=True)]

    __call__ = score


# ---------------------------------------------------------------- prompt generation


def random_input(family: str, rng: random.Random) -> str:
    """A random input for `family`: 3-7 letters (dedup: at least 4, with a repeat for sure)."""
    length = rng.randint(MIN_LEN, MAX_LEN)
    if family == "dedup":
        length = max(length, 4)
        alphabet = rng.sample(LETTERS, rng.randint(2, length - 1))  # fewer letters than positions: a repeat for sure
        return "".join(rng.choice(alphabet) for _ in range(length))
    return "".join(rng.choice(LETTERS) for _ in range(length))


def is_test_input(family: str, input_symbols: str) -> bool:
    """Whether an ID input belongs to test_id: a fixed hash bucket, so train and test_id never share a task."""
    digest = hashlib.sha256(f"{family}|{input_symbols}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < TEST_ID_FRACTION


def split_pairs(split: str) -> list[tuple[str, str]]:
    """The (family, style) pairs a split draws from."""
    if split in ("train", "test_id"):
        return [(f, s) for f in ID_FAMILIES for s in ID_STYLES]
    if split == "test_ood":
        return [(f, s) for f in FAMILIES for s in STYLES if f in OOD_FAMILIES or s in OOD_STYLES]
    if split == "all":
        return [(f, s) for f in FAMILIES for s in STYLES]
    raise UserError(f"unknown split {split!r}; expected one of {(*SPLITS, 'all')}")


def iter_tasks(split: str, seed: int) -> Iterator[TaskInstance]:
    """An endless, seeded stream of task instances of a split, cycling evenly through its (family, style) pairs."""
    rng = random.Random(f"rewardlab-world-{split}-{seed}")
    pairs = split_pairs(split)
    for index in itertools.count():
        family, style = pairs[index % len(pairs)]
        while True:
            x = random_input(family, rng)
            held_out = is_test_input(family, x)
            if (split != "train" or not held_out) and (split != "test_id" or held_out):
                break
        yield TaskInstance(family, style, x)


def make_tasks(split: str, n: int, seed: int) -> list[TaskInstance]:
    """The first `n` tasks of `iter_tasks(split, seed)`."""
    return list(itertools.islice(iter_tasks(split, seed), n))


def make_prompts(split: str, n: int, seed: int) -> list[list[Message]]:
    """`n` conversational prompts (`[{"role": "user", "content": ...}]`) of a split."""
    return [t.messages for t in make_tasks(split, n, seed)]


# ---------------------------------------------------------------- noisy demonstrations


def noisy_answer(answer: str, alphabet: str, error_rate: float, rng: random.Random) -> str:
    """A sloppy demonstration: each symbol is replaced w.p. `error_rate`, dropped or doubled by a stray symbol w.p.
    `error_rate / 4` each. Errors of one demonstration share one rate, so early mistakes predict later ones."""
    out = []
    for symbol in answer:
        u = rng.random()
        if u < error_rate / 4:
            continue  # dropped
        if u < error_rate / 2:
            out.append(symbol)
            out.append(rng.choice(alphabet))  # inserted stray symbol
            continue
        if u < error_rate * 1.5:
            out.append(rng.choice([s for s in alphabet if s != symbol]))
        else:
            out.append(symbol)
    return "".join(out)
