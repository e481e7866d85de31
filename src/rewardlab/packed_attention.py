"""The packed attention kernels: causal attention within each sequence of a packed row, and which one to use.

A packed row (`rewardlab.packing`) holds S sequences side by side; attention must not cross their boundaries. Each kernel
is a function registered with transformers' `AttentionInterface` under its own name. Those names have no entry in
transformers' mask interface, so `create_causal_mask` returns None instead of building the dense N x N block-diagonal
mask it builds for `sdpa` when it detects restarting position ids; what a kernel needs about the segments reaches it as
a keyword argument passed through the decoder's forward (`rewardlab.packing.packed_attention_kwargs`).

Three kernels (`PACKED_ATTENTION_KINDS`):
- `segments`: causal SDPA on each sequence in turn, a Python loop (S calls per layer). Runs everywhere, any dtype,
  dropout; the CPU default (on CPU, flex attention has no backward and was no faster forward: see benchmarks/README.md);
- `varlen`: `torch.nn.attention.varlen.varlen_attn` (FlashAttention-2 with cu_seqlens), ONE call per layer; CUDA, bf16 /
  fp16 only. The CUDA default where it applies;
- `flex`: `torch.nn.attention.flex_attention` with a block-causal document mask (ONE compiled kernel per layer); CUDA in
  any dtype, CPU for forward passes only. The CUDA default where varlen does not apply (fp32, an older torch).
`select_packed_attention` picks one for a model, a device and a dtype ("auto"), or checks an explicit choice and says in
one line why it cannot run.

`varlen` and `flex` check themselves (`rewardlab.kernel_check`): the first call of each in a process (per dtype) is
compared with `segments` on the same inputs; after an error or a mismatch beyond tolerance, `segments` runs instead for
the rest of the process (and `select_packed_attention` says `segments`), with one warning line.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from rewardlab.choices import PACKED_ATTENTION_CHOICES, PACKED_ATTENTION_KINDS
from rewardlab.errors import UserError
from rewardlab.kernel_check import checked, fallback_reason

SEGMENT_ATTENTION = "rewardlab_segments"
VARLEN_ATTENTION = "rewardlab_varlen"
FLEX_ATTENTION = "rewardlab_flex"
IMPLEMENTATION_OF = {"segments": SEGMENT_ATTENTION, "varlen": VARLEN_ATTENTION, "flex": FLEX_ATTENTION}
DESCRIPTION_OF = {
    "segments": "per-sequence SDPA loop (one call per sequence per layer)",
    "varlen": "torch varlen FlashAttention (one call per layer)",
    "flex": "flex attention, block-causal document mask (one compiled call per layer)",
}
HALF_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256


# ----- attention -----
def segment_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    segment_lengths: list[int] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sequence: (1, heads, N, d) -> (1, N, heads, d), never an N x N mask.

    Grouped-query attention (fewer key/value heads) is handled by SDPA's `enable_gqa`; a sliding window (Mistral, Qwen2)
    becomes a band mask on the segments longer than the window only.
    """
    if segment_lengths is None:
        raise ValueError(f"the '{SEGMENT_ATTENTION}' attention needs segment_lengths (call the decoder via rewardlab.packing)")
    if attention_mask is not None:
        raise ValueError("packed attention got a dense mask: transformers built one, which packing exists to avoid")
    if softcap is not None:
        raise UserError("attention logit soft-capping is not supported by packed attention")
    gqa = key.shape[1] != query.shape[1]
    out = []
    for q, k, v in zip(
        query.split(segment_lengths, dim=2), key.split(segment_lengths, dim=2), value.split(segment_lengths, dim=2), strict=True
    ):
        n = q.shape[2]
        if sliding_window is not None and n > sliding_window:
            i = torch.arange(n, device=q.device)
            distance = i[:, None] - i[None, :]
            band = (distance >= 0) & (distance < sliding_window)  # transformers: q_idx - kv_idx < sliding_window
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=band, dropout_p=dropout, scale=scaling, enable_gqa=gqa)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=gqa)
        out.append(o)
    return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)


def _check_packed_call(name: str, attention_mask, dropout: float, softcap) -> None:
    if attention_mask is not None:
        raise ValueError("packed attention got a dense mask: transformers built one, which packing exists to avoid")
    if dropout:
        raise UserError(f"{name} attention has no dropout: use the 'segments' kernel for attention dropout")
    if softcap is not None:
        raise UserError("attention logit soft-capping is not supported by packed attention")


