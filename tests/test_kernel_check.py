"""Fast kernels that check themselves (rewardlab.kernel_check), on a CPU: a kernel forced to fail and one forced to give
different numbers each fall back to the reference path with exactly one warning, and give the reference's numbers."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from rewardlab import kernel_check, packed_attention
from rewardlab.kernel_check import KernelChecks, difference, fallback_reason, tolerance
from rewardlab.modeling import reward_model as reward_model_module
from rewardlab.packed_attention import VARLEN_ATTENTION, segment_attention, select_packed_attention
from rewardlab.packing import boundaries
from test_packed_kernels import model_for, pair_batch, qkv, stand_in_varlen

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_checks():
    """Each test starts, and leaves the process, with no kernel checked."""
    kernel_check.reset_kernel_checks()
    yield
    kernel_check.reset_kernel_checks()


def check_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rewardlab.kernel_check" and r.levelno == logging.WARNING]


# ----- the comparison -----
def test_difference_is_relative_to_the_largest_reference_value_and_absolute_below_one():
    ref = torch.tensor([1.0, -4.0, 2.0])
    assert difference(torch.tensor([1.0, -4.0, 2.5]), ref) == pytest.approx(0.5 / 4)
    small = torch.tensor([0.1, 0.2])
    assert difference(torch.tensor([0.1, 0.25]), small) == pytest.approx(0.05)  # max |ref| < 1: absolute
    assert difference(ref.to(torch.bfloat16), ref) == 0.0
    nan = torch.tensor([float("nan"), 1.0])
    assert difference(nan.clone(), nan) == 0.0  # NaN where the reference has it: the kernel is not at fault
    assert difference(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0])) == float("inf")
    assert difference(torch.tensor([float("inf"), 1.0]), torch.tensor([3.0, 1.0])) == float("inf")
    assert difference(torch.zeros(2, 3), torch.zeros(3, 2)) == float("inf")


def test_tolerance_per_dtype(monkeypatch):
    assert tolerance(torch.bfloat16) == tolerance(torch.float16) == 2e-2
    assert tolerance(torch.float32) == 1e-4
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 products: fp32 kernels agree less closely
    try:
        assert tolerance(torch.float32) == 2e-3
    finally:
        torch.set_float32_matmul_precision(previous)


def test_a_kernel_that_agrees_is_checked_once_and_then_runs_alone(caplog):
    checks, calls = KernelChecks(), {"fast": 0, "reference": 0}

    def fast():
        calls["fast"] += 1
        return torch.full((3,), 2.0 + 1e-6)

    def reference():
        calls["reference"] += 1
        return torch.full((3,), 2.0)

    for _ in range(4):
        with torch.no_grad():
            assert torch.equal(checks.run("k", torch.float32, fast, reference, "ref"), torch.full((3,), 2.0 + 1e-6))
    assert calls == {"fast": 4, "reference": 1} and checks.fallbacks() == {} and check_warnings(caplog) == []


@pytest.mark.parametrize("fault", ["error", "mismatch"])
def test_a_failing_kernel_falls_back_once_with_one_warning(fault, caplog):
    checks, calls = KernelChecks(), {"fast": 0}

    def fast():
        calls["fast"] += 1
        if fault == "error":
            raise RuntimeError("no kernel image is available for execution on the device\nmore detail")
        return torch.tensor([1.0, 2.0, 3.5])

    def reference():
        return torch.tensor([1.0, 2.0, 3.0])

    results = [checks.run("k", torch.bfloat16, fast, reference, "ref", "test kernel") for _ in range(3)]
    assert all(torch.equal(r, torch.tensor([1.0, 2.0, 3.0])) for r in results) and calls["fast"] == 1
    (warning,) = check_warnings(caplog)
    assert warning.startswith("kernel check: test kernel 'k' (bfloat16) ") and "'ref' for the rest of this process" in warning
    if fault == "error":
        assert (
            "RuntimeError: no kernel image is available for execution on the device" in warning and "more detail" not in warning
        )
    else:
        assert f"by {0.5 / 3:.2e}" in warning and "tolerance 2e-02" in warning
    assert checks.fallback_reason("k", torch.bfloat16) is not None and checks.fallback_reason("k", torch.float16) is None
    assert list(checks.fallbacks()) == ["k/bfloat16"]


def test_out_of_memory_is_not_a_kernel_fault():
    def fast():
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        KernelChecks().run("k", torch.float32, fast, lambda: torch.zeros(1), "ref")


# ----- packed attention -----
def broken_varlen(fault: str):
    """torch's varlen_attn stand-in (per-sequence attention), made to raise or to give perturbed output."""
    varlen_attn, params = stand_in_varlen("window")

    def broken(*args, **kwargs):
        if fault == "error":
            raise RuntimeError("FlashAttention only supports Ampere GPUs or newer")
        return varlen_attn(*args, **kwargs) * 1.05

    return broken, params


