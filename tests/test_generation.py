from __future__ import annotations

import json

import pytest
import torch

from rewardlab.data.errors import DataError
from rewardlab.generation import (
    load_samples,
    sample,
    save_samples,
    truncate_at_eos,
)
from rewardlab.modeling.tiny import build_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: extra threads only add overhead

PROMPTS = [
    [{"role": "user", "content": "reverse: dbca"}],
    "plain text prompt",
    [{"role": "user", "content": "sort: abcdefgh"}],
]


@pytest.fixture(scope="module")
def eos_prone_model():
    """The random tiny Llama with an LM-head bias that makes EOS likely (~12% a step at temperature 0.7): some
    samples finish early, some run to max_new_tokens."""
    model, tokenizer = build_tiny_llama(seed=0)
    old_head = model.lm_head
    head = torch.nn.Linear(old_head.in_features, old_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 2.5
    model.lm_head = head
    return model, tokenizer


def test_truncate_at_eos():
    assert truncate_at_eos([5, 6, 2, 7, 2, 0], eos_id=2) == ([5, 6, 2], True)
    assert truncate_at_eos([5, 6], eos_id=2) == ([5, 6], False)
    assert truncate_at_eos([2, 0, 0], eos_id=2) == ([2], True)


def test_samples_have_the_right_shape(eos_prone_model):
    model, tokenizer = eos_prone_model
    batch = sample(model, tokenizer, PROMPTS, n=4, max_new_tokens=6, batch_size=5, seed=0)
    assert len(batch) == 12 and batch.prompts == PROMPTS
    assert [s.prompt_index for s in batch.samples] == [0] * 4 + [1] * 4 + [2] * 4
    rendered = "<|user|>reverse: dbca</s><|assistant|>"
    assert batch.samples[0].prompt_ids == tokenizer(rendered, add_special_tokens=False).input_ids
    assert batch.samples[4].prompt_ids == tokenizer("plain text prompt", add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    for s in batch.samples:
        assert 1 <= len(s.response_ids) <= 6
        assert eos not in s.response_ids[:-1]  # nothing after the first EOS
        assert s.finished == (s.response_ids[-1] == eos)
        assert tokenizer.pad_token_id not in s.response_ids
        assert s.text == tokenizer.decode(s.response_ids, skip_special_tokens=True)
        assert "</s>" not in s.text
    assert any(s.finished for s in batch.samples) and not all(s.finished for s in batch.samples)


def test_sampling_is_deterministic_and_leaves_global_rng_alone(eos_prone_model):
    model, tokenizer = eos_prone_model
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = sample(model, tokenizer, PROMPTS, n=3, max_new_tokens=6, batch_size=4, seed=7)
    assert torch.rand(1) == before
    assert sample(model, tokenizer, PROMPTS, n=3, max_new_tokens=6, batch_size=4, seed=7).samples == first.samples
    other = sample(model, tokenizer, PROMPTS, n=3, max_new_tokens=6, batch_size=4, seed=8)
    assert other.samples != first.samples


def test_samples_follow_the_model_continuation(eos_prone_model):
    """Greedy responses equal a naive token-by-token argmax loop on the unpadded prompt (left padding is harmless)."""
    model, tokenizer = eos_prone_model
    batch = sample(model, tokenizer, PROMPTS, max_new_tokens=5, temperature=0.0, batch_size=3)
    for s in batch.samples:
        ids = list(s.prompt_ids)
        expected = []
        with torch.no_grad():
            for _ in range(5):
                token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                expected.append(token)
                ids.append(token)
                if token == tokenizer.eos_token_id:
                    break
        assert s.response_ids == expected


def test_save_load_round_trip(tmp_path, eos_prone_model):
    model, tokenizer = eos_prone_model
    batch = sample(model, tokenizer, PROMPTS, n=2, max_new_tokens=4, seed=1)
    path = save_samples(tmp_path / "samples.jsonl", batch)
    loaded = load_samples(path)
    assert loaded.prompts == batch.prompts
    assert loaded.samples == batch.samples
    assert loaded.settings == batch.settings


def test_load_samples_reports_file_line_and_field(tmp_path):
    good = {"prompt": "p", "prompt_index": 0, "prompt_ids": [1], "response_ids": [2], "finished": True, "text": ""}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "response_ids": "oops"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'response_ids'"):
        load_samples(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2:"):
        load_samples(path)
