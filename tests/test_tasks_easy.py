from __future__ import annotations

import pytest
import torch

from rewardlab.modeling.tiny import build_tiny_llama
from rewardlab.tasks.easy import EASY_CORRUPTIONS, easy_preferences

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: extra threads only add overhead


def _encode(tokenizer, example, response):
    prompt = tokenizer.apply_chat_template(example.prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(response[0]["content"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return prompt_ids + response_ids


def test_easy_examples_are_well_formed_and_deterministic():
    examples = easy_preferences(200, seed=3)
    assert examples == easy_preferences(200, seed=3)
    assert examples != easy_preferences(200, seed=4)
    _, tokenizer = build_tiny_llama()
    for ex in examples:
        task, symbols = ex.prompt[0]["content"].split(": ")
        chosen, rejected = ex.chosen[0]["content"], ex.rejected[0]["content"]
        expected = {"copy": symbols, "reverse": symbols[::-1], "sort": "".join(sorted(symbols))}[task]
        assert chosen == expected
        wrong = [i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if c != r]
        assert 1 <= len(wrong) <= 2 and all(rejected[i] in EASY_CORRUPTIONS for i in wrong)
        assert ex.subset == f"easy/{task}" and ex.source == "easy" and ex.is_conversational
        assert len(_encode(tokenizer, ex, ex.chosen)) < 40


def test_tiny_bradley_terry_model_learns_easy_task():
    """A minimal BT trainer (last-token linear score) on the tiny Llama: the task must be learnable quickly."""
    torch.manual_seed(0)
    model, tokenizer = build_tiny_llama(seed=0)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)

    def scores(batch, side):
        seqs = [_encode(tokenizer, ex, getattr(ex, side)) for ex in batch]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        last = hidden[torch.arange(len(seqs)), mask.sum(-1) - 1]
        return head(last).squeeze(-1)

    train, held_out = easy_preferences(768, seed=0), easy_preferences(256, seed=1)
    for start in range(0, len(train), 32):
        batch = train[start : start + 32]
        loss = -torch.nn.functional.logsigmoid(scores(batch, "chosen") - scores(batch, "rejected")).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (scores(held_out, "chosen") > scores(held_out, "rejected")).float().mean().item()
    assert accuracy >= 0.95