# ----- varlen: FlashAttention-2 over cu_seqlens, one call per layer (CUDA, half precision) -----
@functools.cache
def _varlen_api() -> tuple[Callable | None, frozenset[str]]:
    """torch's `varlen_attn` and its keyword names, or (None, {}) when this torch has none.

    Two signatures exist: the first release takes `is_causal` (no scale, GQA or window); later ones take keyword-only
    `scale`, `window_size` = (left, right) and `enable_gqa`. Both are handled by `_call_varlen`.
    """
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, frozenset()
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _call_varlen(q, k, v, cu_seqlens, max_seqlen: int, scale: float | None, sliding_window: int | None) -> torch.Tensor:
    """Causal varlen attention on (N, heads, d) tensors, whichever `varlen_attn` signature this torch has."""
    varlen_attn, params = _varlen_api()
    if varlen_attn is None:
        raise RuntimeError(f"torch {torch.__version__} has no torch.nn.attention.varlen: use the 'flex' or 'segments' kernel")
    kwargs: dict = {}
    if "window_size" in params:
        # flash's window counts the diagonal: transformers' `q - kv < sliding_window` is left = sliding_window - 1
        kwargs["window_size"] = (-1, 0) if sliding_window is None else (sliding_window - 1, 0)
    elif sliding_window is not None:
        raise UserError(f"torch {torch.__version__}'s varlen_attn has no sliding window: use the 'flex' kernel")
    else:
        kwargs["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:  # grouped-query attention by repeating each key/value head over its query group
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if "scale" in params:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-6 * scale:
        raise UserError(f"torch {torch.__version__}'s varlen_attn has no scale argument and this model scales by {scale}")
    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **kwargs)


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    packed_cu_seqlens: torch.Tensor | None = None,
    packed_max_seqlen: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Packed causal attention as ONE varlen FlashAttention call: (1, heads, N, d) -> (1, N, heads, d)."""
    if packed_cu_seqlens is None or packed_max_seqlen is None:
        raise ValueError(f"the '{VARLEN_ATTENTION}' attention needs packed_cu_seqlens (call the decoder via rewardlab.packing)")
    _check_packed_call("varlen", attention_mask, dropout, softcap)
    # (1, heads, N, d) -> (N, heads, d): transformers made these by transposing (1, N, heads, d), so this is a view
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    out = _call_varlen(q, k, v, packed_cu_seqlens, packed_max_seqlen, scaling, sliding_window)
    return out.unsqueeze(0), None


# ----- flex: one flex-attention call per layer with a block-causal (document) mask -----
def document_block_mask(cu_seqlens: torch.Tensor, sliding_window: int | None = None, block_size: int | None = None):
    """A flex-attention BlockMask for packed sequences: token q sees token kv iff same sequence, kv <= q (and, with a
    sliding window, q - kv < window).

    Built from the sequence boundaries at block granularity, without evaluating the mask on all N x N pairs: a (q-block,
    kv-block) pair is skipped when no allowed pair lies in it, "full" (no mask evaluated) when every pair is allowed
    (one sequence spans both blocks, the kv block lies wholly before the q block, within the window), and partial
    otherwise (the mask function decides per element). Blocks holding positions past N are never full.
    """
    from torch.nn.attention.flex_attention import _DEFAULT_SPARSE_BLOCK_SIZE, BlockMask

    block = block_size or _DEFAULT_SPARSE_BLOCK_SIZE
    device = cu_seqlens.device
    cu = cu_seqlens.long()
    n = int(cu[-1])
    n_blocks = max(1, -(-n // block))
    lengths = cu.diff()
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)  # (N,) sequence of each token
    # The mask function reads `doc` at q, kv < N only: the kernels bound their indices (and mask kv >= N) in a last,
    # partial block. (A copy padded to whole blocks instead made inductor's CPU template fail to compile, torch 2.13.)

    starts = torch.arange(n_blocks, device=device) * block
    ends = torch.clamp(starts + block, max=n) - 1  # last real position of each block
    first_doc, last_doc = doc[starts], doc[ends]
    complete = (starts + block) <= n  # the block holds no position past N
    q0, q1 = starts[:, None], ends[:, None]  # q block i: rows
    k0, k1 = starts[None, :], ends[None, :]  # kv block j: columns
    overlap = last_doc[None, :] >= first_doc[:, None]  # some kv sequence reaches the q block's first sequence ...
    overlap &= first_doc[None, :] <= last_doc[:, None]  # ... and starts no later than its last one
    any_allowed = overlap & (k0 <= q1)  # causal: some kv position is at or before some q position
    one_doc = (first_doc[:, None] == last_doc[:, None]) & (first_doc[None, :] == last_doc[None, :])
    one_doc &= first_doc[:, None] == first_doc[None, :]
    full = one_doc & (k1 <= q0) & complete[:, None] & complete[None, :]
    if sliding_window is not None:
        any_allowed &= (q0 - k1).clamp(min=0) < sliding_window  # the closest pair lies within the window
        full &= (q1 - k0) < sliding_window  # the farthest pair too
    partial = any_allowed & ~full

    def ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts, indices) of the True columns of each row, the True ones first, as BlockMask wants them."""
        counts = dense.sum(dim=-1, dtype=torch.int32)
        indices = torch.argsort(dense.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
        return counts[None, None], indices[None, None]

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)
        if sliding_window is not None:
            allowed = allowed & (q_idx - kv_idx < sliding_window)
        return allowed

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(n, n))


