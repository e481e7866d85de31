"""OOD accuracy taken apart in the built-in world (issue 21, part 4): by where world 4's ID-only shortcut cue sits and by
what makes a pair out of distribution.

Cue cell of a pair (the cue: `rewardlab.tasks.world.STYLE_CUE`, a trailing full stop the gold reward ignores):
    chosen_only    the cue ends the chosen response only (the shortcut points the right way)
    rejected_only  the cue ends the rejected response only (the shortcut points the wrong way)
    neutral        both responses end with it, or neither (the shortcut says nothing)
Kind of an OOD pair:
    new_family     a family no preference data grades (`OOD_FAMILIES`), in any style
    new_phrasing   an ID family asked in an OOD style (`OOD_STYLES`)

A split table is {cue: {kind: {"accuracy", "n"}}} over the cells above plus the margins "all" (either dimension);
accuracy counts a tie as one half (as `rewardlab.losses.pairwise_accuracy`) and is None on an empty cell.
Everything here is bookkeeping over per-pair scores that were already computed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from rewardlab.data.types import PreferenceExample
from rewardlab.tasks.world import ID_FAMILIES, OOD_FAMILIES, OOD_STYLES, has_cue, parse_prompt

CUE_CELLS = ("chosen_only", "rejected_only", "neutral")
KINDS = ("new_family", "new_phrasing")
ALL = "all"

Cell = tuple[str, str]  # (cue cell, kind)


def cue_cell(cue_chosen: bool, cue_rejected: bool) -> str:
    """Where the cue sits: chosen_only, rejected_only, or neutral (both or neither)."""
    if cue_chosen == cue_rejected:
        return "neutral"
    return "chosen_only" if cue_chosen else "rejected_only"


def ood_kind(family: str, style: str) -> str:
    """new_family (an OOD family, any style) or new_phrasing (an ID family in an OOD style); an ID pair is an error."""
    if family in OOD_FAMILIES:
        return "new_family"
    if family in ID_FAMILIES and style in OOD_STYLES:
        return "new_phrasing"
    raise ValueError(f"{family}/{style} is not an OOD task of the built-in world")


def _text(response: Any) -> str:
    return response if isinstance(response, str) else "".join(m["content"] for m in response)


def pair_cell(example: PreferenceExample) -> Cell:
    """(cue cell, kind) of one world pair: the cue read from the responses' text, family and style from the record's
    `subset` (family/style, as the world's data files write it) or else from the prompt."""
    if example.subset and example.subset.count("/") == 1:
        family, style = example.subset.split("/")
    else:
        task = parse_prompt(example.prompt)
        family, style = task.family, task.style
    return cue_cell(has_cue(_text(example.chosen)), has_cue(_text(example.rejected))), ood_kind(family, style)


def pair_cells(examples: Sequence[PreferenceExample]) -> list[Cell]:
    """`pair_cell` of every example, in order."""
    return [pair_cell(e) for e in examples]


def split_accuracy(cells: Sequence[Cell], chosen: Iterable[float], rejected: Iterable[float]) -> dict:
    """The split table of per-pair scores: pair i is in cell cells[i] and is right when chosen[i] > rejected[i] (one half
    on a tie)."""
    credit: dict[Cell, list[float]] = {(c, k): [] for c in (*CUE_CELLS, ALL) for k in (*KINDS, ALL)}
    chosen, rejected = list(chosen), list(rejected)
    if not len(cells) == len(chosen) == len(rejected):
        raise ValueError(f"{len(cells)} cells for {len(chosen)} chosen and {len(rejected)} rejected scores")
    for (cue, kind), c, r in zip(cells, chosen, rejected, strict=True):
        right = 1.0 if c > r else 0.5 if c == r else 0.0
        for key in ((cue, kind), (cue, ALL), (ALL, kind), (ALL, ALL)):
            credit[key].append(right)
    return {cue: {kind: _cell(credit[cue, kind]) for kind in (*KINDS, ALL)} for cue in (*CUE_CELLS, ALL)}


def _cell(credits: list[float]) -> dict:
    return {"accuracy": statistics.fmean(credits) if credits else None, "n": len(credits)}


def split_from_score_rows(cells: Sequence[Cell], rows: Iterable[dict], dataset: str | None = None) -> dict:
    """The split table of eval-rm-style score rows ({dataset, index, chosen_reward, rejected_reward}; `index` into the
    examples `cells` was made from), those of `dataset` only when given. Pairs without a row (dropped by truncation)
    are left out."""
    picked = [r for r in rows if dataset is None or r.get("dataset") == dataset]
    return split_accuracy(
        [cells[r["index"]] for r in picked], [r["chosen_reward"] for r in picked], [r["rejected_reward"] for r in picked]
    )


def mean_split(tables: Sequence[dict]) -> dict:
    """Cell by cell mean accuracy over seeds' split tables of the same pairs (n is the pairs per cell, not summed)."""
    if not tables:
        raise ValueError("no split tables")
    mean: dict = {}
    for cue, row in tables[0].items():
        mean[cue] = {}
        for kind, cell in row.items():
            values = [t[cue][kind]["accuracy"] for t in tables]
            mean[cue][kind] = {"accuracy": None if None in values else statistics.fmean(values), "n": cell["n"]}
    return mean


def split_summary(tables: Sequence[dict]) -> dict:
    """results.json's entry for one model and size: {"mean": mean_split, "per_seed": the tables}."""
    return {"mean": mean_split(tables), "per_seed": list(tables)}
