"""OOD accuracy by cue cell and kind, against hand-built pairs whose cells and accuracies are written out by hand."""

from __future__ import annotations

import pytest

from rewardlab.data.types import PreferenceExample
from rewardlab.ood_split import (
    CUE_CELLS,
    KINDS,
    cue_cell,
    mean_split,
    ood_kind,
    pair_cells,
    split_accuracy,
    split_from_score_rows,
)


def pair(prompt: str, chosen: str, rejected: str, subset: str | None = None) -> PreferenceExample:
    return PreferenceExample(
        prompt=[{"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
        subset=subset,
    )


# (pair, its cell written by hand, chosen score, rejected score): right / wrong / tie (one half) marked per row
PAIRS = [
    (pair("dedup: abca", "abc.", "abca"), ("chosen_only", "new_family"), 2.0, 1.0),  # right
    (pair("dedup: abca", "abc", "abca."), ("rejected_only", "new_family"), 0.0, 1.0),  # wrong
    (pair("shift: abc", "bcd.", "bce.", "shift/colon"), ("neutral", "new_family"), 1.0, 0.0),  # right
    (pair("what is shift of ab?", "bc", "b"), ("neutral", "new_family"), 1.0, 1.0),  # tie
    (pair("abc -> copy", "abc.", "ab"), ("chosen_only", "new_phrasing"), 3.0, 1.0),  # right
    (pair("what is sort of cba?", "abc", "ab."), ("rejected_only", "new_phrasing"), 0.5, 0.2),  # right
    (pair("cba -> reverse", "abc", "ab."), ("rejected_only", "new_phrasing"), 0.1, 0.2),  # wrong
    (pair("dcba -> reverse", "abcd", "abd", "reverse/arrow"), ("neutral", "new_phrasing"), -1.0, 0.0),  # wrong
    (pair("please dedup aab", "ab", "aab"), ("neutral", "new_family"), 2.0, 0.0),  # right (an OOD family, ID style)
]
EXAMPLES = [p[0] for p in PAIRS]
CHOSEN = [p[2] for p in PAIRS]
REJECTED = [p[3] for p in PAIRS]


def test_cells_of_hand_built_pairs():
    assert pair_cells(EXAMPLES) == [p[1] for p in PAIRS]
    assert cue_cell(True, True) == cue_cell(False, False) == "neutral"
    assert (cue_cell(True, False), cue_cell(False, True)) == ("chosen_only", "rejected_only")


def test_an_id_pair_has_no_ood_kind():
    assert (ood_kind("dedup", "colon"), ood_kind("copy", "question")) == ("new_family", "new_phrasing")
    with pytest.raises(ValueError, match="not an OOD task"):
        ood_kind("copy", "colon")
    with pytest.raises(ValueError, match="not an OOD task"):
        pair_cells([pair("copy: abc", "abc", "ab")])


def test_accuracy_and_counts_per_cell_match_a_hand_count():
    table = split_accuracy(pair_cells(EXAMPLES), CHOSEN, REJECTED)
    expected = {  # (right credits, n) counted by hand from the comments above
        ("chosen_only", "new_family"): (1, 1),
        ("rejected_only", "new_family"): (0, 1),
        ("neutral", "new_family"): (2.5, 3),
        ("chosen_only", "new_phrasing"): (1, 1),
        ("rejected_only", "new_phrasing"): (1, 2),
        ("neutral", "new_phrasing"): (0, 1),
        ("chosen_only", "all"): (2, 2),
        ("rejected_only", "all"): (1, 3),
        ("neutral", "all"): (2.5, 4),
        ("all", "new_family"): (3.5, 5),
        ("all", "new_phrasing"): (2, 4),
        ("all", "all"): (5.5, 9),
    }
    for (cue, kind), (credit, n) in expected.items():
        assert table[cue][kind]["n"] == n
        assert table[cue][kind]["accuracy"] == pytest.approx(credit / n)
    assert sum(table[c][k]["n"] for c in CUE_CELLS for k in KINDS) == len(PAIRS)


def test_an_empty_cell_has_no_accuracy():
    table = split_accuracy([("neutral", "new_family")], [1.0], [0.0])
    assert table["chosen_only"]["new_phrasing"] == {"accuracy": None, "n": 0}
    with pytest.raises(ValueError, match="1 cells for 2 chosen"):
        split_accuracy([("neutral", "new_family")], [1.0, 2.0], [0.0, 0.0])


def test_score_rows_map_back_by_index_and_dataset():
    cells = pair_cells(EXAMPLES)
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]  # eval-rm's rows come sorted by length, not in the examples' order
    rows = [{"dataset": "ood", "index": i, "chosen_reward": CHOSEN[i], "rejected_reward": REJECTED[i]} for i in order]
    rows += [{"dataset": "id", "index": 0, "chosen_reward": -5.0, "rejected_reward": 5.0}]  # another set: ignored
    assert split_from_score_rows(cells, rows, "ood") == split_accuracy(cells, CHOSEN, REJECTED)
    dropped = split_from_score_rows(cells, [r for r in rows if r["dataset"] == "ood" and r["index"] != 0], "ood")
    assert dropped["chosen_only"]["new_family"]["n"] == 0 and dropped["all"]["all"]["n"] == 8


def test_mean_over_seeds_is_cell_by_cell():
    cells = pair_cells(EXAMPLES)
    one = split_accuracy(cells, CHOSEN, REJECTED)
    flipped = split_accuracy(cells, REJECTED, CHOSEN)  # every right pair wrong and back; ties stay ties
    mean = mean_split([one, flipped])
    assert mean["neutral"]["new_family"] == {"accuracy": pytest.approx(0.5), "n": 3}
    assert mean["all"]["all"]["accuracy"] == pytest.approx(0.5)
    assert mean["chosen_only"]["new_family"]["accuracy"] == pytest.approx((1.0 + 0.0) / 2)