@functools.cache
def _compiled_flex_attention() -> Callable:
    """flex_attention compiled once per process; `dynamic=True` so that a new packed length reuses the kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def flex_compile_enabled() -> bool:
    """Uncompiled flex attention is a dense reference (N x N scores): compiled unless REWARDLAB_FLEX_EAGER=1 (tests)."""
    return os.environ.get("REWARDLAB_FLEX_EAGER", "") != "1"


def flex_attention_packed(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    packed_block_masks: dict | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Packed causal attention as ONE flex-attention call with a document mask: (1, heads, N, d) -> (1, N, heads, d).

    `packed_block_masks` maps a layer's sliding window (None: full causal) to its BlockMask, so models that mix full
    and sliding-window layers get the right mask per layer.
    """
    if packed_block_masks is None:
        raise ValueError(f"the '{FLEX_ATTENTION}' attention needs packed_block_masks (call the decoder via rewardlab.packing)")
    _check_packed_call("flex", attention_mask, dropout, softcap)
    if sliding_window not in packed_block_masks:
        raise ValueError(f"no flex block mask for sliding window {sliding_window} (have: {list(packed_block_masks)})")
    if query.device.type == "cpu" and torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        raise NotImplementedError(
            f"flex attention has no backward on CPU in torch {torch.__version__}: train on CPU with the 'segments' kernel"
        )
    from torch.nn.attention.flex_attention import flex_attention

    run = _compiled_flex_attention() if flex_compile_enabled() else flex_attention
    out = run(
        query, key, value, block_mask=packed_block_masks[sliding_window], scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1],
    )  # fmt: skip
    return out.transpose(1, 2).contiguous(), None


# ----- the fast kernels check themselves against `segments` (rewardlab.kernel_check) -----
FAST_KERNELS: dict[str, Callable] = {"varlen": varlen_attention, "flex": flex_attention_packed}  # looked up per call


def _segment_lengths(kwargs: dict) -> list[int] | None:
    """The packed sequences' lengths, as `packed_attention_kwargs` passes them (or from cu_seqlens)."""
    lengths = kwargs.get("segment_lengths")
    if lengths is None and kwargs.get("packed_cu_seqlens") is not None:
        lengths = kwargs["packed_cu_seqlens"].diff().tolist()
    return lengths


def checked_packed_attention(kind: str) -> Callable:
    """Packed attention kernel `kind` (`FAST_KERNELS`) as registered with transformers: its first call in the process
    (per dtype) is compared with `segment_attention` on the same inputs; after an error or a mismatch, `segment_attention`
    answers instead (see `rewardlab.kernel_check`)."""

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None, softcap=None,
                  **kwargs) -> tuple[torch.Tensor, None]:  # fmt: skip
        options = {"dropout": dropout, "scaling": scaling, "sliding_window": sliding_window, "softcap": softcap}

        def fast() -> torch.Tensor:
            return FAST_KERNELS[kind](module, query, key, value, attention_mask, **options, **kwargs)[0]

        def reference() -> torch.Tensor:
            rest = {name: v for name, v in kwargs.items() if name != "segment_lengths"}
            lengths = _segment_lengths(kwargs)
            return segment_attention(module, query, key, value, attention_mask, **options, segment_lengths=lengths, **rest)[0]

        return checked(kind, query.dtype, fast, reference, "segments", "packed attention"), None

    attention.__name__ = attention.__qualname__ = f"checked_{kind}_attention"
    return attention