@pytest.mark.parametrize("fault", ["error", "mismatch"])
def test_varlen_falls_back_to_segments_values_and_gradients(fault, monkeypatch, caplog):
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: broken_varlen(fault))
    from transformers import AttentionInterface

    attention = AttentionInterface()[VARLEN_ATTENTION]  # what transformers calls for the 'varlen' kernel
    lengths = [4, 1, 6, 9]
    cu = boundaries(torch.tensor(lengths)).to(torch.int32)
    kwargs = {"packed_cu_seqlens": cu, "packed_max_seqlen": max(lengths), "segment_lengths": lengths}
    for _ in range(2):
        q, k, v = qkv(lengths, 2, grad=True)
        out, _ = attention(None, q, k, v, None, scaling=0.3, **kwargs)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        expected, _ = segment_attention(None, q, k, v, None, scaling=0.3, segment_lengths=lengths)
        assert torch.equal(out, expected)
        for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), (q, k, v)), strict=True):
            assert torch.equal(got, want)
    (warning,) = check_warnings(caplog)
    assert "packed attention 'varlen' (float32)" in warning and "using 'segments'" in warning
    assert ("FlashAttention only supports" in warning) if fault == "error" else ("differs from 'segments' by" in warning)
    q, k, v = qkv(lengths, 2)  # without segment_lengths (a caller that passes cu_seqlens only): derived from them
    out, _ = attention(None, q, k, v, None, scaling=0.3, packed_cu_seqlens=cu, packed_max_seqlen=max(lengths))
    assert torch.equal(out, segment_attention(None, q, k, v, None, scaling=0.3, segment_lengths=lengths)[0])


def test_a_fallen_kernel_is_no_longer_chosen(monkeypatch):
    config = model_for().causal_lm.config
    cuda = torch.device("cuda")
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: stand_in_varlen("window"))
    assert select_packed_attention(config, cuda, torch.bfloat16) == "varlen"

    def failing():
        raise RuntimeError("no kernel")

    kernel_check.checked("varlen", torch.bfloat16, failing, lambda: torch.zeros(1), "segments")
    assert select_packed_attention(config, cuda, torch.bfloat16) == "segments"  # auto
    assert select_packed_attention(config, cuda, torch.bfloat16, "varlen") == "segments"  # asked for by name
    assert select_packed_attention(config, cuda, torch.float16) == "varlen"  # checked per dtype
    assert select_packed_attention(config, cuda, torch.float32) == "flex"


