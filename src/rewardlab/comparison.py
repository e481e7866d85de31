"""`rewardlab compare`'s plumbing: read eval-rm `--scores` files (or score model directories with eval-rm's own code), match
the pairs of the two sides by (dataset, index), and hand each dataset's per-pair credits to `rewardlab.paired_stats`.
Also the one-line summary and the forest plot."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewardlab.config import EvalBatchingSpec
from rewardlab.errors import UserError
from rewardlab.paired_stats import LEVEL, RESAMPLES, Comparison, compare_credits, pair_credit

# scores of one source (one seed of one side): dataset -> index -> (chosen_reward, rejected_reward)
ScoreTable = dict[str, dict[int, tuple[float, float]]]

METHOD = {
    "credit": "per pair 1 if chosen out-scores rejected, 1/2 on a tie, else 0 (eval-rm's accuracy)",
    "seeds": "seed s of the first side is paired with seed s of the second, in the order given",
    "ci_pairs": "paired percentile bootstrap over pairs of the seed-averaged per-pair difference (both sides resampled together)",
    "ci_seeds": "mean of the per-seed differences +- t(n-1, (1+level)/2) * sd / sqrt(n); null with one seed (no seed spread)",
    "ci": "ci_low, ci_high: ci_pairs with one seed; with several, the hull of ci_pairs and ci_seeds (excludes zero only "
    "when both do)",
    "p_mcnemar": "exact McNemar (sign) test on the seed-averaged per-pair differences: b pairs where the first side earns more "
    "credit, c the reverse (a tie on one side counts as a whole discordant pair, equal credit as concordant); "
    "p = min(1, 2 P[Binomial(b+c, 1/2) <= min(b, c)])",
    "verdict": "better / worse when ci excludes zero on that side and p_mcnemar < 1 - level; else not distinguishable at this "
    "size. With one seed it judges these two models, not their training recipes (seed-to-seed variation is unseen)",
}


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its name and its sources (scores files or models), one per seed, in seed order."""

    name: str
    sources: tuple[str, ...]


def runs_side(name: str, run_dirs: list) -> tuple[Side, list[ScoreTable]]:
    """A side from training runs' directories (one per seed, in seed order): their train-rm scores files, read."""
    from rewardlab.rm_trainer.outputs import SCORES_NAME

    paths = tuple(str(Path(d) / SCORES_NAME) for d in run_dirs)
    return Side(name, paths), [read_scores(path) for path in paths]


def parse_sides(specs: list[str]) -> tuple[Side, Side]:
    """`["A=a_s0.jsonl,a_s1.jsonl", "B=b_s0.jsonl,b_s1.jsonl"]` -> two sides; seeds are listed comma-separated."""
    sides: list[Side] = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise UserError(f"'{spec}': give each side as NAME=SOURCE[,SOURCE...] (one source per seed)")
        if any(s.name == name for s in sides):
            raise UserError(f"side '{name}' given twice: list its seeds comma-separated, NAME=seed0,seed1")
        sources = tuple(s for s in rest.split(",") if s)
        if not sources:
            raise UserError(f"'{spec}': no source after '{name}='")
        sides.append(Side(name, sources))
    if len(sides) != 2:
        raise UserError(f"compare takes exactly two sides, NAME=SOURCES NAME=SOURCES; got {len(sides)}")
    a, b = sides
    if len(a.sources) != len(b.sources):
        raise UserError(
            f"'{a.name}' has {len(a.sources)} seed(s) and '{b.name}' {len(b.sources)}: seeds are paired by their order, "
            "give both sides the same number"
        )
    return a, b


def read_scores(path: str, only: str | None = None) -> ScoreTable:
    """An eval-rm `--scores` file (JSONL, .gz too) as dataset -> index -> (chosen_reward, rejected_reward); with `only`,
    that dataset's rows alone (the others, listwise ones too, are skipped)."""
    table: ScoreTable = {}
    others: dict[str, None] = {}  # datasets skipped, in order
    opener: Any = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_number}: not an eval-rm score row")
            dataset, index = str(row.get("dataset", "")), row.get("index")
            if only is not None and dataset != only:
                others[dataset] = None
                continue
            if "chosen_reward" not in row or "rejected_reward" not in row:
                hint = "not an eval-rm score row"
                if "chosen_rewards" in row:
                    hint = f"listwise scores of '{dataset}' are not compared yet; --dataset NAME picks a pairwise set"
                raise UserError(f"{path}:{line_number}: no chosen_reward / rejected_reward ({hint})")
            if not isinstance(index, int):
                raise UserError(f"{path}:{line_number}: 'index' must be an integer, got {index!r}")
            pairs = table.setdefault(dataset, {})
            if index in pairs:
                raise UserError(f"{path}:{line_number}: pair {index} of '{dataset}' appears twice")
            chosen, rejected = row["chosen_reward"], row["rejected_reward"]
            if chosen is None or rejected is None:
                raise UserError(f"{path}:{line_number}: a reward is null (non-finite) on pair {index} of '{dataset}'")
            pairs[index] = (float(chosen), float(rejected))
    if not table:
        if only is not None and others:
            raise UserError(f"{path} has no pairs of dataset '{only}' (it has: {', '.join(others)})")
        raise UserError(f"{path}: no score rows")
    return table


