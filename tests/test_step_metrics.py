"""ProcessBench's first-error figures and the step-score aggregations, against figures worked out by hand."""

from __future__ import annotations

import math

import pytest

from rewardlab.errors import UserError
from rewardlab.step_metrics import (
    AGGREGATIONS,
    aggregate_step_scores,
    first_error_figures,
    predicted_first_error,
    processbench_scores,
)


@pytest.mark.parametrize(
    ("scores", "threshold", "expected"),
    [
        ([0.9, 0.8, 0.7], 0.5, -1),  # all correct
        ([0.2, 0.9, 0.9], 0.5, 0),  # error at step 0
        ([0.9, 0.4, 0.1], 0.5, 1),  # the first one below counts
        ([0.9, 0.5, 0.1], 0.5, 2),  # equal to the threshold is not below it
        ([1.5, -0.2], 0.0, 1),  # logits with threshold 0
        ([0.3], 0.5, 0),
    ],
)
def test_predicted_first_error(scores, threshold, expected):
    assert predicted_first_error(scores, threshold) == expected


def test_predicted_first_error_refuses_empty_and_nan():
    with pytest.raises(UserError, match="no step scores"):
        predicted_first_error([], 0.5)
    with pytest.raises(UserError, match="finite"):
        predicted_first_error([0.9, math.nan], 0.5)


def test_figures_by_hand():
    # labels:      2   -1   0   -1   1   -1
    # predictions: 2   -1   1    0   1   -1
    # with an error (labels 2, 0, 1): matches 2==2, 1!=0, 1==1 -> 2/3
    # without (three -1): predicted -1, 0, -1 -> 2/3; F1 = 2 * 2/3 * 2/3 / (4/3) = 2/3
    figures = first_error_figures([2, -1, 0, -1, 1, -1], [2, -1, 1, 0, 1, -1])
    assert figures == pytest.approx(
        {"error_accuracy": 2 / 3, "correct_accuracy": 2 / 3, "f1": 2 / 3, "n_error": 3, "n_correct": 3}
    )
    # unequal accuracies: 1/2 and 1 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert first_error_figures([0, 1, -1], [0, -1, -1])["f1"] == pytest.approx(2 / 3)
    # both zero: F1 0, not a division by zero
    assert first_error_figures([0, -1], [-1, 0]) == {
        "error_accuracy": 0.0, "correct_accuracy": 0.0, "f1": 0.0, "n_error": 1, "n_correct": 1,
    }  # fmt: skip


def test_figures_with_one_kind_missing_or_none():
    only_errors = first_error_figures([1, 0], [1, 1])
    assert only_errors == {"error_accuracy": 0.5, "correct_accuracy": None, "f1": None, "n_error": 2, "n_correct": 0}
    only_correct = first_error_figures([-1], [-1])
    assert only_correct == {"error_accuracy": None, "correct_accuracy": 1.0, "f1": None, "n_error": 0, "n_correct": 1}
    assert first_error_figures([], []) == {
        "error_accuracy": None, "correct_accuracy": None, "f1": None, "n_error": 0, "n_correct": 0,
    }  # fmt: skip
    with pytest.raises(UserError, match="2 labels but 1 predictions"):
        first_error_figures([1, 2], [1])


def test_processbench_scores_per_subset_by_hand():
    subsets = ["gsm8k", "gsm8k", "gsm8k", "math", "math", "omnimath"]
    labels = [1, -1, 0, -1, 2, 0]
    scores = [
        [0.9, 0.2, 0.1],  # first below 0.5: step 1 == label 1, a hit
        [0.9, 0.8],  # none below: -1 == -1, a hit
        [0.6, 0.3],  # step 1 != label 0, a miss
        [0.7, 0.4],  # step 1, but no error: a miss
        [0.9, 0.9, 0.1, 0.9],  # step 2 == 2, a hit
        [0.1],  # step 0 == 0, a hit; omnimath has no error-free sample
    ]
    report = processbench_scores(subsets, labels, scores, threshold=0.5)
    gsm8k, math_, omnimath = report["subsets"]["gsm8k"], report["subsets"]["math"], report["subsets"]["omnimath"]
    assert list(report["subsets"]) == ["gsm8k", "math", "omnimath"]
    assert (gsm8k["error_accuracy"], gsm8k["correct_accuracy"], gsm8k["f1"]) == pytest.approx((0.5, 1.0, 2 * 0.5 / 1.5))
    assert (math_["error_accuracy"], math_["correct_accuracy"], math_["f1"]) == (1.0, 0.0, 0.0)
    assert (omnimath["error_accuracy"], omnimath["correct_accuracy"], omnimath["f1"]) == (1.0, None, None)
    assert report["average_f1"] == pytest.approx((2 / 3 + 0.0) / 2)  # over the subsets that have an F1
    assert report["threshold"] == 0.5


def test_processbench_scores_empty_and_mismatched():
    assert processbench_scores([], [], [], 0.5) == {"subsets": {}, "average_f1": None, "threshold": 0.5}
    with pytest.raises(UserError, match="need one each"):
        processbench_scores(["a"], [1, 2], [[0.1]], 0.5)


@pytest.mark.parametrize(
    ("how", "expected"),
    [("min", 0.25), ("last", 0.5), ("product", 0.8 * 0.25 * 0.5), ("mean", (0.8 + 0.25 + 0.5) / 3)],
)
def test_aggregations_by_hand(how, expected):
    assert aggregate_step_scores([0.8, 0.25, 0.5], how) == pytest.approx(expected)


def test_aggregations_of_one_step_and_errors():
    assert all(aggregate_step_scores([0.7], how) == pytest.approx(0.7) for how in AGGREGATIONS)
    with pytest.raises(UserError, match="unknown step aggregation 'max'"):
        aggregate_step_scores([0.1], "max")
    with pytest.raises(UserError, match="no step scores"):
        aggregate_step_scores([], "min")
