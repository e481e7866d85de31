"""One attention call per layer for packed batches (varlen FlashAttention, flex attention), the kernel choice, gradient
checkpointing and Liger's fused log-probs, each checked where it can run on a CPU.

What runs here and what does not:
- flex attention: its block-causal mask is compared with the one torch builds from the mask function; the eager
  (reference) kernel and one compiled kernel are compared with per-sequence attention and padded batches, forward only:
  torch has no flex-attention backward on CPU, so its gradients are a GPU check;
- varlen: torch's kernel is CUDA-only; rewardlab's glue around it (layout, cu_seqlens, GQA, window, both signatures torch
  has shipped) is checked with a stand-in kernel that computes attention per sequence;
- Liger: runs under Triton's CPU interpreter (liger-kernel and triton come with the dev extra, as in CI);
  its refusals run always.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from helpers import perturb
from rewardlab import packed_attention
from rewardlab.data.pairs import collate_pairs, encode_pairs
from rewardlab.data.types import PreferenceExample
from rewardlab.modeling.reward_model import LoraSettings, RewardModel, build_reward_model, choose_kernels
from rewardlab.objective import compute_loss
from rewardlab.packed_attention import (
    document_block_mask,
    flex_attention_packed,
    packed_attention_unavailable_reason,
    segment_attention,
    select_packed_attention,
    varlen_attention,
)
from rewardlab.packing import boundaries
from rewardlab.rm_trainer.build import kernel_settings
from rewardlab.train_rm import RewardTrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5
EXAMPLES = [
    PreferenceExample(prompt="reverse: abcd", chosen="dcba", rejected="abdc and more words"),
    PreferenceExample(prompt="hello there, how are you today?", chosen="fine, thanks", rejected="no"),
    PreferenceExample(prompt="sort: ba", chosen="ab", rejected="ba, or maybe ab, who knows"),
]


def pair_batch(model: RewardModel, side: str = "right") -> dict[str, torch.Tensor]:
    pairs, _ = encode_pairs(model.tokenizer, EXAMPLES, max_length=None)
    return collate_pairs(pairs, model.tokenizer.pad_token_id, side)


def model_for(lora: bool = False) -> RewardModel:
    settings = LoraSettings(r=4, alpha=8, dropout=0.0) if lora else None
    model = build_reward_model("tiny-llama", head_dropout=0.0, lora=settings)
    perturb(model)
    return model


def qkv(lengths: list[int], kv_heads: int, dim: int = 8, grad: bool = False):
    torch.manual_seed(0)
    n = sum(lengths)
    q = torch.randn(1, 4, n, dim, requires_grad=grad)
    k, v = (torch.randn(1, kv_heads, n, dim, requires_grad=grad) for _ in range(2))
    return q, k, v


# ----- flex: the block mask -----
@pytest.mark.parametrize("seed", range(6))
def test_document_block_mask_matches_torchs_mask_from_the_mask_function(seed):
    from torch.nn.attention.flex_attention import create_block_mask

    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 8))]
    window = [None, None, 5, 100, 200, 1000][seed]
    block = [128, 16, 128, 32, 128, 64][seed]
    cu = boundaries(torch.tensor(lengths))
    n = int(cu[-1])
    doc = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))

    def reference_mask(b, h, q, kv):  # the rule, written independently: same sequence, causal, within the window
        allowed = (doc[q] == doc[kv]) & (q >= kv)
        return allowed if window is None else allowed & (q - kv < window)

    ours = document_block_mask(cu, window, block)
    torchs = create_block_mask(reference_mask, None, None, n, n, device="cpu", BLOCK_SIZE=block)
    assert torch.equal(ours.to_dense(), torchs.to_dense())  # the same blocks are visited
    assert ours.full_kv_num_blocks.sum() == torchs.full_kv_num_blocks.sum()  # and the same ones skip the mask
    i = torch.arange(n)
    assert torch.equal(ours.mask_mod(0, 0, i[:, None], i[None, :]), reference_mask(0, 0, i[:, None], i[None, :]))


# ----- flex: the kernel, forward only (no backward on CPU) -----
@pytest.mark.parametrize("kv_heads, window", [(4, None), (2, None), (2, 3)], ids=["mha", "gqa", "sliding-window"])
def test_eager_flex_attention_matches_per_sequence_attention(kv_heads, window, monkeypatch):
    monkeypatch.setenv("REWARDLAB_FLEX_EAGER", "1")
    lengths = [4, 1, 6, 140]
    q, k, v = qkv(lengths, kv_heads)
    expected, _ = segment_attention(None, q, k, v, None, scaling=0.3, sliding_window=window, segment_lengths=lengths)
    masks = {window: document_block_mask(boundaries(torch.tensor(lengths)), window)}
    out, weights = flex_attention_packed(None, q, k, v, None, scaling=0.3, sliding_window=window, packed_block_masks=masks)
    assert weights is None and out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_flex_packed_forward_equals_padded(compiled, monkeypatch):
    """Rewards and log-probs of a flex-attention packed forward equal the padded forward's; compiled: inductor's CPU
    kernel (about 15 s to build the first time)."""
    if not compiled:
        monkeypatch.setenv("REWARDLAB_FLEX_EAGER", "1")
    model = model_for().eval()
    batch = pair_batch(model, "left")
    ids, mask, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    padded = model(ids, mask, response)
    model.kernels.attention = "flex"
    assert model.attention_kernel() == "flex"
    packed = model(ids, mask, response, packed=True)
    assert (packed.sequence_rewards - padded.sequence_rewards).abs().max() <= TOL
    real = mask.bool()
    assert (packed.position_rewards - padded.position_rewards)[real].abs().max() <= TOL
    torch.testing.assert_close(packed.logprobs, padded.logprobs, atol=1e-4, rtol=1e-5)
    assert model.causal_lm.config._attn_implementation == "sdpa"  # switched back after the packed call


def test_flex_refuses_training_on_cpu_in_one_line():
    model = model_for().train()
    model.kernels.attention = "flex"
    batch = pair_batch(model)
    with pytest.raises(ValueError, match="packed attention 'flex' cannot run here: flex attention has no backward on CPU"):
        model(batch["input_ids"], batch["attention_mask"], packed=True)
    q, k, v = qkv([3, 2], 4, grad=True)  # and the kernel itself, should anything call it directly
    masks = {None: document_block_mask(boundaries(torch.tensor([3, 2])))}
    with pytest.raises(NotImplementedError, match="no backward on CPU"):
        flex_attention_packed(None, q, k, v, None, packed_block_masks=masks)


# ----- varlen: rewardlab's glue, with a stand-in for the CUDA kernel -----
def stand_in_varlen(api: str):
    """A varlen_attn with torch's signature (`api`: "window" = current, "is_causal" = the first release) that computes
    causal attention per sequence, and checks what it is handed as FlashAttention would need it."""

    def check(q, k, v, cu_q, cu_k, max_q, max_k):
        assert q.dim() == 3 and q.shape[0] == int(cu_q[-1]) and q.stride(-1) == 1
        assert cu_q.dtype == torch.int32 and cu_q is cu_k and max_q == max_k == int(cu_q.diff().max())

    def run(q, k, v, cu, scale, window):
        out = []
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))
            group = qs.shape[0] // ks.shape[0]
            ks, vs = ks.repeat_interleave(group, 0), vs.repeat_interleave(group, 0)
            i = torch.arange(e - s)
            allowed = i[:, None] >= i[None, :]
            if window is not None:
                allowed &= (i[:, None] - i[None, :]) <= window  # flash: left window counts the diagonal
            scores = (qs @ ks.transpose(-1, -2)) * (scale if scale is not None else qs.shape[-1] ** -0.5)
            out.append((F.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ vs).transpose(0, 1))
        return torch.cat(out)

    if api == "window":

        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                        window_size=(-1, -1), enable_gqa=False):  # fmt: skip
            check(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)
            assert window_size[1] == 0 and (enable_gqa or key.shape[1] == query.shape[1])
            return run(query, key, value, cu_seq_q, scale, None if window_size[0] == -1 else window_size[0])

    else:

        def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
            check(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k)
            assert is_causal and key.shape[1] == query.shape[1]  # no GQA in this signature: heads repeated for it
            return run(query, key, value, cu_seq_q, None, None)

    import inspect

    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


@pytest.mark.parametrize(
    "api, kv_heads, window, scaling",
    [("window", 4, None, 0.3), ("window", 2, 3, 0.3), ("is_causal", 2, None, 8**-0.5)],
    ids=["current-api", "current-api-gqa-window", "first-api-gqa"],
)
def test_varlen_glue_matches_per_sequence_attention_with_gradients(api, kv_heads, window, scaling, monkeypatch):
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: stand_in_varlen(api))
    lengths = [4, 1, 6, 9]
    q, k, v = qkv(lengths, kv_heads, grad=True)
    cu = boundaries(torch.tensor(lengths)).to(torch.int32)
    out, _ = varlen_attention(None, q, k, v, None, scaling=scaling, sliding_window=window, packed_cu_seqlens=cu,
                              packed_max_seqlen=max(lengths))  # fmt: skip
    expected, _ = segment_attention(None, q, k, v, None, scaling=scaling, sliding_window=window, segment_lengths=lengths)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_varlen_first_api_refuses_what_it_cannot_do(monkeypatch):
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: stand_in_varlen("is_causal"))
    q, k, v = qkv([3, 2], 4)
    cu = boundaries(torch.tensor([3, 2])).to(torch.int32)
    with pytest.raises(ValueError, match="no sliding window"):
        varlen_attention(None, q, k, v, None, sliding_window=2, packed_cu_seqlens=cu, packed_max_seqlen=3)
    with pytest.raises(ValueError, match="no scale argument"):
        varlen_attention(None, q, k, v, None, scaling=0.3, packed_cu_seqlens=cu, packed_max_seqlen=3)
    with pytest.raises(ValueError, match="no dropout"):
        varlen_attention(None, q, k, v, None, dropout=0.1, packed_cu_seqlens=cu, packed_max_seqlen=3)


# ----- choosing a kernel -----
def test_kernel_choice_per_device_dtype_and_torch(monkeypatch):
    from transformers import MistralConfig

    config = build_reward_model("tiny-llama").causal_lm.config
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: stand_in_varlen("window"))
    assert select_packed_attention(config, cuda, torch.bfloat16, training=True) == "varlen"
    assert select_packed_attention(config, cuda, torch.float16, training=True) == "varlen"
    assert select_packed_attention(config, cuda, torch.float32, training=True) == "flex"  # FlashAttention: half only
    assert select_packed_attention(config, cpu, torch.float32, training=True) == "segments"
    assert select_packed_attention(config, cpu, torch.float32, training=False) == "segments"  # measured: flex no faster
    with pytest.raises(ValueError, match="'varlen' cannot run here: varlen attention runs on CUDA only"):
        select_packed_attention(config, cpu, torch.bfloat16, "varlen")
    with pytest.raises(ValueError, match="needs bf16 or fp16"):
        select_packed_attention(config, cuda, torch.float32, "varlen")
    # a torch without varlen, or whose varlen has no window for a sliding-window model: flex instead
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: (None, frozenset()))
    assert select_packed_attention(config, cuda, torch.bfloat16, training=True) == "flex"
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: stand_in_varlen("is_causal"))
    mistral = MistralConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, sliding_window=5)
    assert "no sliding window" in packed_attention_unavailable_reason("varlen", mistral, cuda, torch.bfloat16)
    assert select_packed_attention(mistral, cuda, torch.bfloat16, training=True) == "flex"
    # attention dropout while training: only the SDPA loop has it
    dropout = copy.deepcopy(config)
    dropout.attention_dropout = 0.1
    assert select_packed_attention(dropout, cuda, torch.bfloat16, training=True) == "segments"
    assert select_packed_attention(dropout, cuda, torch.bfloat16, training=False) == "varlen"  # scoring: no dropout
    with pytest.raises(ValueError, match="not one of auto, segments, varlen, flex"):
        select_packed_attention(config, cpu, torch.float32, "flash")


def test_training_records_the_kernels_and_refuses_impossible_ones(easy_data, tmp_path):
    model = build_reward_model("tiny-llama")
    cpu = torch.device("cpu")

    def choices(**settings):  # as the trainer chooses them (rm_trainer.build.prepare_model)
        cfg = RewardTrainingConfig(train_data="-", **settings)
        model.kernels = kernel_settings(cfg, bf16=False, sharded=False)
        return choose_kernels(model, cpu, torch.float32, packed=cfg.padding_free, logprobs=cfg.reg != "none")

    assert choices(reg="sft") == {"attention": "segments", "logprobs": "chunked"}
    assert choices(padding_free=False) == {"attention": "padded"}
    with pytest.raises(ValueError, match="'varlen' cannot run here"):
        choices(attention="varlen")
    with pytest.raises(ValueError, match="logprob_backend 'liger' cannot run here"):
        choices(reg="sft", logprob_backend="liger")
    with pytest.raises(ValueError, match="logprob_backend 'liger' cannot run here: the LM head is sharded"):
        model.kernels = kernel_settings(RewardTrainingConfig(train_data="-", logprob_backend="liger"), False, sharded=True)
        choose_kernels(model, torch.device("cuda"), torch.bfloat16, packed=False)
    with pytest.raises(ValueError, match="attention = 'flash' is not one of"):
        RewardTrainingConfig(train_data="-", attention="flash").validate()
    # the command line: one line, non-zero exit, nothing written
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "rewardlab.cli", "train-rm", "--train-data", str(easy_data / "small.jsonl"), "--attention",
         "varlen", "--max-steps", "1", "--no-progress", "--output-dir", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode != 0 and not (out / "config.json").exists()
    assert "varlen attention runs on CUDA only" in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ----- gradient checkpointing: same losses and gradients -----
@pytest.mark.parametrize("reg, lora", [("sft", False), ("dpo-noref", True)])
def test_gradient_checkpointing_keeps_losses_and_gradients(reg, lora):
    base = model_for(lora).train()
    results = {}
    for checkpointing, padding_free in ((False, False), (True, True), (True, False)):
        model = copy.deepcopy(base)
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.causal_lm.is_gradient_checkpointing
        cfg = RewardTrainingConfig(train_data="-", reg=reg, padding_free=padding_free)
        stats = compute_loss(model, pair_batch(model, "left"), cfg, cfg.padding_free)
        stats["loss"].backward()
        results[checkpointing, padding_free] = stats, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    reference_stats, reference_grads = results[False, False]
    for key in ((True, True), (True, False)):
        stats, grads = results[key]
        for name in reference_stats:
            torch.testing.assert_close(stats[name], reference_stats[name], atol=TOL, rtol=1e-5)
        assert grads.keys() == reference_grads.keys() and grads
        for name, grad in reference_grads.items():
            torch.testing.assert_close(grads[name], grad, atol=TOL, rtol=1e-4, msg=name)


# ----- Liger's fused linear cross-entropy -----
def test_liger_refusals_name_the_reason(monkeypatch):
    from rewardlab.modeling import logprobs as rm_module

    model = build_reward_model("tiny-llama")
    head = model.lm_head
    if importlib.util.find_spec("liger_kernel") is None:
        assert "not installed" in rm_module.liger_unavailable_reason(head, torch.device("cpu"))
    monkeypatch.setattr(rm_module, "liger_version", lambda: "0.8.1")
    assert "wrong gradients" in rm_module.liger_unavailable_reason(head, torch.device("cuda"))
    monkeypatch.setattr(rm_module, "liger_version", lambda: "0.8.5")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "run on CUDA, not cpu" in rm_module.liger_unavailable_reason(head, torch.device("cpu"))
    assert rm_module.liger_unavailable_reason(head, torch.device("cuda")) is None
    assert "not a plain Linear" in rm_module.liger_unavailable_reason(torch.nn.Sequential(head), torch.device("cuda"))
    model.kernels.logprob_backend = "liger"
    with pytest.raises(ValueError, match="logprob_backend 'liger' cannot run here: Liger's Triton kernels run on CUDA"):
        model._token_logprobs(torch.randn(3, 64), torch.tensor([1, 2, 3]))
    model.kernels.logprob_backend = "auto"  # falls back to the chunked path
    assert model.logprob_kernel() == "chunked"


LIGER_CHECK = """
import torch
from rewardlab.modeling.reward_model import build_reward_model

torch.manual_seed(0)
model = build_reward_model("tiny-llama")
hidden = torch.randn(300, 64, requires_grad=True)
targets = torch.randint(0, model.lm_head.out_features, (300,))
weights = torch.randn(300)  # a different upstream gradient per token, as the per-sequence GRM losses give
results = {}
for backend in ("chunked", "liger"):
    model.kernels.logprob_backend = backend
    model.kernels.logprob_chunk_tokens = 128
    assert model.logprob_kernel() == backend
    model.lm_head.weight.grad, hidden.grad = None, None
    logp = model._token_logprobs(hidden, targets)
    (logp * weights).sum().backward()
    results[backend] = logp.detach(), hidden.grad.clone(), model.lm_head.weight.grad.clone()
for name, a, b in zip(("log-probs", "hidden grad", "head grad"), results["liger"], results["chunked"]):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
print("liger == chunked")
"""


def test_liger_logprobs_equal_chunked_values_and_gradients():
    """Under Triton's CPU interpreter (set before triton is imported, hence a subprocess)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(LIGER_CHECK)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "liger == chunked" in done.stdout