def score_models(
    sources: list[str],
    data: list[str],
    *,
    format: str | None = None,
    max_length: int | None = EvalBatchingSpec.max_length,
    truncation: str = EvalBatchingSpec.truncation,
    batch_size: int = EvalBatchingSpec.batch_size,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = False,
) -> list[ScoreTable]:
    """Score each model on the pairwise `--data` sets with eval-rm's own evaluation (`evaluate_preferences`), one at a time."""
    from rewardlab.data.listwise import ListwiseDataset
    from rewardlab.evaluation import evaluate_preferences
    from rewardlab.listwise_eval import load_eval_sets
    from rewardlab.modeling.loader import load_for_scoring, scoring_placement

    datasets = load_eval_sets(data, format=format)
    for name, ds in datasets.items():
        if isinstance(ds, ListwiseDataset):
            raise UserError(f"--data {name}: listwise sets (RewardBench 2 / RM-Bench) are not compared yet")
    placed_on, placed_as = scoring_placement(device, dtype)
    tables = []
    for source in sources:
        model = load_for_scoring(source, placed_on, placed_as)
        table: ScoreTable = {}
        for name, ds in datasets.items():
            _, raw = evaluate_preferences(model, ds.examples, max_length, truncation, batch_size, progress=progress, desc=name)
            table[name] = {i: (c, r) for i, c, r in zip(raw["index"], raw["chosen_reward"], raw["rejected_reward"], strict=True)}
        tables.append(table)
        del model
    return tables


def load_side(side: Side, data: list[str], only: str | None = None, **scoring: Any) -> list[ScoreTable]:
    """A side's score tables, one per seed: files are read (`only`: one dataset's rows); anything else is a model, scored
    on `data`."""
    files = [os.path.isfile(s) for s in side.sources]
    if all(files):
        return [read_scores(s, only) for s in side.sources]
    missing = [s for s, is_file in zip(side.sources, files, strict=True) if not is_file]
    if any(files):
        raise UserError(f"side '{side.name}' mixes scores files and models ({missing[0]}); give one kind")
    if not data:
        raise UserError(
            f"no such scores file: {missing[0]} (to score models, give --data NAME=SPEC; to compare eval-rm --scores files, "
            "give their paths)"
        )
    return score_models(list(side.sources), data, **scoring)


def datasets_to_compare(tables: list[ScoreTable], sources: list[str], pick: str | None) -> list[str]:
    """The datasets every source scores (all of them must score the same ones), or just `pick`."""
    if pick is not None:
        for table, source in zip(tables, sources, strict=True):
            if pick not in table:
                raise UserError(f"{source} has no pairs of dataset '{pick}' (it has: {', '.join(table)})")
        return [pick]
    first = list(tables[0])
    for table, source in zip(tables[1:], sources[1:], strict=True):
        if set(table) != set(first):
            raise UserError(
                f"{sources[0]} scores datasets {', '.join(first)} but {source} scores {', '.join(table)}; "
                "pick one with --dataset NAME"
            )
    return first


def credits(tables: list[ScoreTable], sources: list[str], dataset: str) -> tuple[np.ndarray, list[int]]:
    """Per-pair credit of each source on `dataset`, (sources, pairs), pairs in index order; the pair sets must match."""
    reference = tables[0][dataset]
    indices = sorted(reference)
    for table, source in zip(tables[1:], sources[1:], strict=True):
        pairs = table[dataset]
        if pairs.keys() != reference.keys():
            only_first, only_here = sorted(reference.keys() - pairs.keys()), sorted(pairs.keys() - reference.keys())
            example = (only_first or only_here)[0]
            raise UserError(
                f"{sources[0]} and {source} score different pairs of '{dataset}': {len(only_first)} only in the first, "
                f"{len(only_here)} only in the second (e.g. index {example})"
            )
    out = np.empty((len(tables), len(indices)))
    for k, table in enumerate(tables):
        rewards = np.array([table[dataset][i] for i in indices], dtype=np.float64).reshape(-1, 2)
        out[k] = pair_credit(rewards[:, 0], rewards[:, 1])
    return out, indices


