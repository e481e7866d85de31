"""Padded batches and index arithmetic on their attention masks, for any padding side (left, right, or mixed batches)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PADDING_SIDES = ("left", "right")


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, side: str = "right", min_width: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows -> (input_ids, attention_mask), both (B, T) long with T = max(min_width, longest row): each row's ids
    at the right end (`side="left"`: padded on the left) or the left end (`"right"`), `pad_id` and mask 0 elsewhere."""
    if side not in PADDING_SIDES:
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long).unsqueeze(1)  # (B, 1)
    width = max([min_width, *(len(row) for row in rows)])
    columns = torch.arange(width).unsqueeze(0)  # (1, T)
    real = columns < lengths if side == "right" else columns >= width - lengths
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    input_ids[real] = torch.tensor([token for row in rows for token in row], dtype=torch.long)  # row-major: in order
    return input_ids, real.long()


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


def fold_closing_scores(scores: torch.Tensor, mask: torch.Tensor, closing: int) -> torch.Tensor:
    """(B, R + closing) token scores of responses that had a chat template's closing ids (ChatML: "\\n" after
    <|im_end|>) appended after their EOS -> (B, R): the closing tokens' scores are added to the last response token (the
    EOS the policy chose), so every shaping keeps its sequence total and sparse puts the reward of the closed turn on
    EOS. `mask` (B, R) is the original response mask; rows that were not closed hold zeros past their end. The one fold
    for PPO's rollouts (`rl.rollout.with_closing_tokens`) and verl's rows (`TokenRewardScorer.fold_added`)."""
    width = mask.shape[1]
    if scores.shape[1] == width:
        return scores
    lengths = mask.sum(1).long()
    columns = lengths.unsqueeze(1) + torch.arange(closing, device=scores.device)
    tail = scores.gather(1, columns.clamp(max=scores.shape[1] - 1)).sum(1)  # 0 for rows that were not closed
    folded = scores[:, :width] * mask
    folded[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] += tail
    return folded
