"""Summed response log-probs need log softmax(lm_head(h))[target] for every response token: the LM head over the
vocabulary, the largest tensor of a GRM step. These compute it without making the (tokens x vocabulary) logits at once.

- `chunked` (default): at most `chunk` rows at a time; under autograd each chunk is checkpointed (its logits freed after
  the forward and recomputed in the backward: one more LM-head matmul per chunk). The head is called as a module, so
  DeepSpeed ZeRO-3 / FSDP gather its weight as usual.
- `liger`: Liger Kernel's fused linear cross-entropy (CUDA; `pip install "rewardlab[gpu]"`, liger-kernel >= 0.8.2).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

DEFAULT_LOGPROB_CHUNK_TOKENS = 2048
LIGER_MIN_VERSION = (0, 8, 2)  # earlier releases give wrong weight gradients for reduction="none" (Liger-Kernel #1298)


def logprobs_of(head: nn.Module, hidden_rows: torch.Tensor, targets: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
    """log softmax(head(h))[target]: (K, H), (K,) -> (K,) float32, the logits soft-capped like the model's (gemma)."""
    logits = head(hidden_rows)  # (K, V) for the K response tokens only
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return -F.cross_entropy(logits.float(), targets, reduction="none")


def chunked_logprobs(
    head: nn.Module, hidden_rows: torch.Tensor, targets: torch.Tensor, chunk: int, softcap: float | None = None
) -> torch.Tensor:
    """`logprobs_of` in chunks of `chunk` rows (0: all at once), each recomputed in the backward under autograd.

    With a large vocabulary the (K, V) logits dominate memory (gemma: V = 256K, so 1K response tokens take 1 GB in
    float32, several times over for softmax and gradients); chunked, at most (chunk, V) are alive.
    """
    if not chunk or hidden_rows.shape[0] <= chunk:
        return logprobs_of(head, hidden_rows, targets, softcap)
    recompute = torch.is_grad_enabled()
    parts = [
        checkpoint(logprobs_of, head, h, t, softcap, use_reentrant=False) if recompute else logprobs_of(head, h, t, softcap)
        for h, t in zip(hidden_rows.split(chunk), targets.split(chunk), strict=True)
    ]
    return torch.cat(parts)


def liger_logprobs(
    head: nn.Linear, hidden_rows: torch.Tensor, targets: torch.Tensor, softcap: float | None = None
) -> torch.Tensor:
    """The same log-probs from Liger's fused linear cross-entropy: logits made and consumed in chunks inside Triton
    kernels, never (K, V) at once; with reduction="none" it recomputes them in the backward to apply each token's
    upstream gradient. Reads the head's weight directly (so not under FSDP / ZeRO-3 sharding: see
    `liger_unavailable_reason`)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    loss = LigerFusedLinearCrossEntropyLoss(reduction="none", softcap=softcap)
    return -loss(head.weight, hidden_rows, targets, head.bias).float()


def liger_version() -> str | None:
    """The installed liger-kernel's version, or None."""
    if importlib.util.find_spec("liger_kernel") is None:
        return None
    return importlib.metadata.version("liger-kernel")


def liger_unavailable_reason(lm_head: nn.Module, device: torch.device) -> str | None:
    """None when Liger's fused linear cross-entropy can compute log-probs through `lm_head` on `device`; else why not."""
    installed = liger_version()
    if installed is None:
        return 'liger-kernel is not installed (pip install "rewardlab[gpu]")'
    numbers = tuple(int(part) for part in installed.split(".")[:3] if part.isdigit())
    if numbers < LIGER_MIN_VERSION:
        needed = ".".join(map(str, LIGER_MIN_VERSION))
        return f"liger-kernel {installed} gives wrong gradients for per-token losses; {needed} or later is needed"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"Liger's Triton kernels run on CUDA, not {device.type}"
    if type(lm_head) is not nn.Linear:
        return f"the LM head is a {type(lm_head).__name__}, not a plain Linear (LoRA on the head?)"
    weight = lm_head.weight
    if type(weight) is not nn.Parameter or weight.dim() != 2 or weight.shape[1] != lm_head.in_features:
        return "the LM head's weight is sharded (FSDP / ZeRO-3): the chunked path calls the head as a module instead"
    return None