def compare_sides(
    a: Side,
    tables_a: list[ScoreTable],
    b: Side,
    tables_b: list[ScoreTable],
    *,
    dataset: str | None = None,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[tuple[str, Comparison]]:
    """One comparison per dataset (or of `dataset` only), pairs matched by (dataset, index) across every source."""
    tables, sources = [*tables_a, *tables_b], [*a.sources, *b.sources]
    results = []
    for name in datasets_to_compare(tables, sources, dataset):
        credit, _ = credits(tables, sources, name)
        n = len(tables_a)
        results.append((name, compare_credits(credit[:n], credit[n:], level, resamples, seed)))
    return results


def compare_family(
    cases: list[tuple[dict, Side, list[ScoreTable], Side, list[ScoreTable], str]],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Several comparisons judged together (a study's or the demo's cells against their baseline): each case is (label,
    side a with its tables, side b with its tables, dataset). Returns one entry per case (the label, `compare`'s keys,
    Holm's `p_holm` and `verdict_holm`) and the family's summary (how many verdicts pass alone, with Holm, and how many a
    chance rule would pass with no true effect anywhere)."""
    from rewardlab.paired_stats import UNDECIDED, family_verdict, holm_adjust

    entries = []
    for label, a, tables_a, b, tables_b, dataset in cases:
        [(_, c)] = compare_sides(a, tables_a, b, tables_b, dataset=dataset, level=level, resamples=resamples, seed=0)
        entries.append(label | {"eval_set": dataset, "vs": b.name} | c.as_dict())
    for entry, p in zip(entries, holm_adjust([e["p_mcnemar"] for e in entries]) if entries else [], strict=True):
        entry["p_holm"] = p
        entry["verdict_holm"] = family_verdict(entry["verdict"], p, level)
    family = {
        "method": "holm",
        "size": len(entries),
        "level": level,
        "verdicts_alone": sum(e["verdict"] != UNDECIDED for e in entries),
        "verdicts_holm": sum(e["verdict_holm"] != UNDECIDED for e in entries),
        "chance_passes_alone": len(entries) * (1.0 - level),  # at most, with no true effect anywhere
    }
    return entries, family


def report(a: Side, b: Side, results: list[tuple[str, Comparison]], *, resamples: int, seed: int) -> dict[str, Any]:
    """The JSON written: sides, settings, method notes and `comparisons` (one entry per dataset); with one dataset, that
    entry's keys (diff, ci_low, ci_high, n_pairs, n_seeds, p_mcnemar, verdict, ...) are also at the top level."""
    entries = [{"dataset": name, **c.as_dict()} for name, c in results]
    out: dict[str, Any] = {
        "a": {"name": a.name, "sources": list(a.sources)},
        "b": {"name": b.name, "sources": list(b.sources)},
        "level": results[0][1].level,
        "resamples": resamples,
        "bootstrap_seed": seed,
        "method": METHOD,
        "comparisons": entries,
    }
    if len(entries) == 1:
        out = {**entries[0], **out}
    return out


def summary_line(a: str, b: str, c: Comparison, dataset: str | None = None) -> str:
    """`A 0.812 vs B 0.798: diff +0.014 [95% CI -0.004, +0.031], McNemar p 0.13, 1,000 pairs, 1 seed: not distinguishable
    at this size`."""
    seeds = f"{c.n_seeds} seed" + ("s" if c.n_seeds > 1 else "")
    line = (
        f"{a} {c.mean_a:.3f} vs {b} {c.mean_b:.3f}: diff {c.diff:+.3f} [{c.level * 100:g}% CI {c.ci_low:+.3f}, "
        f"{c.ci_high:+.3f}], McNemar p {c.p_value:.2g}, {c.n_pairs:,} pairs, {seeds}: {c.verdict}"
    )
    return f"{dataset}: {line}" if dataset is not None else line


def plot_forest(a: str, b: str, results: list[tuple[str, Comparison]], path: str | Path) -> None:
    """A forest plot per dataset: each seed's difference with its bootstrap interval over pairs, and with several seeds
    the mean over seeds with its t-interval and the bootstrap over pairs of the seed-averaged differences; the combined
    interval (the verdict's) last, in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [len(c.per_seed) + (3 if c.n_seeds > 1 else 0) + 1 for _, c in results]
    fig, axes = plt.subplots(len(results), 1, figsize=(7, 1.0 + 0.42 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for ax, (name, c) in zip(axes[:, 0], results, strict=True):
        rows: list[tuple[str, float, float, float, str]] = []  # label, estimate, low, high, colour
        if c.n_seeds > 1:
            rows += [(f"seed {s['seed']}", s["diff"], s["ci_low"], s["ci_high"], "C0") for s in c.per_seed]
            assert c.ci_seeds is not None
            rows.append(("mean over seeds (t)", c.diff, *c.ci_seeds, "C1"))
            rows.append(("pairs, seed-averaged (bootstrap)", c.diff, *c.ci_pairs, "C2"))
        label = "combined" if c.n_seeds > 1 else "bootstrap over pairs"
        rows.append((f"{label}: {c.verdict}", c.diff, c.ci_low, c.ci_high, "black"))
        for y, (_label, estimate, low, high, colour) in enumerate(reversed(rows)):
            bold = y == 0
            ax.errorbar(estimate, y, xerr=[[estimate - low], [high - estimate]], fmt="D" if bold else "o", color=colour,
                        capsize=3, lw=2.2 if bold else 1.2)  # fmt: skip
        ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=8)
        ax.axvline(0.0, color="grey", ls=":", lw=1)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        level = f"{c.level * 100:g}%"
        ax.set_title(
            f"{name}: accuracy {a} - {b} ({level} intervals; {c.n_pairs:,} pairs, p McNemar {c.p_value:.2g})", fontsize=9
        )
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(f"accuracy difference, {a} - {b}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
