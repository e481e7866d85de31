"""Preference pairs as token ids, and batches that put chosen and rejected through the model together."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from rewardlab.choices import Truncation
from rewardlab.data.templates import EncodedSequence, encode_prompt_response, pad_sequences
from rewardlab.data.types import PreferenceExample
from rewardlab.masks import response_mask


@dataclass
class EncodedPair:
    chosen: EncodedSequence
    rejected: EncodedSequence
    margin: float
    index: int  # position of the example in its dataset

    @property
    def length(self) -> int:
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


def encode_pairs(
    tokenizer, examples: list[PreferenceExample], max_length: int | None, truncation: Truncation = "keep_end"
) -> tuple[list[EncodedPair], dict[str, int]]:
    """Tokenise every pair. Returns the pairs kept and counts of truncated and dropped pairs."""
    pairs, truncated, dropped = [], 0, 0
    for i, ex in enumerate(examples):
        chosen = encode_prompt_response(tokenizer, ex.prompt, ex.chosen, max_length, truncation)
        rejected = encode_prompt_response(tokenizer, ex.prompt, ex.rejected, max_length, truncation)
        if chosen is None or rejected is None:
            dropped += 1
            continue
        truncated += int(chosen.truncated or rejected.truncated)
        pairs.append(EncodedPair(chosen, rejected, float(ex.margin or 0.0), i))
    return pairs, {"pairs": len(pairs), "truncated": truncated, "dropped": dropped}


def pair_rows(pairs: list[EncodedPair]) -> list[EncodedSequence]:
    """The sequences of B pairs in a batch's row order: 0..B-1 chosen, B..2B-1 rejected."""
    return [p.chosen for p in pairs] + [p.rejected for p in pairs]


def collate_pairs(pairs: list[EncodedPair], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """One (2B, T) batch: rows 0..B-1 chosen, B..2B-1 rejected, so both go through the model in one forward pass."""
    input_ids, attention_mask, response_start = pad_sequences(pair_rows(pairs), pad_id, padding_side)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask(attention_mask, response_start),
        "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        "index": torch.tensor([p.index for p in pairs], dtype=torch.long),
    }


class PairCollator:
    def __init__(self, pad_id: int, padding_side: str = "right"):
        self.pad_id = pad_id
        self.padding_side = padding_side

    def __call__(self, pairs: list[EncodedPair]) -> dict[str, torch.Tensor]:
        return collate_pairs(pairs, self.pad_id, self.padding_side)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, mega_batch: int = 50) -> list[list[int]]:
    """Shuffle, sort by length within mega-batches of `mega_batch` batches, then shuffle the batches (less padding)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * mega_batch
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def shuffled_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """A random order of n items cut into batches (the last one may be short)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class EpochBatchSampler(torch.utils.data.Sampler):
    """Training batches drawn afresh each epoch (call `set_epoch`, as accelerate does) from seed + epoch alone,
    length-grouped (less padding) or plainly shuffled: a run resumed in any epoch sees the order the uninterrupted run
    saw."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_by_length: bool = True):
        self.lengths, self.batch_size, self.seed, self.group_by_length, self.epoch = lengths, batch_size, seed, group_by_length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        seed = self.seed + self.epoch
        if self.group_by_length:
            yield from length_grouped_batches(self.lengths, self.batch_size, seed)
        else:
            yield from shuffled_batches(len(self.lengths), self.batch_size, seed)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
