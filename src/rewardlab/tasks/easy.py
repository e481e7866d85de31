"""An easy preference task for smoke and acceptance tests of reward-model training: no base policy needed.

Each example asks for `copy`, `reverse` or `sort` of 3 to 6 letters from a-h, e.g. `reverse: dbca`. `chosen` is the
correct answer; `rejected` is the same answer with 1 or 2 positions replaced by a symbol from `x`, `y`, `z`, which never
occur in a correct answer. A reward model therefore only has to spot the foreign symbols, which a tiny Llama (hidden 64,
2 layers) learns with a Bradley-Terry loss to >= 95% held-out accuracy in a few seconds. The real comparison task, where
wrong symbols come from the same alphabet and grading needs the prompt, is the world in `rewardlab.tasks.world`.

Every example is at most 25 tokens with the byte tokenizer (prompt, response and EOS together).
Same `(n, seed)` -> same list; use a different seed for a held-out set.
"""

from __future__ import annotations

import random

from rewardlab.data.types import PreferenceExample

EASY_SYMBOLS = "abcdefgh"
EASY_CORRUPTIONS = "xyz"
EASY_TASKS = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
}


def _corrupt(answer: str, rng: random.Random) -> str:
    """Replace 1 or 2 positions (never all of a 3-symbol answer) by foreign symbols."""
    n_wrong = rng.randint(1, 2)
    positions = rng.sample(range(len(answer)), n_wrong)
    symbols = list(answer)
    for pos in positions:
        symbols[pos] = rng.choice(EASY_CORRUPTIONS)
    return "".join(symbols)


def easy_preferences(n: int, seed: int) -> list[PreferenceExample]:
    """`n` conversational pairs (chosen = correct answer, rejected = corrupted answer); deterministic in `seed`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"rewardlab-easy-{seed}")
    examples = []
    for _ in range(n):
        task = rng.choice(sorted(EASY_TASKS))
        symbols = "".join(rng.choice(EASY_SYMBOLS) for _ in range(rng.randint(3, 6)))
        answer = EASY_TASKS[task](symbols)
        examples.append(
            PreferenceExample(
                prompt=[{"role": "user", "content": f"{task}: {symbols}"}],
                chosen=[{"role": "assistant", "content": answer}],
                rejected=[{"role": "assistant", "content": _corrupt(answer, rng)}],
                source="easy",
                subset=f"easy/{task}",
            )
        )
    return examples
