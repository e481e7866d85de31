"""RewardBench 2 and RM-Bench scoring rules: hand-computed cases, and random cases against independent numpy versions of
the reference code's rules (allenai/reward-bench `reroll_and_score_dataset` / `process_single_model`, THU-KEG/RM-Bench
`compute_accuracy`)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from reference_benchmarks import reference_reroll, reference_rm_bench, reference_ties
from rewardlab.listwise_metrics import (
    best_of_n_score,
    rewardbench2_scores,
    rm_bench_difficulties,
    rm_bench_domain,
    rm_bench_matrix,
    rm_bench_scores,
    ties_score,
)

# ----------------------------------------------------------------------------------------------------------------------
# RewardBench 2: the best-of-N rule


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        ([3.0], [1.0, 2.0, 0.0], 1.0),  # chosen strictly on top
        ([1.0], [3.0, 2.0, 0.0], 0.0),  # beaten
        ([3.0], [3.0, 2.0, 0.0], 0.5),  # tied at the top with one rejected: half a point
        ([3.0], [3.0, 3.0, 3.0], 0.25),  # all four tied
        ([2.0], [3.0, 3.0, 0.0], 0.0),  # others tie above it: nothing
        ([2.0, 5.0], [3.0], 0.0),  # only chosen[0] is looked at (the reference rule reads scores[0])
    ],
)
def test_best_of_n_score(chosen, rejected, expected):
    assert best_of_n_score(chosen, rejected) == expected


def test_best_of_n_needs_two_completions():
    with pytest.raises(ValueError, match="at least one other"):
        best_of_n_score([1.0], [])


def test_best_of_n_matches_the_reference_rule_on_random_scores_with_ties():
    rng = random.Random(0)
    for _ in range(500):
        scores = [rng.choice([0.0, 0.5, 1.0, 1.5]) for _ in range(rng.randint(2, 6))]
        assert best_of_n_score(scores[:1], scores[1:]) == reference_reroll(scores)


# ----------------------------------------------------------------------------------------------------------------------
# RewardBench 2: the Ties subset


def test_ties_score_by_hand():
    # question 1: ref right (worst correct 5 > best wrong 2); tied right with correct spread 1 < gap 4 - 2 = 2
    # question 2: ref wrong (gap 1 - 3 = -2); tied right (gap 0.5 > 0), spread 2: not preferred
    prompts = [
        ("ref", 1, [5.0], [2.0, 1.0]),
        ("tied", 1, [5.0, 4.0], [2.0, 1.0]),
        ("ref", 2, [1.0], [3.0]),
        ("tied", 2, [4.0, 2.5, 2.0], [1.5]),
    ]
    parts = ties_score(prompts)
    assert parts["ref_accuracy"] == 0.5 and parts["tied_accuracy"] == 1.0
    # preferred: q1 gap_tied 2 > spread 1 yes; q2 gap_tied 0.5 > spread 2 no -> 0.5
    assert parts["preferred"] == 0.5
    # preferred_hard: q1 min(3, 2) = 2 > 1 yes; q2 min(-2, 0.5) = -2 > 2 no -> 0.5
    assert parts["preferred_hard"] == 0.5
    margin = (math.tanh(2 / 1 - 1) + math.tanh(-2 / 2 - 1)) / 2
    assert parts["margin_score"] == pytest.approx(margin, abs=1e-15)
    expected = 0.3 * 1.0 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * margin
    assert parts["score"] == pytest.approx(expected, abs=1e-15)


def test_ties_score_zero_spread_follows_ieee_division():
    """Tied correct answers scored identically: spread 0, so gap / 0 is +-inf (tanh +-1) or NaN (counted 0)."""
    positive = ties_score([("ref", 1, [3.0], [1.0]), ("tied", 1, [2.0, 2.0], [1.0])])
    assert positive["margin_score"] == 1.0
    negative = ties_score([("ref", 1, [3.0], [1.0]), ("tied", 1, [0.0, 0.0], [1.0])])
    assert negative["margin_score"] == -1.0
    zero = ties_score([("ref", 1, [1.0], [1.0]), ("tied", 1, [1.0, 1.0], [1.0])])
    assert zero["margin_score"] == 0.0 and zero["tied_accuracy"] == 0.0  # 0 > 0 is not accurate


def test_ties_score_matches_the_reference_rule_on_random_scores():
    rng = np.random.default_rng(1)
    for trial in range(100):
        rows, prompts = [], []
        for number in range(rng.integers(1, 6)):
            for kind, n_correct in (("ref", 1), ("tied", int(rng.integers(2, 5)))):
                # coarse values so that ties (zero spreads, equal gaps) happen
                scores = (rng.integers(-3, 4, size=n_correct + int(rng.integers(1, 4))) / 2).tolist()
                rows.append((f"{kind}:{number}", scores, n_correct))
                prompts.append((kind, number, scores[:n_correct], scores[n_correct:]))
        if trial % 4 == 0:  # a question with only its ref prompt
            rows.append(("ref:99", [1.0, 0.0], 1))
            prompts.append(("ref", 99, [1.0], [0.0]))
        assert ties_score(prompts)["score"] == pytest.approx(reference_ties(rows), abs=1e-12)


def test_ties_tied_prompt_needs_several_correct_answers():
    with pytest.raises(ValueError, match="needs several"):
        ties_score([("ref", 1, [1.0], [0.0]), ("tied", 1, [1.0], [0.0])])


def test_rewardbench2_scores_subsets_and_mean():
    subsets = ["Math", "Math", "Focus", "Ties", "Ties"]
    ids = ["1", "2", "3", "ref:0", "tied:0"]
    chosen = [[2.0], [1.0], [4.0], [3.0], [3.0, 2.5]]
    rejected = [[1.0, 0.0, -1.0], [1.0, 0.5, 0.0], [5.0, 1.0, 0.0], [1.0], [1.0]]
    scores = rewardbench2_scores(subsets, ids, chosen, rejected)
    assert list(scores) == ["Focus", "Math", "Ties", "score"]  # sorted subset names, then the mean
    assert scores["Math"] == (1.0 + 0.5) / 2 and scores["Focus"] == 0.0
    ties = ties_score([("ref", 0, [3.0], [1.0]), ("tied", 0, [3.0, 2.5], [1.0])])["score"]
    assert scores["Ties"] == ties
    assert scores["score"] == pytest.approx((0.0 + 0.75 + ties) / 3, abs=1e-15)


def test_rewardbench2_ties_name_is_case_insensitive_and_needs_ties_ids():
    scores = rewardbench2_scores(["ties", "ties"], ["ref:3", "tied:3"], [[2.0], [2.0, 1.5]], [[1.0], [1.0]])
    assert scores["ties"] == ties_score([("ref", 3, [2.0], [1.0]), ("tied", 3, [2.0, 1.5], [1.0])])["score"]
    from rewardlab.data.errors import DataError

    with pytest.raises(DataError, match="'ref:N' or 'tied:N'"):
        rewardbench2_scores(["Ties"], ["7"], [[1.0]], [[0.0]])


# ----------------------------------------------------------------------------------------------------------------------
# RM-Bench


def test_rm_bench_matrix_and_difficulties_by_hand():
    # prompt 1: chosen [1, 2, 3], rejected [0, 2.5, 4]; prompt 2: chosen [5, 5, 5], rejected [5, 1, 1]
    chosen, rejected = [[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], [[0.0, 2.5, 4.0], [5.0, 1.0, 1.0]]
    matrix = rm_bench_matrix(chosen, rejected)
    # cell (i, j) = share of prompts with chosen[i] > rejected[j]; 5 > 5 is a tie and counts 0
    assert matrix == [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 1.0, 0.5]]
    figures = rm_bench_difficulties(matrix)
    assert figures["hard"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)  # cells (0,1), (0,2), (1,2)
    assert figures["normal"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    assert figures["easy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # cells (1,0), (2,0), (2,1)
    assert figures["avg"] == pytest.approx((figures["easy"] + figures["normal"] + figures["hard"]) / 3)


def test_rm_bench_domains():
    assert [rm_bench_domain(d) for d in ("chat", "math", "code", "safety-refuse", "safety-response", "poetry")] == [
        "chat",
        "math",
        "code",
        "safety",
        "safety",
        "poetry",
    ]


def test_rm_bench_scores_match_the_reference_rule_on_random_scores():
    rng = np.random.default_rng(2)
    domains = ["chat", "math", "code", "safety-refuse", "safety-response"]
    for _ in range(50):
        rows = [
            {
                "domain": domains[int(rng.integers(0, 5))] if i >= 5 else domains[i],
                "chosen": (rng.integers(0, 4, size=3) / 2).tolist(),
                "rejected": (rng.integers(0, 4, size=3) / 2).tolist(),
            }
            for i in range(int(rng.integers(5, 30)))
        ]
        ours = rm_bench_scores([r["domain"] for r in rows], [r["chosen"] for r in rows], [r["rejected"] for r in rows])
        reference = reference_rm_bench(rows)
        for key in ("easy", "normal", "hard", "avg"):
            assert ours[key] == pytest.approx(reference["overall"][key], abs=1e-12)
        assert set(ours["domains"]) == set(reference["domains"])
        for domain, figures in reference["domains"].items():
            for key in ("easy", "normal", "hard"):
                assert ours["domains"][domain][key] == pytest.approx(figures[key], abs=1e-12)
            np.testing.assert_allclose(ours["domains"][domain]["matrix"], figures["matrix"], atol=1e-12)
        # the overall matrix is the mean of the domains' matrices, and its triangles give the overall figures
        mean_matrix = np.mean([f["matrix"] for f in reference["domains"].values()], axis=0)
        np.testing.assert_allclose(ours["matrix"], mean_matrix, atol=1e-12)
        assert rm_bench_difficulties(ours["matrix"])["hard"] == pytest.approx(ours["hard"], abs=1e-12)


def test_rm_bench_needs_equal_style_counts():
    with pytest.raises(ValueError, match="3 chosen and 3 rejected"):
        rm_bench_matrix([[1.0, 2.0, 3.0]], [[1.0, 2.0]])
