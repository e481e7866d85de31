"""The verl adapter's verl-free parts: layout, folding tool tokens, options, the legacy manager on a verl-shaped batch.

The same code against the real verl package (its DataProto, loaders, agent loop and GAE): tests/verl_upstream/.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from rewardlab.data.templates import encode_prompt_response
from rewardlab.integrations.verl import (
    RowScore,
    TokenRewardManager,
    TokenRewardScorer,
    VerlRewardOptions,
    fold_to_policy_tokens,
    pad_token_rewards,
    place_token_rewards,
    response_token_rewards,
    shared_reward_model,
    verl_rows,
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


def test_pad_and_place_token_rewards() -> None:
    assert pad_token_rewards([[1.0, 2.0], [], [3.0]], 3).tolist() == [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="row 0"):
        pad_token_rewards([[1.0, 2.0]], 1)
    placed = place_token_rewards([[1.0, 2.0], [3.0]], torch.tensor([[1, 1, 0], [0, 1, 0]]))
    assert placed.tolist() == [[1.0, 2.0, 0.0], [0.0, 3.0, 0.0]]
    with pytest.raises(ValueError, match="row 1: 2 token rewards for 1"):
        place_token_rewards([[1.0, 2.0], [3.0, 4.0]], torch.tensor([[1, 1, 0], [0, 1, 0]]))


def fold_by_loop(rewards: list[float], mask: list[int]) -> list[float]:
    """The rule written as a plain loop: each non-policy reward goes to the last policy token before it, else the
    first after it; nothing is kept when there is no policy token."""
    out = [0.0] * len(rewards)
    policy = [j for j, m in enumerate(mask) if m]
    for j, r in enumerate(rewards):
        if mask[j]:
            out[j] += r
        elif policy:
            earlier = [k for k in policy if k < j]
            out[earlier[-1] if earlier else policy[0]] += r
    return out


def test_fold_to_policy_tokens_matches_the_rule_and_keeps_sums() -> None:
    rewards = torch.tensor(
        [
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # policy, tool, tool, policy, policy, padding
            [1.0, 2.0, 3.0, 4.0, 0.0, 0.0],  # starts with tool output
            [1.0, 2.0, 0.0, 0.0, 0.0, 0.0],  # no policy token at all
            [0.5, -1.0, 2.0, 0.0, 0.0, 0.0],  # all policy
        ]
    )
    mask = torch.tensor([[1, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    folded = fold_to_policy_tokens(rewards, mask)
    for i in range(len(rewards)):
        assert folded[i].tolist() == pytest.approx(fold_by_loop(rewards[i].tolist(), mask[i].tolist()))
    assert folded[0].tolist() == [6.0, 0.0, 0.0, 4.0, 11.0, 0.0]
    assert torch.all(folded[mask == 0] == 0)  # nothing left on tokens the policy did not generate
    for i in (0, 1, 3):
        assert float(folded[i].sum()) == pytest.approx(float(rewards[i].sum()))


def test_verl_rows_drop_padding_on_both_sides() -> None:
    ids = torch.tensor([[0, 5, 6, 7, 8, 0], [9, 9, 9, 1, 0, 0]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    assert verl_rows(ids, mask, prompt_length=3) == [([5, 6], [7, 8]), ([9, 9, 9], [1])]


def test_options_validate_what_a_verl_config_passes() -> None:
    assert VerlRewardOptions.from_kwargs({"reward_model": "rm", "max_resp_len": 10}).method == "r3hf"  # verl's own key
    with pytest.raises(ValueError, match="reward_model .* or reward_kwargs.server_url"):
        VerlRewardOptions.from_kwargs({})
    with pytest.raises(ValueError, match="not both"):
        VerlRewardOptions(reward_model="rm", server_url="http://x")
    with pytest.raises(ValueError, match="unknown token-reward method"):
        VerlRewardOptions(reward_model="rm", method="dense")
    with pytest.raises(ValueError, match="micro_batch_size"):
        VerlRewardOptions(reward_model="rm", micro_batch_size=0)


@pytest.fixture(scope="module")
def rm():
    return build_reward_model("tiny-llama", seed=0).eval()


def verl_batch(tokenizer, items, prompt_length: int, response_length: int, tool_spans=()) -> SimpleNamespace:
    """A DataProto stand-in built the way verl builds one: left-padded prompts, right-padded responses; `tool_spans`
    (row, start, end) marks response tokens the policy did not generate (response_mask 0)."""
    pad = tokenizer.pad_token_id
    prompts = torch.full((len(items), prompt_length), pad)
    responses = torch.full((len(items), response_length), pad)
    mask = torch.zeros(len(items), prompt_length + response_length, dtype=torch.long)
    for i, (prompt, response) in enumerate(items):
        encoded = encode_prompt_response(tokenizer, prompt, response)
        prompt_ids, response_ids = encoded.input_ids[: encoded.response_start], encoded.input_ids[encoded.response_start :]
        prompts[i, prompt_length - len(prompt_ids) :] = torch.tensor(prompt_ids)
        responses[i, : len(response_ids)] = torch.tensor(response_ids)
        mask[i, prompt_length - len(prompt_ids) : prompt_length + len(response_ids)] = 1
    response_mask = mask[:, prompt_length:].clone()
    for row, lo, hi in tool_spans:
        response_mask[row, lo:hi] = 0
    batch = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": mask,
        "response_mask": response_mask,
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


def test_manager_folds_rewards_of_tool_tokens_onto_the_policy(rm) -> None:
    data = verl_batch(rm.tokenizer, ITEMS, prompt_length=32, response_length=28, tool_spans=[(0, 2, 5), (1, 4, 9)])
    rewards = TokenRewardManager(rm.tokenizer, reward_model=rm)(data)
    expected = score_completions(rm, ITEMS, token_rewards="r3hf")
    for i, want in enumerate(expected):
        dense = want.token_rewards + [0.0] * (28 - len(want.token_rewards))
        assert rewards[i].tolist() == pytest.approx(fold_by_loop(dense, data.batch["response_mask"][i].tolist()), abs=1e-5)
        assert float(rewards[i].sum()) == pytest.approx(want.reward - want.prompt_reward, abs=1e-4)
    assert torch.all(rewards[data.batch["response_mask"] == 0] == 0)


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


def test_a_path_loads_lazily_and_once_per_process(tmp_path) -> None:
    path = tmp_path / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=3).save_pretrained(path)
    train = TokenRewardManager(None, reward_model=str(path), device="cpu")
    validate = TokenRewardManager(None, num_examine=1, reward_model=str(path), device="cpu")
    assert train.scorer._rm is None  # nothing loaded until verl calls it (with the reward loop on, it never does)
    assert train.scorer.rm is validate.scorer.rm is shared_reward_model(str(path), "cpu")
    assert isinstance(TokenRewardScorer(train.options).settings.method, str)


def test_no_verl_import_at_load() -> None:
    code = "import sys, rewardlab.integrations.verl, rewardlab.integrations.trl; print('verl' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


CHATML_LIKE = (  # closes a turn with EOS and a newline, as ChatML closes with "<|im_end|>\n"
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_a_chat_turn_stopped_at_eos_is_closed_as_the_template_closes_it() -> None:
    """A policy stops at EOS; the template (and rewardlab's training data) goes on with "\\n". The reward is read after
    it, as in training, and the newline's token reward goes to the EOS the policy generated."""
    rm = build_reward_model("tiny-llama", seed=5).eval()
    rm.tokenizer.chat_template = CHATML_LIKE
    chat = ([{"role": "user", "content": "Say hi."}], [{"role": "assistant", "content": "Hello there"}])
    plain = ("What is 2 + 2?", " It is 4.")
    want_chat, want_plain = score_completions(rm, [chat, plain], token_rewards="r3hf")
    newline = rm.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert want_chat.tokens[-2:] == ["</s>", "\n"] and len(newline) == 1

    data = verl_batch(rm.tokenizer, [chat, plain], prompt_length=32, response_length=28)
    generated = data.batch["attention_mask"][0, 32:].sum()  # drop the trailing "\n": the policy stopped at EOS
    data.batch["attention_mask"][0, 32 + generated - 1] = 0
    data.batch["responses"][0, generated - 1] = rm.tokenizer.pad_token_id
    data.batch["input_ids"] = torch.cat([data.batch["prompts"], data.batch["responses"]], dim=1)
    data.batch["response_mask"] = data.batch["attention_mask"][:, 32:].clone()
    out = TokenRewardManager(rm.tokenizer, reward_model=rm)(data, return_dict=True)
    rewards = out["reward_tensor"]

    n = len(want_chat.token_rewards) - 1  # the policy's tokens: up to its EOS
    assert rewards[0, : n - 1].tolist() == pytest.approx(want_chat.token_rewards[: n - 1], abs=1e-5)
    assert float(rewards[0, n - 1]) == pytest.approx(want_chat.token_rewards[n - 1] + want_chat.token_rewards[n], abs=1e-5)
    assert torch.all(rewards[0, n:] == 0)
    assert out["reward_extra_info"]["rm_score"][0] == pytest.approx(want_chat.reward, abs=1e-5)
    assert float(rewards[0].sum()) == pytest.approx(want_chat.reward - want_chat.prompt_reward, abs=1e-4)
    # plain text is not a chat turn: scored as it is
    m = len(want_plain.token_rewards)
    assert rewards[1, :m].tolist() == pytest.approx(want_plain.token_rewards, abs=1e-5)
    assert out["reward_extra_info"]["rm_score"][1] == pytest.approx(want_plain.reward, abs=1e-5)


def test_fold_added_moves_the_closing_rewards_onto_eos_as_list_arithmetic_does() -> None:
    rng = torch.Generator().manual_seed(0)
    for added in (1, 2, 3):
        rewards = torch.randn(5 + added, generator=rng).tolist()
        expected = rewards[:-added]
        expected[-1] += sum(rewards[-added:])
        folded = TokenRewardScorer.fold_added(RowScore(1.0, 0.5, rewards), added)
        assert (folded.reward, folded.prompt_reward, folded.token_rewards) == (1.0, 0.5, expected)
    assert TokenRewardScorer.fold_added(RowScore(1.0, 0.5, [0.25]), 0).token_rewards == [0.25]
