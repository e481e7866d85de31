"""Small helpers shared by several test modules (pytest puts this directory on sys.path: it holds conftest.py)."""

from __future__ import annotations

import torch


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Move trainable weights off their initial values (LoRA B starts at zero, which would hide adapter bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


class WithoutOffsets:
    """A fast tokenizer seen as a slow one: no character offsets, so code that reads them takes its fallback (and a call
    asking for offsets fails the test)."""

    is_fast = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, text, **kwargs):
        assert not kwargs.get("return_offsets_mapping")
        return self.tokenizer(text, **kwargs)
