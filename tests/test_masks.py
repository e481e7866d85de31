"""The one padding helper (`rewardlab.masks.pad_rows`) against independent constructions, both sides."""

from __future__ import annotations

import random

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from rewardlab.masks import first_token_index, fold_closing_scores, last_token_index, pad_rows, position_ids_from_mask

ROWS = [[5, 6, 7], [8], [], [9, 10, 11, 12, 13]]


def by_hand(rows: list[list[int]], pad_id: int, side: str, width: int) -> tuple[list[list[int]], list[list[int]]]:
    """Padded rows written out as Python lists."""
    ids, mask = [], []
    for row in rows:
        pad = width - len(row)
        ids.append(row + [pad_id] * pad if side == "right" else [pad_id] * pad + row)
        mask.append([1] * len(row) + [0] * pad if side == "right" else [0] * pad + [1] * len(row))
    return ids, mask


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("min_width", [0, 7])
def test_pad_rows_matches_padding_written_out(side, min_width):
    ids, mask = pad_rows(ROWS, pad_id=3, side=side, min_width=min_width)
    width = max(min_width, 5)
    expected_ids, expected_mask = by_hand(ROWS, 3, side, width)
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == expected_ids and mask.tolist() == expected_mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_rows_matches_torch_pad_sequence_on_random_rows(side):
    """torch's pad_sequence pads on the right; left padding is the right padding of the reversed rows, reversed."""
    rng = random.Random(0)
    rows = [[rng.randrange(1, 50) for _ in range(rng.randrange(0, 9))] for _ in range(12)] + [[1]]
    ids, mask = pad_rows(rows, pad_id=0, side=side)
    flip = side == "left"
    tensors = [torch.tensor(row[::-1] if flip else row, dtype=torch.long) for row in rows]
    ones = [torch.ones(len(row), dtype=torch.long) for row in rows]
    expected_ids = pad_sequence(tensors, batch_first=True, padding_value=0)
    expected_mask = pad_sequence(ones, batch_first=True, padding_value=0)
    if flip:
        expected_ids, expected_mask = expected_ids.flip(1), expected_mask.flip(1)
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    # the mask arithmetic reads the padded rows back
    lengths = torch.tensor([len(row) for row in rows])
    width = ids.shape[1]
    assert torch.equal(last_token_index(mask), torch.where(lengths > 0, (width - 1) if flip else lengths - 1, -1))
    assert torch.equal(first_token_index(mask), torch.where(lengths > 0, width - lengths if flip else 0, width))
    for row, positions, real in zip(rows, position_ids_from_mask(mask), mask.bool(), strict=True):
        assert positions[real].tolist() == list(range(len(row)))


def test_pad_rows_edge_cases():
    ids, mask = pad_rows([], pad_id=0)
    assert ids.shape == mask.shape == (0, 0)
    ids, mask = pad_rows([[], []], pad_id=4, side="left", min_width=1)
    assert ids.tolist() == [[4], [4]] and mask.tolist() == [[0], [0]]
    with pytest.raises(ValueError, match="padding side"):
        pad_rows([[1]], pad_id=0, side="middle")


def fold_by_hand(row: list[float], length: int, closed: bool, closing: int) -> list[float]:
    """One row's scores folded as a list: the closing scores (if the row was closed) added to its last token."""
    out = row[:length] + [0.0] * (len(row) - closing - length)
    if closed:
        out[length - 1] += sum(row[length : length + closing])
    return out


@pytest.mark.parametrize("closing", [1, 2, 3])
def test_fold_closing_scores_matches_a_loop_over_rows(closing: int) -> None:
    rng = random.Random(closing)
    width, rows, scores, mask, expected = 6, 9, [], [], []
    for _ in range(rows):
        length, closed = rng.randint(1, width), rng.random() < 0.6
        row = [float(rng.randint(-9, 9)) for _ in range(length + (closing if closed else 0))]
        row += [0.0] * (width + closing - len(row))  # a closed batch holds zeros past each row's end
        scores.append(row)
        mask.append([1.0] * length + [0.0] * (width - length))
        expected.append(fold_by_hand(row, length, closed, closing))
    folded = fold_closing_scores(torch.tensor(scores), torch.tensor(mask), closing)
    assert folded.tolist() == expected
    assert folded.sum(1).tolist() == torch.tensor(scores).sum(1).tolist()  # every row keeps its total


def test_fold_closing_scores_leaves_a_batch_without_closing_as_it_is() -> None:
    scores = torch.randn(3, 4)
    assert fold_closing_scores(scores, torch.ones(3, 4), 1) is scores
