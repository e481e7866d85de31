"""Padding-free batches: packing arithmetic, segment attention, and packed == padded for rewards, losses, gradients, training."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from helpers import perturb
from rewardlab.data.pairs import collate_pairs, encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.modeling import reward_model as reward_model_module
from rewardlab.modeling.head import RewardHead
from rewardlab.modeling.reward_model import LoraSettings, RewardModel, RewardModelConfig, build_reward_model
from rewardlab.objective import compute_loss
from rewardlab.packed_attention import segment_attention
from rewardlab.packing import pack_padded, pack_values, packing_unsupported_reason, unpack
from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

TOL = 1e-5  # float32: packed and padded differ only by summation order in the matrix products

EXAMPLES = [  # prompts and responses of different lengths, so chosen/rejected rows pad differently
    PreferenceExample(prompt="reverse: abcd", chosen="dcba", rejected="abdc and more words"),
    PreferenceExample(prompt="hello there, how are you today?", chosen="fine, thanks", rejected="no"),
    PreferenceExample(prompt="sort: ba", chosen="ab", rejected="ba, or maybe ab, who knows"),
]


def pair_batch(model: RewardModel, side: str) -> dict[str, torch.Tensor]:
    pairs, _ = encode_pairs(model.tokenizer, EXAMPLES, max_length=None)
    return collate_pairs(pairs, model.tokenizer.pad_token_id, side)


def model_for(lora: bool, reference_copy: bool = False) -> RewardModel:
    settings = LoraSettings(r=4, alpha=8, dropout=0.0) if lora else None
    model = build_reward_model("tiny-llama", head_dropout=0.0, lora=settings, reference_copy=reference_copy)
    perturb(model)
    return model


# ----- packing arithmetic, by hand -----
@pytest.mark.parametrize("side", ["left", "right"])
def test_pack_padded_by_hand(side):
    rows = [[5, 6, 7], [8, 9]]
    if side == "right":
        ids, mask = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    else:
        ids, mask = torch.tensor([[5, 6, 7], [0, 8, 9]]), torch.tensor([[1, 1, 1], [0, 1, 1]])
    packed = pack_padded(ids, mask)
    assert packed.input_ids.tolist() == [rows[0] + rows[1]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert packed.cu_seqlens.tolist() == [0, 3, 5] and packed.lengths == [3, 2]
    assert packed.last_index.tolist() == [2, 4]
    assert packed.is_first.tolist() == [True, False, False, True, False]
    values = torch.arange(6.0).view(2, 3) + 1
    flat = pack_values(packed, values)
    assert flat.tolist() == values[mask.bool()].tolist()
    assert unpack(packed, flat, fill=-1.0).tolist() == torch.where(mask.bool(), values, -1.0).tolist()


def test_three_rows_and_holes_in_the_mask():
    packed = pack_padded(torch.tensor([[4, 5, 0], [6, 0, 0], [7, 8, 9]]), torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]))
    assert packed.input_ids.tolist() == [[4, 5, 6, 7, 8, 9]]
    assert packed.position_ids.tolist() == [[0, 1, 0, 0, 1, 2]]
    assert packed.cu_seqlens.tolist() == [0, 2, 3, 6]
    # a mask with a hole packs the real tokens in order, with positions counting real tokens (as the padded path does)
    holes = pack_padded(torch.tensor([[3, 0, 4, 5]]), torch.tensor([[1, 0, 1, 1]]))
    assert holes.input_ids.tolist() == [[3, 4, 5]] and holes.position_ids.tolist() == [[0, 1, 2]]


# ----- segment attention against a naive loop -----
def naive_attention(q, k, v, scale, window=None):
    """softmax(q k^T * scale + causal[/window] mask) v for one sequence, (heads, n, d), keys repeated per query group."""
    group = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
    n = q.shape[1]
    i = torch.arange(n)
    allowed = i[:, None] >= i[None, :]
    if window is not None:
        allowed &= (i[:, None] - i[None, :]) < window
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    return F.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("kv_heads, window", [(4, None), (2, None), (2, 3)], ids=["mha", "gqa", "sliding-window"])
def test_segment_attention_matches_per_sequence_loop(kv_heads, window):
    torch.manual_seed(0)
    lengths = [4, 1, 6]
    q = torch.randn(1, 4, sum(lengths), 8)
    k, v = torch.randn(1, kv_heads, sum(lengths), 8), torch.randn(1, kv_heads, sum(lengths), 8)
    out, weights = segment_attention(None, q, k, v, None, scaling=0.3, sliding_window=window, segment_lengths=lengths)
    assert weights is None and out.shape == (1, sum(lengths), 4, 8)
    start = 0
    for n in lengths:
        s = slice(start, start + n)
        expected = naive_attention(q[0, :, s], k[0, :, s], v[0, :, s], 0.3, window)
        torch.testing.assert_close(out[0, s], expected.transpose(0, 1))
        start += n


def test_segment_attention_refuses_a_dense_mask_or_missing_segments():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="segment_lengths"):
        segment_attention(None, q, q, q, None)
    with pytest.raises(ValueError, match="dense mask"):
        segment_attention(None, q, q, q, torch.ones(1, 1, 3, 3, dtype=torch.bool), segment_lengths=[3])


# ----- the reward model, packed vs padded -----
@torch.no_grad()
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_packed_forward_equals_padded(side, lora):
    model = model_for(lora).eval()
    batch = pair_batch(model, side)
    ids, mask, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    padded = model(ids, mask, response)
    packed = model(ids, mask, response, packed=True)
    assert (padded.sequence_rewards - packed.sequence_rewards).abs().max() <= TOL
    assert torch.equal(padded.last_index, packed.last_index)
    real = mask.bool()
    assert (padded.position_rewards - packed.position_rewards)[real].abs().max() <= TOL
    assert (packed.position_rewards[~real] == 0).all() and (packed.hidden_states[~real] == 0).all()
    assert (padded.hidden_states - packed.hidden_states)[real].abs().max() <= TOL
    torch.testing.assert_close(packed.logprobs, padded.logprobs, atol=1e-4, rtol=1e-5)
    # reference log-probs (LoRA: adapters disabled) differ from the policy's here, and agree packed vs padded
    if lora:
        ref_padded = model(ids, mask, response, reference=True).logprobs
        ref_packed = model(ids, mask, response, reference=True, packed=True).logprobs
        assert (ref_padded - padded.logprobs).abs().max() > 1e-3
        torch.testing.assert_close(ref_packed, ref_padded, atol=1e-4, rtol=1e-5)
    assert model.causal_lm.config._attn_implementation == "sdpa"  # switched back after the packed call


@torch.no_grad()
def test_packed_reference_copy_and_attention_weights_fall_back():
    model = model_for(lora=False, reference_copy=True).eval()
    batch = pair_batch(model, "right")
    args = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    torch.testing.assert_close(
        model(*args, reference=True, packed=True).logprobs, model(*args, reference=True).logprobs, atol=1e-4, rtol=1e-5
    )
    out = model(*args[:2], output_attentions=True, packed=True)  # attention weights need the padded eager path
    assert out.attentions is not None and out.attentions.shape[-1] == args[0].shape[1]


@pytest.mark.parametrize("arch", ["gqa-llama", "sliding-mistral"])
@torch.no_grad()
def test_packed_equals_padded_for_gqa_and_sliding_window(arch):
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from rewardlab.modeling.tiny import build_byte_tokenizer

    torch.manual_seed(0)
    tokenizer = build_byte_tokenizer()
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    if arch == "gqa-llama":
        lm = LlamaForCausalLM(LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=2))
    else:  # a window shorter than the sequences, so the band matters
        lm = MistralForCausalLM(MistralConfig(**common, num_attention_heads=4, num_key_value_heads=2, sliding_window=5))
    lm.config._attn_implementation = "sdpa"
    model = RewardModel(lm, tokenizer, RewardHead(32, dropout=0.0), RewardModelConfig(base_model=arch)).eval()
    batch = pair_batch(model, "left")
    padded = model(batch["input_ids"], batch["attention_mask"]).sequence_rewards
    packed = model(batch["input_ids"], batch["attention_mask"], packed=True).sequence_rewards
    assert (padded - packed).abs().max() <= TOL


def test_unsupported_models_fall_back_once_with_a_warning(monkeypatch, caplog):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    gemma = Gemma2ForCausalLM(
        Gemma2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=8)
    )  # fmt: skip
    assert "soft-capping" in packing_unsupported_reason(gemma)
    model = build_reward_model("tiny-llama", head_dropout=0.0).eval()
    assert packing_unsupported_reason(model.causal_lm) is None
    monkeypatch.setattr(reward_model_module, "packing_unsupported_reason", lambda lm: "no varlen kernel (test)")
    monkeypatch.setattr(reward_model_module, "_warned_unpackable", set())
    other = build_reward_model("tiny-llama", head_dropout=0.0).eval()
    batch = pair_batch(other, "right")
    with caplog.at_level(logging.WARNING, logger="rewardlab.modeling.reward_model"), torch.no_grad():
        first = other(batch["input_ids"], batch["attention_mask"], packed=True)
        other(batch["input_ids"], batch["attention_mask"], packed=True)
        copy.deepcopy(other)(batch["input_ids"], batch["attention_mask"], packed=True)
    assert [r.message for r in caplog.records].count(
        "padding-free batches unavailable (no varlen kernel (test)); using padded batches"
    ) == 1
    # the padded path's signature: padding positions hold computed values, not the packed path's zeros
    assert (first.position_rewards[~batch["attention_mask"].bool()] != 0).any()


# ----- the training objective: losses and gradients -----
@pytest.mark.parametrize(
    "reg, lora",
    [("none", False), ("sft", False), ("sft-nll", False), ("dpo", False), ("dpo-noref", False), ("dpo", True), ("sft", True)],
)
def test_losses_and_gradients_equal_packed_and_padded(reg, lora):
    base = model_for(lora, reference_copy=reg == "dpo" and not lora).train()
    results = {}
    for padding_free in (False, True):
        model = copy.deepcopy(base)
        cfg = RewardTrainingConfig(train_data="-", reg=reg, padding_free=padding_free, center_rewards_coefficient=0.01)
        stats = compute_loss(model, pair_batch(model, "left"), cfg, cfg.padding_free)
        stats["loss"].backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results[padding_free] = stats, grads
    (padded, padded_grads), (packed, packed_grads) = results[False], results[True]
    for key in padded:
        torch.testing.assert_close(packed[key], padded[key], atol=TOL, rtol=1e-5)
    assert ("reg_loss" in padded) == (reg != "none")
    assert padded_grads.keys() == packed_grads.keys() and len(padded_grads) > 0
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=TOL, rtol=1e-4, msg=name)


# ----- a whole training run -----
def test_packed_training_reaches_the_padded_weights(easy_data, tmp_path, monkeypatch):
    packed_calls = []
    original = RewardModel._forward_packed
    # training forwards only (the model is in train mode): the reward statistics recorded after training score packed too
    monkeypatch.setattr(
        RewardModel, "_forward_packed", lambda self, *a: packed_calls.extend([1] * self.training) or original(self, *a)
    )
    weights = {}
    for padding_free in (False, True):
        out = tmp_path / f"padding_free_{padding_free}"
        cfg = RewardTrainingConfig(
            train_data=str(easy_data / "small.jsonl"), output_dir=str(out), reg="sft", padding_free=padding_free,
            learning_rate=3e-3, per_device_train_batch_size=8, max_steps=4, head_dropout=0.0, progress=False,
            logging_steps=1,
        )  # fmt: skip
        train_reward_model(cfg)
        assert len(packed_calls) == (4 if padding_free else 0)  # each step ran packed, or none did
        weights[padding_free] = load_file(out / "model" / "model.safetensors") | load_file(
            out / "model" / "reward_head.safetensors"
        )
    from rewardlab.modeling.tiny import build_tiny_llama

    init = build_tiny_llama()[0].state_dict()
    moved = max((weights[True][n] - init[n]).abs().max().item() for n in init if n in weights[True])
    assert moved > 3e-3  # training moved the weights far beyond the tolerance below
    for name, w in weights[False].items():  # Adam amplifies float-summation differences slightly
        torch.testing.assert_close(weights[True][name], w, atol=1e-4, rtol=1e-3, msg=name)
