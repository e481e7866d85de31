"""Index arithmetic on attention masks, for any padding side (left, right, or mixed batches)."""

from __future__ import annotations

import torch


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(1, T) position indices."""
    return torch.arange(attention_mask.shape[-1], device=attention_mask.device).unsqueeze(0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last real token of each row; -1 for an all-padding row."""
    return torch.where(attention_mask.bool(), positions(attention_mask), -1).amax(dim=-1)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the first real token of each row; T for an all-padding row."""
    return torch.where(attention_mask.bool(), positions(attention_mask), attention_mask.shape[-1]).amin(dim=-1)


def response_mask(attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: real tokens from response_start through the last real token."""
    start = response_start.to(attention_mask.device).unsqueeze(-1)
    return (positions(attention_mask) >= start) & attention_mask.bool()


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens whatever the padding side (padding positions get 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
