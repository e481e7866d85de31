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
