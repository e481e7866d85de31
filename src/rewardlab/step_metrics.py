"""Step scores into figures: ProcessBench's first-error identification, and one score per response for ranking. Pure
functions on lists, no model, no I/O.

ProcessBench (QwenLM/ProcessBench, `code/run_eval_prm_*.py`): a sample's label is the index of its first wrong step, -1
when every step is correct. A PRM's prediction is the first step whose score falls below the threshold (-1 when none
does). Per subset: `error_accuracy` = the share of samples with an error whose prediction equals the label,
`correct_accuracy` = the share of samples without an error predicted -1, and `f1` = their harmonic mean; ProcessBench
prints them as percentages and reports the mean F1 over its four subsets. Here they are fractions in [0, 1]; a figure
with no samples to compute it from is None (a subset without error-free samples has no correct_accuracy and no F1), and
F1 is 0 when both accuracies are 0.

Ranking a response from its step scores (best-of-N with a PRM): `min` (the weakest step), `last` (the final step's score),
`product` (for probabilities: the chance that every step is correct), `mean`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rewardlab.choices import STEP_AGGREGATIONS
from rewardlab.errors import UserError

AGGREGATIONS = STEP_AGGREGATIONS


def _check_scores(scores: Sequence[float]) -> None:
    if not scores:
        raise UserError("no step scores")
    bad = next((s for s in scores if not math.isfinite(s)), None)
    if bad is not None:
        raise UserError(f"step scores must be finite numbers, got {bad}")


def predicted_first_error(scores: Sequence[float], threshold: float) -> int:
    """The index of the first step whose score is below `threshold`, -1 when none is."""
    _check_scores(scores)
    return next((i for i, score in enumerate(scores) if score < threshold), -1)


def first_error_figures(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float | int | None]:
    """ProcessBench's three figures for one subset: error_accuracy, correct_accuracy, f1 (see the module docstring),
    with n_error and n_correct, the numbers of samples each accuracy is over."""
    if len(labels) != len(predictions):
        raise UserError(f"{len(labels)} labels but {len(predictions)} predictions")
    error = [pred == label for label, pred in zip(labels, predictions, strict=True) if label != -1]
    correct = [pred == -1 for label, pred in zip(labels, predictions, strict=True) if label == -1]
    error_accuracy = sum(error) / len(error) if error else None
    correct_accuracy = sum(correct) / len(correct) if correct else None
    f1 = None
    if error_accuracy is not None and correct_accuracy is not None:
        total = error_accuracy + correct_accuracy
        f1 = 2 * error_accuracy * correct_accuracy / total if total > 0 else 0.0
    return {
        "error_accuracy": error_accuracy,
        "correct_accuracy": correct_accuracy,
        "f1": f1,
        "n_error": len(error),
        "n_correct": len(correct),
    }


def processbench_scores(
    subsets: Sequence[str], labels: Sequence[int], step_scores: Sequence[Sequence[float]], threshold: float
) -> dict:
    """ProcessBench per subset from each sample's subset, label and step scores: {"subsets": {name: figures and n},
    "average_f1": the mean F1 over the subsets that have one (None when none has), "threshold"}. Subsets in order of
    first appearance."""
    if not len(subsets) == len(labels) == len(step_scores):
        raise UserError(f"{len(subsets)} subsets, {len(labels)} labels and {len(step_scores)} score lists: need one each")
    predictions = [predicted_first_error(scores, threshold) for scores in step_scores]
    grouped: dict[str, tuple[list[int], list[int]]] = {}
    for subset, label, prediction in zip(subsets, labels, predictions, strict=True):
        group = grouped.setdefault(subset, ([], []))
        group[0].append(label)
        group[1].append(prediction)
    figures = {subset: first_error_figures(*group) for subset, group in grouped.items()}
    f1s = [f["f1"] for f in figures.values() if f["f1"] is not None]
    return {"subsets": figures, "average_f1": sum(f1s) / len(f1s) if f1s else None, "threshold": threshold}


def aggregate_step_scores(scores: Sequence[float], how: str) -> float:
    """One score for a response from its step scores: min | last | product | mean."""
    if how not in AGGREGATIONS:
        raise UserError(f"unknown step aggregation {how!r} (expected one of: {', '.join(AGGREGATIONS)})")
    _check_scores(scores)
    if how == "min":
        return float(min(scores))
    if how == "last":
        return float(scores[-1])
    if how == "product":
        return float(math.prod(scores))
    return float(math.fsum(scores) / len(scores))
