"""Padding-free (packed) batches: every sequence's real tokens in one row, attention kept within each sequence.

A padded (S, T) batch wastes compute on padding (35% on long-tailed data even with length grouping). Packing puts the
S sequences' N = sum(len_s) real tokens side by side in a (1, N) row:

    input_ids     [a0 a1 a2 | b0 b1 | c0 c1 c2 c3]                    (1, N)
    position_ids  [ 0  1  2 |  0  1 |  0  1  2  3]                    restart per sequence, so RoPE sees the same positions
    cu_seqlens    [0, 3, 5, 9]                                        sequence s is tokens cu[s]:cu[s+1]

and attention runs causally on each segment alone (what a varlen flash-attention kernel does), so every token sees exactly
the tokens it sees in the padded batch: the outputs are the padded ones, minus the padding.

The attention kernels that do so (segments, varlen, flex) and the choice among them live in `rewardlab.packed_attention`;
this module packs and unpacks, tells whether a model can run packed, and runs a decoder on a packed row.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rewardlab.choices import PACKED_ATTENTION_KINDS
from rewardlab.packed_attention import document_block_mask, sliding_windows


@dataclass
class PackedBatch:
    """S sequences packed into one row of N tokens."""

    input_ids: torch.Tensor  # (1, N)
    position_ids: torch.Tensor  # (1, N): 0..len_s-1 within each sequence
    cu_seqlens: torch.Tensor  # (S+1,) long: boundaries, sequence s = tokens cu_seqlens[s]:cu_seqlens[s+1]
    lengths: list[int]  # (S,) on the host: the split sizes attention needs
    flat_index: torch.Tensor | None = None  # (N,) where each packed token sits in the flattened padded (S*T) batch
    padded_shape: tuple[int, int] | None = None  # (S, T) of the padded batch it came from

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    @property
    def last_index(self) -> torch.Tensor:
        """(S,) index of each sequence's last token in the packed row."""
        return self.cu_seqlens[1:] - 1

    @property
    def is_first(self) -> torch.Tensor:
        """(N,) bool: the token starts its sequence (it has no context, so nothing predicts it)."""
        return self.position_ids[0] == 0


def boundaries(lengths: torch.Tensor) -> torch.Tensor:
    """cu_seqlens: [0, l0, l0+l1, ...] (S+1,) long."""
    return F.pad(lengths.long().cumsum(0), (1, 0))


def restarting_positions(lengths: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(N,) position ids 0..len_s-1 for each sequence in turn: global index minus its sequence's start."""
    starts = torch.repeat_interleave(cu_seqlens[:-1], lengths.long())
    return torch.arange(int(cu_seqlens[-1]), device=lengths.device) - starts


def pack_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedBatch:
    """Pack a padded (S, T) batch, any padding side (or holes): each row's real tokens in order, rows one after another.

    Position ids count real tokens (as `rewardlab.masks.position_ids_from_mask` does for the padded batch), so packed and
    padded forwards see identical positions. One host sync (the row lengths, needed as split sizes).
    """
    mask = attention_mask.bool()
    flat_index = mask.flatten().nonzero().squeeze(1)  # row-major: row 0's tokens in order, then row 1's, ...
    lengths = mask.sum(dim=1)
    cu_seqlens = boundaries(lengths)
    return PackedBatch(
        input_ids=input_ids.flatten()[flat_index].unsqueeze(0),
        position_ids=restarting_positions(lengths, cu_seqlens).unsqueeze(0),
        cu_seqlens=cu_seqlens,
        lengths=lengths.tolist(),
        flat_index=flat_index,
        padded_shape=(mask.shape[0], mask.shape[1]),
    )


def pack_values(packed: PackedBatch, padded: torch.Tensor) -> torch.Tensor:
    """A padded per-token tensor (S, T, ...) -> its packed values (N, ...), e.g. a response mask."""
    if packed.flat_index is None:
        raise ValueError("this packed batch was not made from a padded batch")
    return padded.flatten(0, 1)[packed.flat_index]


def unpack(packed: PackedBatch, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Packed per-token values (N, ...) -> padded (S, T, ...), `fill` at padding. Differentiable."""
    if packed.flat_index is None or packed.padded_shape is None:
        raise ValueError("this packed batch was not made from a padded batch")
    rows, width = packed.padded_shape
    out = values.new_full((rows * width, *values.shape[1:]), fill)
    return out.index_copy(0, packed.flat_index, values).view(rows, width, *values.shape[1:])


def sum_per_sequence(packed: PackedBatch, values: torch.Tensor, token_index: torch.Tensor) -> torch.Tensor:
    """(S,) sum of `values` (K,) over the packed tokens `token_index` (K,), grouped by the sequence each belongs to."""
    segment = torch.searchsorted(packed.cu_seqlens, token_index, right=True) - 1
    return values.new_zeros(packed.num_sequences).index_add(0, segment, values)


def packed_attention_kwargs(kind: str, packed: PackedBatch, config=None) -> dict:
    """What the decoder's forward passes down to the chosen attention function for this packed batch."""
    if kind == "segments":
        return {"segment_lengths": packed.lengths}
    # the fast kernels get the lengths too: their first call is checked against `segments` (rewardlab.kernel_check)
    if kind == "varlen":
        return {
            "packed_cu_seqlens": packed.cu_seqlens.to(device=packed.input_ids.device, dtype=torch.int32),
            "packed_max_seqlen": max(packed.lengths),
            "segment_lengths": packed.lengths,
        }
    if kind == "flex":
        cu = packed.cu_seqlens.to(packed.input_ids.device)
        windows = sliding_windows(config) if config is not None else {None}
        return {"packed_block_masks": {w: document_block_mask(cu, w) for w in windows}, "segment_lengths": packed.lengths}
    raise ValueError(f"packed attention '{kind}' is not one of {', '.join(PACKED_ATTENTION_KINDS)}")


def packing_unsupported_reason(causal_lm: torch.nn.Module) -> str | None:
    """None when `causal_lm` can run packed; else why not (the caller falls back to padded batches)."""
    config = causal_lm.config
    if not getattr(type(causal_lm), "_supports_attention_backend", False):
        return f"{type(causal_lm).__name__} does not use transformers' attention interface"
    if "position_ids" not in inspect.signature(causal_lm.get_decoder().forward).parameters:
        return f"{type(causal_lm).__name__}'s decoder takes no position_ids"
    if getattr(config, "attn_logit_softcapping", None):
        return "attention logit soft-capping (e.g. Gemma-2) has no packed kernel here"
    if not getattr(config, "is_causal", True):
        return "the model is not causal"
    return None


def packed_hidden(decoder: torch.nn.Module, packed: PackedBatch, kind: str = "segments") -> torch.Tensor:
    """(N, H) last hidden states of the packed row. The decoder's model must have attention `kind` enabled."""
    out = decoder(
        input_ids=packed.input_ids,
        position_ids=packed.position_ids,
        use_cache=False,
        **packed_attention_kwargs(kind, packed, decoder.config),
    )
    return out.last_hidden_state[0]
