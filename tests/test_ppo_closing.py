"""PPO scores a generated chat turn as the reward model saw it in training: closed as the template closes it.

A policy stops at EOS; ChatML templates (SmolLM2, Qwen) close an assistant turn with "<|im_end|>\\n", and the reward model
reads its reward after that "\\n". The rollout appends the closing tokens for scoring and folds their token scores back
onto the EOS the policy chose. Checked against scoring the template-rendered conversation directly.
"""

from __future__ import annotations

import pytest
import torch

import rewardlab.rl.ppo as ppo
from rewardlab.data.templates import closing_ids_after_eos
from rewardlab.generation import Sample, SampleBatch, prompt_token_ids
from rewardlab.masks import fold_closing_scores
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.tiny import build_tiny_llama
from rewardlab.rl.ppo import PPOTrainer
from rewardlab.rl.ppo_config import PPOConfig
from rewardlab.scoring import score_completions

# The built-in template with ChatML's habit: a newline after the end-of-turn token.
CHATML_LIKE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PROMPTS = [[{"role": "user", "content": "copy: abc"}], [{"role": "user", "content": "sort: cba"}], "plain prompt:"]


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    policy, tokenizer = build_tiny_llama(seed=1)
    tokenizer.chat_template = CHATML_LIKE
    rm = build_reward_model("tiny-llama", head_dropout=0.0, seed=3).eval()
    rm.tokenizer.chat_template = CHATML_LIKE
    eos = tokenizer.eos_token_id
    answers = [("abc", True), ("ab", False), (" done", True)]  # finished chat, cut chat, finished plain string
    samples = [
        Sample(i, prompt_token_ids(tokenizer, PROMPTS[i]), tokenizer(text, add_special_tokens=False)["input_ids"]
               + ([eos] if done else []), done, text)
        for i, (text, done) in enumerate(answers)
    ]  # fmt: skip
    monkeypatch.setattr(ppo, "sample", lambda *args, **kwargs: SampleBatch(PROMPTS, samples))
    config = PPOConfig(output_dir=str(tmp_path), batch_size=3, minibatch_size=2, progress=False, save_policy=False)
    return PPOTrainer(config, policy=(policy, tokenizer), reward_model=rm, prompts=PROMPTS)


def test_closing_tokens_of_a_chatml_like_template(trainer):
    assert trainer.tokenizer.decode(closing_ids_after_eos(trainer.tokenizer)) == "\n"
    _, plain = build_tiny_llama(seed=0)
    assert closing_ids_after_eos(plain) == []  # the built-in template ends a turn at EOS


@pytest.mark.parametrize("shaping", ["sparse", "r3hf"])
def test_rewards_are_read_after_the_template_closes_the_turn(trainer, shaping):
    trainer.cfg.reward_shaping = shaping
    ro = trainer.rollout(PROMPTS, step=0)
    rm = trainer.reward_model
    closed_chat = score_completions(rm, [(PROMPTS[0], [{"role": "assistant", "content": "abc"}])])[0]
    plain = score_completions(rm, [(PROMPTS[2], " done")])[0]
    assert ro.sequence_scores[0].item() == pytest.approx(closed_chat.reward, abs=1e-5)  # as in training
    assert ro.sequence_scores[2].item() == pytest.approx(plain.reward, abs=1e-5)  # plain strings end at EOS already
    lengths = ro.batch.mask.sum(1).long()
    assert ro.token_scores.shape == ro.batch.mask.shape  # folded back onto the policy's own tokens
    if shaping == "sparse":
        assert ro.token_scores[0, lengths[0] - 1].item() == pytest.approx(closed_chat.reward, abs=1e-5)
        assert ro.token_scores[0].abs().sum().item() == pytest.approx(abs(closed_chat.reward), abs=1e-5)
    else:
        total = closed_chat.reward - closed_chat.prompt_reward
        assert ro.token_scores[0].sum().item() == pytest.approx(total, abs=1e-4)
    # the unfinished chat turn is scored as it stands (no EOS, nothing to close)
    with torch.no_grad():
        row = ro.batch.attention_mask[1].bool()
        as_is = rm(ro.batch.input_ids[1][row][None], torch.ones(1, int(row.sum()), dtype=torch.long)).sequence_rewards
    assert ro.sequence_scores[1].item() == pytest.approx(as_is.item(), abs=1e-5)


def test_fold_closing_scores_moves_closing_scores_onto_eos():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0], [5.0, 6.0, 7.0, 0.0, 0.0]])  # row 0 closed by 2 tokens
    folded = fold_closing_scores(scores, mask, 2)
    assert folded.tolist() == [[1.0, 9.0, 0.0], [5.0, 6.0, 7.0]]