@torch.no_grad()
@pytest.mark.parametrize("fault", ["none", "error", "mismatch"])
def test_flex_in_a_model_forward_falls_back_to_the_segments_numbers(fault, monkeypatch, caplog):
    """The real flex path (eager) in a packed forward of a reward model, its torch kernel made to raise or to drift."""
    import torch.nn.attention.flex_attention as flex_module

    monkeypatch.setenv("REWARDLAB_FLEX_EAGER", "1")
    real = flex_module.flex_attention

    def broken(*args, **kwargs):
        if fault == "error":
            raise RuntimeError("triton: out of resources")
        return real(*args, **kwargs) * (1.0 if fault == "none" else 1.5)

    monkeypatch.setattr(flex_module, "flex_attention", broken)
    model = model_for().eval()
    batch = pair_batch(model, "left")
    ids, mask, response = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    model.kernels.attention = "segments"
    reference = model(ids, mask, response, packed=True)
    model.kernels.attention = "flex"
    assert model.attention_kernel() == "flex"
    first = model(ids, mask, response, packed=True)
    second = model(ids, mask, response, packed=True)
    if fault == "none":
        assert check_warnings(caplog) == [] and model.attention_kernel() == "flex"
        torch.testing.assert_close(first.sequence_rewards, reference.sequence_rewards, atol=1e-5, rtol=1e-5)
        return
    (warning,) = check_warnings(caplog)  # one warning for the whole process, not one per layer or per batch
    assert "packed attention 'flex' (float32)" in warning and "using 'segments'" in warning
    assert ("RuntimeError: triton: out of resources" in warning) if fault == "error" else ("differs from 'segments'" in warning)
    assert fallback_reason("flex", torch.float32) is not None and model.attention_kernel() == "segments"
    for out in (first, second):
        assert torch.equal(out.sequence_rewards, reference.sequence_rewards)
        assert torch.equal(out.position_rewards, reference.position_rewards)
        assert torch.equal(out.logprobs, reference.logprobs)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_a_training_step_after_a_fallback_equals_the_segments_step(checkpointing, monkeypatch, caplog):
    """Training through a kernel that drifts: the loss and every gradient are those of the segments kernel, also when
    gradient checkpointing recomputes the layers in the backward (the recomputation must take the same path)."""
    monkeypatch.setattr(packed_attention, "_varlen_api", lambda: broken_varlen("mismatch"))

    def varlen_unless_fallen(config, device, dtype, requested="auto", training=False):  # varlen "on CUDA", here
        return packed_attention._unless_fallen_back("varlen", dtype) if requested == "varlen" else requested

    monkeypatch.setattr(reward_model_module, "select_packed_attention", varlen_unless_fallen)
    fast = model_for().train()
    slow = copy.deepcopy(fast)
    fast.kernels.attention, slow.kernels.attention = "varlen", "segments"
    if checkpointing:
        fast.enable_gradient_checkpointing()
        slow.enable_gradient_checkpointing()
    batch = pair_batch(fast)
    losses = []
    for model in (fast, slow):
        out = model(batch["input_ids"], batch["attention_mask"], batch["response_mask"], packed=True)
        loss = out.sequence_rewards.square().sum() - out.logprobs.sum()
        loss.backward()
        losses.append(loss.detach())
    assert len(check_warnings(caplog)) == 1 and torch.equal(losses[0], losses[1])
    for (name, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters(), strict=True):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


# ----- Liger's log-probs -----
@pytest.mark.parametrize("fault", ["none", "error", "mismatch"])
def test_liger_falls_back_to_chunked_values_and_gradients(fault, monkeypatch, caplog):
    calls = {"liger": 0, "chunked": 0}
    real_chunked = reward_model_module.chunked_logprobs

    def fake_liger(head, hidden_rows, targets, softcap=None):  # stands for the Triton kernel, CUDA-only
        calls["liger"] += 1
        if fault == "error":
            raise RuntimeError("triton.compiler.errors.CompilationError: at 12:4")
        return real_chunked(head, hidden_rows, targets, 0, softcap) + (0.0 if fault == "none" else 0.3)

    def counted_chunked(*args, **kwargs):
        calls["chunked"] += 1
        return real_chunked(*args, **kwargs)

    monkeypatch.setattr(reward_model_module, "liger_unavailable_reason", lambda head, device: None)
    monkeypatch.setattr(reward_model_module, "liger_logprobs", fake_liger)
    monkeypatch.setattr(reward_model_module, "chunked_logprobs", counted_chunked)
    model = model_for()
    model.kernels.logprob_chunk_tokens = 16
    assert model.logprob_kernel() == "liger"
    torch.manual_seed(0)
    hidden = torch.randn(40, model.lm_head.in_features, requires_grad=True)
    targets = torch.randint(0, model.lm_head.out_features, (40,))
    for _ in range(3):
        got = model._token_logprobs(hidden, targets)
        (got_grad,) = torch.autograd.grad(got.square().sum(), hidden)
        want = real_chunked(model.lm_head, hidden, targets, 16)
        (want_grad,) = torch.autograd.grad(want.square().sum(), hidden)
        if fault == "none":
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        else:
            assert torch.equal(got, want) and torch.equal(got_grad, want_grad)
    warnings = check_warnings(caplog)
    if fault == "none":
        assert warnings == [] and model.logprob_kernel() == "liger"
        assert calls == {"liger": 4, "chunked": 1}  # checked once (without and then with gradients), then liger alone
        return
    (warning,) = warnings
    assert "log-probs 'liger' (float32)" in warning and "using 'chunked' for the rest of this process" in warning
    assert ("CompilationError" in warning) if fault == "error" else ("differs from 'chunked'" in warning)
    assert calls["liger"] == 1 and model.logprob_kernel() == "chunked"