AttentionInterface.register(VARLEN_ATTENTION, checked_packed_attention("varlen"))
AttentionInterface.register(FLEX_ATTENTION, checked_packed_attention("flex"))


# ----- choosing a kernel -----
def sliding_windows(config) -> set[int | None]:
    """The attention windows a model's layers use (None: full causal), as transformers passes them to attention."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return {window if kind == "sliding_attention" else None for kind in layer_types}
    if window is None or getattr(config, "use_sliding_window", True) is False:
        return {None}
    return {window}


def packed_attention_unavailable_reason(
    kind: str, config, device: torch.device | str, dtype: torch.dtype, training: bool = False
) -> str | None:
    """None when packed attention kernel `kind` can run this model on `device` in `dtype` (with gradients when
    `training`); else why not, in one line."""
    device = torch.device(device)
    if kind not in PACKED_ATTENTION_KINDS:
        raise UserError(f"packed attention '{kind}' is not one of {', '.join(PACKED_ATTENTION_CHOICES)}")
    dropout = float(getattr(config, "attention_dropout", 0.0) or 0.0)
    if kind == "segments":
        return None
    if training and dropout:
        return f"attention dropout {dropout} needs the 'segments' kernel"
    if kind == "varlen":
        if device.type != "cuda":
            return "varlen attention runs on CUDA only (FlashAttention kernels)"
        if dtype not in HALF_DTYPES:
            return f"varlen attention needs bf16 or fp16 (FlashAttention), not {str(dtype).removeprefix('torch.')}"
        varlen_attn, params = _varlen_api()
        if varlen_attn is None:
            return f"torch {torch.__version__} has no torch.nn.attention.varlen"
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if head_dim > FLASH_MAX_HEAD_DIM or head_dim % 8:
            return f"head dimension {head_dim} is not one FlashAttention supports (a multiple of 8, at most 256)"
        if sliding_windows(config) != {None} and "window_size" not in params:
            return f"torch {torch.__version__}'s varlen_attn has no sliding window"
        return None
    if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return f"torch {torch.__version__} has no flex attention"
    if device.type == "cpu" and training:
        return f"flex attention has no backward on CPU in torch {torch.__version__}"
    if device.type == "cpu" and sliding_windows(config) != {None} and flex_compile_enabled():
        # measured with torch 2.13: inductor's CPU flex template emits C++ that does not compile for a window mask
        return "compiled flex attention with a sliding window fails to build on CPU (torch inductor)"
    if device.type not in ("cpu", "cuda"):
        return f"flex attention does not run on {device.type}"
    return None


def select_packed_attention(
    config, device: torch.device | str, dtype: torch.dtype, requested: str = "auto", training: bool = False
) -> str:
    """The packed attention kernel to use: `requested` if it can run (else a one-line ValueError), or for "auto" the
    fastest that can: varlen, then flex on CUDA; segments on CPU (measured: flex is no faster there and cannot train).
    A kernel that failed its check in this process (`rewardlab.kernel_check`) gives way to segments."""
    if requested != "auto":
        reason = packed_attention_unavailable_reason(requested, config, device, dtype, training)
        if reason is not None:
            raise UserError(f"packed attention '{requested}' cannot run here: {reason}")
        return _unless_fallen_back(requested, dtype)
    if torch.device(device).type != "cuda":
        return "segments"
    for kind in ("varlen", "flex"):
        if packed_attention_unavailable_reason(kind, config, device, dtype, training) is None:
            return _unless_fallen_back(kind, dtype)
    return "segments"


def _unless_fallen_back(kind: str, dtype: torch.dtype) -> str:
    return "segments" if kind in FAST_KERNELS and fallback_reason(kind, dtype) is not None else kind


@contextmanager
def attention_implementation(lm: torch.nn.Module, implementation: str) -> Iterator[None]:
    """Run a transformers model with attention `implementation` for the duration, then switch back."""
    previous = lm.config._attn_implementation
    if previous == implementation:
        yield
        return
    lm.set_attn_implementation(implementation)
    try:
        yield
    finally:
        lm.set_attn_implementation(previous)


@contextmanager
def packed_attention_enabled(kind: str, *causal_lms: torch.nn.Module) -> Iterator[None]:
    """Switch models to packed attention kernel `kind` for the duration of a packed forward, then back."""
    with ExitStack() as stack:
        for lm in causal_lms:
            stack.enter_context(attention_implementation(lm, IMPLEMENTATION_OF[kind]))
        yield
