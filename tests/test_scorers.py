"""Scorers (rewardlab.rl.scorers): reward-model scores against one-at-a-time forward passes, the world's gold, specs;
policy and prompt sources (rewardlab.rl.sources)."""

from __future__ import annotations

import json

import pytest
import torch

from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.rl.scorers import FunctionScorer, RewardModelScorer, Scorer, resolve_scorer
from rewardlab.rl.sources import resolve_policy, resolve_prompts
from rewardlab.tasks.world import GoldReward

PROMPTS = [
    [{"role": "user", "content": "copy: abc"}],
    [{"role": "user", "content": "please reverse abcdefg"}],
    "a plain string prompt: ",
    [{"role": "user", "content": "sort: hgf"}],
    [{"role": "user", "content": "rotate: bcda"}],
]
RESPONSES = ["abc", "gfedcb", "anything at all, rather long", "", "cdab"]


@pytest.fixture(scope="module")
def reward_model():
    return build_reward_model("tiny-llama", head_dropout=0.0, seed=5).eval()


def one_at_a_time(rm, prompt, response: str) -> float:
    """R(x, y) from a single unpadded sequence, rendered here by hand (chat template, or string + EOS)."""
    tok = rm.tokenizer
    if isinstance(prompt, list):
        text = tok.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    else:
        text = prompt + response + tok.eos_token
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return rm(ids, torch.ones_like(ids)).sequence_rewards[0].item()


def test_reward_model_scorer_matches_single_sequences_in_input_order(reward_model) -> None:
    scorer = RewardModelScorer(reward_model, batch_size=2)  # 5 pairs of different lengths: 3 padded batches
    scores = scorer.score(PROMPTS, RESPONSES)
    expected = [one_at_a_time(reward_model, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(round(s, 6) for s in scores)) == len(scores)  # distinct, so a permutation would be caught
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="responses"):
        scorer.score(PROMPTS, RESPONSES[:2])


def test_resolve_scorer_loads_a_saved_reward_model(tmp_path, reward_model) -> None:
    reward_model.save_pretrained(tmp_path / "rm")
    scorer = resolve_scorer(str(tmp_path / "rm"), device="cpu", batch_size=3)
    assert isinstance(scorer, RewardModelScorer) and isinstance(scorer, Scorer)
    expected = [one_at_a_time(reward_model, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(FileNotFoundError):
        resolve_scorer(str(tmp_path / "missing"), device="cpu")


def test_builtin_gold_scorer() -> None:
    scorer = resolve_scorer("builtin")
    assert isinstance(scorer, GoldReward) and isinstance(scorer, Scorer)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[4], PROMPTS[3]]
    # copy abc -> abc (exact); reverse abcdefg = gfedcba, 6 of 7 positions right; rotate bcda = cdab exact; sort hgf = fgh, ""
    assert scorer.score(prompts, ["abc", "gfedcb", "cdab", ""]) == pytest.approx([1.0, 6 / 7, 1.0, 0.0])


def test_function_scorer() -> None:
    scorer = FunctionScorer(lambda prompt, response: len(response) + (0.5 if isinstance(prompt, str) else 0.0))
    assert isinstance(scorer, Scorer)
    assert scorer.score(PROMPTS[1:3], ["ab", "abcd"]) == [2.0, 4.5]
    with pytest.raises(ValueError):
        scorer.score(PROMPTS, ["x"])


def test_resolve_prompts(tmp_path) -> None:
    train = resolve_prompts("builtin", limit=6, seed=1)
    assert len(train) == 6 and all(p[0]["role"] == "user" for p in train)
    assert resolve_prompts("builtin", limit=6, seed=1) == train  # deterministic
    assert len(resolve_prompts("builtin", seed=0, default_count=9)) == 9
    ood = resolve_prompts("builtin:test_ood", limit=4)
    assert ood != resolve_prompts("builtin", limit=4)
    with pytest.raises(ValueError):
        resolve_prompts("builtin:nope", limit=2)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["one", "two", "three"]))
    assert resolve_prompts(str(path), limit=2) == ["one", "two"]


def test_resolve_policy_tiny_llama() -> None:
    model, tokenizer = resolve_policy("tiny-llama", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert tokenizer.eos_token_id == 2 and model.config.vocab_size == len(tokenizer)
