"""The verl adapter: tensor layout and the reward-manager call, without verl installed."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from rewardlab.data.templates import encode_prompt_response
from rewardlab.integrations.verl import (
    TokenRewardManager,
    pad_token_rewards,
    register_with_verl,
    response_token_rewards,
)
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.scoring import score_completions

ITEMS = [
    ("What is 2 + 2?", " It is 4."),
    ("Write a haiku about rain.", " Soft rain on the roof"),
    ("x", " y"),
]


def test_response_token_rewards_layout_for_any_padding() -> None:
    # Row 0 right-padded (prompt 2, response 3), row 1 left-padded (prompt 1, response 2), row 2 padded on both sides
    # as verl's concatenation is (prompt 2 after 1 pad, response 1, then padding).
    token_rewards = torch.tensor(
        [
            [0.0, 0.0, 1.0, 2.0, 3.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 4.0, 5.0],
            [0.0, 0.0, 0.0, 6.0, 0.0, 0.0],
        ]
    )
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 0, 0]])
    start = torch.tensor([2, 4, 3])
    layout = response_token_rewards(token_rewards, mask, start, response_length=4)
    assert layout.tolist() == [[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 0.0, 0.0], [6.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="response_length"):
        response_token_rewards(token_rewards, mask, start, response_length=2)


def test_pad_token_rewards() -> None:
    assert pad_token_rewards([[1.0, 2.0], [], [3.0]], 3).tolist() == [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="row 0"):
        pad_token_rewards([[1.0, 2.0]], 1)


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", seed=0).eval()


def verl_batch(tokenizer, items, prompt_length: int, response_length: int) -> SimpleNamespace:
    """A DataProto stand-in built the way verl builds one: left-padded prompts, right-padded responses."""
    pad = tokenizer.pad_token_id
    prompts = torch.full((len(items), prompt_length), pad)
    responses = torch.full((len(items), response_length), pad)
    mask = torch.zeros(len(items), prompt_length + response_length, dtype=torch.long)
    for i, (prompt, response) in enumerate(items):
        encoded = encode_prompt_response(tokenizer, prompt, response)
        prompt_ids, response_ids = (
            encoded.input_ids[: encoded.response_start],
            encoded.input_ids[encoded.response_start :],
        )
        prompts[i, prompt_length - len(prompt_ids) :] = torch.tensor(prompt_ids)
        responses[i, : len(response_ids)] = torch.tensor(response_ids)
        mask[i, prompt_length - len(prompt_ids) : prompt_length + len(response_ids)] = 1
    batch = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": mask,
    }
    return SimpleNamespace(batch=batch)


@pytest.mark.parametrize("micro_batch_size", [1, 8])
def test_manager_gives_rewardlab_token_rewards_in_verl_layout(rm, micro_batch_size: int) -> None:
    data = verl_batch(rm.tokenizer, ITEMS, prompt_length=32, response_length=28)
    manager = TokenRewardManager(rm.tokenizer, num_examine=0, reward_model=rm, micro_batch_size=micro_batch_size)
    out = manager(data, return_dict=True)
    rewards = out["reward_tensor"]
    assert rewards.shape == data.batch["responses"].shape and rewards.dtype == torch.float32
    expected = score_completions(rm, ITEMS, token_rewards="r3hf")
    for i, want in enumerate(expected):
        n = len(want.token_rewards)
        assert rewards[i, :n].tolist() == pytest.approx(want.token_rewards, abs=1e-5)
        assert torch.all(rewards[i, n:] == 0)
        assert float(rewards[i].sum()) == pytest.approx(want.reward - want.prompt_reward, abs=1e-4)
    assert out["reward_extra_info"]["rm_score"] == pytest.approx([r.reward for r in expected], abs=1e-5)
    assert torch.equal(manager(data), rewards)  # plain call: the tensor alone


def test_manager_sparse_puts_the_score_on_the_last_valid_token(rm) -> None:
    data = verl_batch(rm.tokenizer, ITEMS, prompt_length=30, response_length=25)
    rewards = TokenRewardManager(rm.tokenizer, reward_model=rm, method="sparse")(data)
    expected = score_completions(rm, ITEMS)
    valid = data.batch["attention_mask"][:, 30:].sum(-1)
    for i, want in enumerate(expected):
        assert float(rewards[i, valid[i] - 1]) == pytest.approx(want.reward, abs=1e-5)
        assert int((rewards[i] != 0).sum()) == 1


def test_manager_checks_the_vocabulary_and_the_method(rm) -> None:
    other = SimpleNamespace(get_vocab=lambda: {"a": 0})
    with pytest.raises(ValueError, match="vocabulary"):
        TokenRewardManager(other, reward_model=rm)
    TokenRewardManager(other, reward_model=rm, check_tokenizer=False)
    with pytest.raises(ValueError, match="unknown token-reward method"):
        TokenRewardManager(rm.tokenizer, reward_model=rm, method="dense")
    with pytest.raises(ValueError, match="reward_model"):
        TokenRewardManager(rm.tokenizer)


def test_no_verl_import_at_load_and_a_clear_error_without_it() -> None:
    code = "import sys, rewardlab.integrations.verl; print('verl' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
    if "verl" not in sys.modules:
        with pytest.raises(ImportError, match="verl is not installed"):
            register_with_verl()
