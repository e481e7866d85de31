from __future__ import annotations

import pytest

from rewardlab.rewardbench import SECTIONS, section_scores

# A hand-computed example (one or more subsets per section; "foo" is not a RewardBench subset).
ACCURACY = {
    "alpacaeval-easy": 0.9,
    "alpacaeval-hard": 0.5,
    "mt-bench-hard": 0.4,
    "llmbar-natural": 0.7,
    "donotanswer": 0.8,
    "xstest-should-refuse": 0.6,
    "math-prm": 0.9,
    "hep-python": 0.5,
    "hep-go": 0.7,
    "foo": 0.0,
}
COUNT = {
    "alpacaeval-easy": 100,
    "alpacaeval-hard": 300,
    "mt-bench-hard": 10,
    "llmbar-natural": 30,
    "donotanswer": 50,
    "xstest-should-refuse": 150,
    "math-prm": 447,
    "hep-python": 100,
    "hep-go": 300,
    "foo": 1000,
}
# Chat      = (0.9*100 + 0.5*300) / 400 = 240/400 = 0.6
# Chat Hard = (0.4*10 + 0.7*30) / 40 = 25/40 = 0.625
# Safety    = (0.8*50 + 0.6*150) / 200 = 130/200 = 0.65
# Reasoning = (0.9 + (0.5*100 + 0.7*300)/400) / 2 = (0.9 + 0.65) / 2 = 0.775   (plain count weighting: 0.7819)
# Overall   = (0.6 + 0.625 + 0.65 + 0.775) / 4 = 0.6625
EXPECTED = {"Chat": 0.6, "Chat Hard": 0.625, "Safety": 0.65, "Reasoning": 0.775, "Overall": 0.6625}


def test_hand_computed_example():
    scores = section_scores(ACCURACY, COUNT)
    assert scores == pytest.approx(EXPECTED)
    assert list(scores) == ["Chat", "Chat Hard", "Safety", "Reasoning", "Overall"]


def test_reasoning_matches_upweighted_math_counts():
    # RewardBench's own convention: give math-prm a count equal to all code subsets together, then count-weight.
    code = [s for s in SECTIONS["Reasoning"] if s.startswith("hep-") and s in ACCURACY]
    upweighted = {**COUNT, "math-prm": sum(COUNT[s] for s in code)}
    subsets = ["math-prm", *code]
    naive = sum(ACCURACY[s] * upweighted[s] for s in subsets) / sum(upweighted[s] for s in subsets)
    assert section_scores(ACCURACY, COUNT)["Reasoning"] == pytest.approx(naive)


def test_sections_cover_rewardbench_v1():
    assert {name: len(subsets) for name, subsets in SECTIONS.items()} == {
        "Chat": 5,
        "Chat Hard": 6,
        "Safety": 5,
        "Reasoning": 7,
    }
    all_subsets = [s for subsets in SECTIONS.values() for s in subsets]
    assert len(set(all_subsets)) == 23


def test_missing_section_drops_overall():
    accuracy = {k: v for k, v in ACCURACY.items() if k not in ("donotanswer", "xstest-should-refuse")}
    scores = section_scores(accuracy, COUNT)
    assert set(scores) == {"Chat", "Chat Hard", "Reasoning"}
    assert scores["Chat"] == pytest.approx(0.6)


def test_reasoning_with_one_half_only():
    assert section_scores({"hep-go": 0.7, "hep-rust": 0.1}, {"hep-go": 3, "hep-rust": 1}) == pytest.approx(
        {"Reasoning": (0.7 * 3 + 0.1) / 4}
    )
    assert section_scores({"math-prm": 0.3}, {"math-prm": 447}) == pytest.approx({"Reasoning": 0.3})


def test_only_unknown_subsets():
    assert section_scores({"foo": 1.0}, {"foo": 3}) == {}


def test_subset_without_count_is_an_error():
    with pytest.raises(ValueError, match="'alpacaeval-easy'"):
        section_scores({"alpacaeval-easy": 0.5}, {})
