"""ProcessBench evaluation of a reward model's step scores: first-error identification per subset (`eval-rm --format
processbench`).

Each sample is scored in a step view (`rewardlab.step_scoring`): a PRM's P(step correct) (`prm`), or a sequence reward
model's r3hf step rewards (`r3hf`). The predicted first error is the first step whose score is below the threshold (-1
when none is), and `rewardlab.step_metrics.processbench_scores` gives ProcessBench's figures per subset: accuracy on the
samples with an error, on those without, their harmonic mean (F1), and the mean F1 over the subsets.

Thresholds: a PRM's is a probability, 0.5 by default (logit 0: the PRM thinks the step more likely wrong than right).
An r3hf step reward is how much the step moved the sequence reward, R(x, y up to the step) - R(x, y before it); its
default threshold is 0, so the predicted error is the first step that lowered the reward. The r3hf rewards are in the
reward model's own units, so a threshold that suits a model is best chosen on held-out data (`--threshold`).

A sample whose PRM encoding is over max_length is scored on the whole steps that fit (`scored_steps` < `n_steps` in its
row; counted in `truncated`); an error after them cannot be found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardlab.data.steps import StepDataset
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR
from rewardlab.modeling.service import ScoringService
from rewardlab.step_metrics import predicted_first_error, processbench_scores
from rewardlab.step_scoring import check_view, score_steps, steps_prompt

DEFAULT_THRESHOLDS = {"prm": 0.5, "r3hf": 0.0}


def default_threshold(view: str, threshold: float | None = None) -> float:
    """The threshold step scores are compared with: the given one, else the view's default."""
    check_view(view)
    return DEFAULT_THRESHOLDS[view] if threshold is None else threshold


def evaluate_processbench(
    service: ScoringService,
    dataset: StepDataset,
    view: str = "prm",
    *,
    threshold: float | None = None,
    separator: str = DEFAULT_STEP_SEPARATOR,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(figures, rows): `processbench_scores` over the data set's samples grouped by subset, with the view, counts and
    the data set's stats; one row per sample (dataset, index, subset, label, step_scores, prediction, ...) from which
    the figures are recomputed exactly (`figures_from_rows`)."""
    threshold = default_threshold(view, threshold)
    items = [(steps_prompt(e.prompt, separator) if view == "r3hf" else e.prompt, e.steps) for e in dataset.examples]
    scores = score_steps(service, items, view, separator=separator, progress=progress)
    rows = []
    for index, (example, scored) in enumerate(zip(dataset.examples, scores, strict=True)):
        step_scores = scored.ranking_scores
        row: dict[str, Any] = {  # the keys of train-rm's step rows (rewardlab.step_evaluation), and more
            "dataset": dataset.name,
            "index": index,
            "subset": example.subset or dataset.name,
            "label": example.first_error,
            "step_scores": step_scores,
            "prediction": predicted_first_error(step_scores, threshold),
        }
        if view == "prm":
            row["step_logits"] = scored.step_rewards
        row |= {"n_steps": scored.n_steps, "scored_steps": len(step_scores), "truncated": scored.truncated}
        if "id" in example.metadata:
            row["id"] = example.metadata["id"]
        rows.append(row)
    figures = figures_from_rows(rows, threshold)
    figures |= {"view": view, "n": len(rows), "truncated": sum(r["truncated"] for r in rows), "data": dataset.stats}
    return figures, rows


def figures_from_rows(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """ProcessBench's figures from `--scores` rows (their subset, label and step_scores)."""
    return processbench_scores(
        [r["subset"] for r in rows], [r["label"] for r in rows], [r["step_scores"] for r in rows], threshold
    )


def load_step_sets(specs: Sequence[str], *, skip_invalid: bool = False) -> dict[str, StepDataset]:
    """eval-rm's `--data NAME=SPEC` sets as step data (ProcessBench or TRL stepwise rows, detected per set), in order."""
    from rewardlab.data.errors import DataError
    from rewardlab.data.io import parse_named_spec
    from rewardlab.data.steps import load_steps

    sets: dict[str, StepDataset] = {}
    for spec in specs:
        name, source = parse_named_spec(spec)
        if name in sets:
            raise DataError(f"duplicate data set name '{name}'; name them: name=path", file=source)
        sets[name] = load_steps(source, name=name, skip_invalid=skip_invalid)
    return sets


def summary_lines(name: str, figures: dict[str, Any]) -> list[str]:
    """eval-rm's lines for one ProcessBench set: per subset, then the mean F1."""

    def pct(value: float | None) -> str:
        return "  n/a" if value is None else f"{100 * value:5.1f}"

    lines = []
    for subset, f in figures["subsets"].items():
        lines.append(
            f"{name}/{subset}: error acc {pct(f['error_accuracy'])}  correct acc {pct(f['correct_accuracy'])}  "
            f"F1 {pct(f['f1'])}  (n={f['n_error']}+{f['n_correct']})"
        )
    average = figures["average_f1"]
    lines.append(
        f"{name}: average F1 {pct(average)} over {len(figures['subsets'])} subset(s) "
        f"({figures['view']} step scores, threshold {figures['threshold']:g})"
    )
    return lines
