"""PPO stops at the first non-finite loss or gradient norm instead of stepping (and saving) a broken policy."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.modeling.reward_model import build_reward_model


def test_ppo_with_an_exploding_learning_rate_stops_in_one_line(tmp_path):
    rm_dir = tmp_path / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=3).save_pretrained(rm_dir)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"count to {i}:"}) + "\n" for i in range(8)))
    out = tmp_path / "ppo"
    result = CliRunner().invoke(
        app,
        ["ppo", "--policy", "tiny-llama", "--reward-model", str(rm_dir), "--prompts", str(prompts), "--steps", "6",
         "--batch-size", "4", "--minibatch-size", "4", "--max-new-tokens", "4", "--lr", "1e30", "--critic-lr", "1e30",
         "--output", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: step ") and ("= nan" in lines[0] or "= inf" in lines[0])
    assert not (out / "metrics.json").exists() and not (out / "policy").exists()
    logged = [json.loads(line, parse_constant=lambda c: 1 / 0) for line in (out / "metrics.jsonl").read_text().splitlines()]
    failed_at = int(lines[0].removeprefix("error: step ").split(":")[0])
    assert [r["step"] for r in logged] == list(range(failed_at))  # the steps before, strict JSON
