"""rewardlab against the real verl package. Collected only where verl is installed (`pip install -e ".[verl,dev]"`, or
verl 0.7 as in .ci/run); elsewhere these modules are not collected at all (the verl-free parts: tests/test_verl.py).

The module for the installed verl's line is collected: test_verl_09.py for verl 0.8+ (the reward loop only),
test_verl_07.py for verl 0.7.x (legacy managers and the reward loop). `REWARDLAB_EXPECT_VERL=0.9.1` (set by .ci/run)
makes a run fail unless that exact verl was the one imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

if importlib.util.find_spec("verl") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    from importlib.metadata import version

    _minor = tuple(int(part) for part in re.findall(r"\d+", version("verl"))[:2])
    collect_ignore_glob = ["test_verl_09.py"] if _minor < (0, 8) else ["test_verl_07.py"]


from verl_fixtures import ROWS  # noqa: E402


@pytest.fixture(scope="session")
def rm_dir(tmp_path_factory) -> Path:
    """A rewardlab reward model on disk; its directory also holds the tokenizer, which verl loads as the policy's."""
    from rewardlab.modeling.reward_model import build_reward_model

    path = tmp_path_factory.mktemp("verl") / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=11).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def expected(rm_dir, tmp_path_factory) -> list[dict]:
    """`rewardlab score --token-rewards r3hf` on ROWS, run as a user runs it."""
    from typer.testing import CliRunner

    from rewardlab.cli import app
    from rewardlab.runtime import write_jsonl

    root = tmp_path_factory.mktemp("score")
    write_jsonl(root / "rows.jsonl", [{"prompt": p, "completion": c} for p, c in ROWS])
    args = ["score", "--model", str(rm_dir), "--data", str(root / "rows.jsonl"), "--output", str(root / "out.jsonl")]
    result = CliRunner().invoke(app, [*args, "--token-rewards", "r3hf", "--no-progress"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (root / "out.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def encoded(rm_dir) -> list[tuple[list[int], list[int]]]:
    """ROWS as (prompt ids, response ids), exactly as rewardlab encodes them (the policy's ids in these tests)."""
    from rewardlab.data.templates import encode_prompt_response
    from rewardlab.modeling.loader import load_reward_model

    tokenizer = load_reward_model(rm_dir).tokenizer
    out = []
    for prompt, response in ROWS:
        e = encode_prompt_response(tokenizer, prompt, response)
        out.append((e.input_ids[: e.response_start], e.input_ids[e.response_start :]))
    return out


@pytest.fixture(scope="session", autouse=True)
def the_expected_verl():
    wanted = os.environ.get("REWARDLAB_EXPECT_VERL")
    if wanted:
        from importlib.metadata import version

        assert version("verl") == wanted, f"expected verl {wanted}, imported {version('verl')}"


# ----- a process reward model's step rewards (`method=step`) -----

STEP_ROWS = [
    ("What is 2 + 3 + 4?", "2 + 3 = 5\n5 + 4 = 9\nThe answer is 9.", True),  # three steps, finished
    ("What is 7 * 6?", "7 * 6 = 42\nso the ans", False),  # cut mid-step: its last line ends nowhere
    ("Count to three.", "one\ntwo\nthree", True),
]


@pytest.fixture(scope="session")
def prm_dir(tmp_path_factory):
    """A process reward model on disk (objective prm; untrained: the numbers must agree, whatever they are)."""
    from rewardlab.modeling.reward_model import build_reward_model

    path = tmp_path_factory.mktemp("verl-prm") / "prm"
    model = build_reward_model("tiny-llama", head_dropout=0.0, seed=12)
    model.config.objective = "prm"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def step_rows(prm_dir):
    from rewardlab.generation import prompt_token_ids
    from rewardlab.modeling.loader import load_reward_model

    tokenizer = load_reward_model(prm_dir).tokenizer
    rows = []
    for question, answer, finished in STEP_ROWS:
        response = tokenizer(answer, add_special_tokens=False).input_ids + ([tokenizer.eos_token_id] if finished else [])
        rows.append((prompt_token_ids(tokenizer, [{"role": "user", "content": question}]), response))
    return rows


@pytest.fixture(scope="session")
def step_expected(prm_dir, step_rows):
    """What `rewardlab ppo --reward-shaping step` gives these rows (`rl.rollout.step_row_scores`)."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.rl.rollout import step_row_scores

    model = load_reward_model(prm_dir)
    return step_row_scores(model, step_rows, model.tokenizer, batch_size=len(step_rows))
