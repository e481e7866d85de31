"""`rewardlab study`: the GRM paper's table on any model and data, as a grid of reward-model runs.

    cells     variants x alphas (GRM variants only) x training sizes x seeds (`grid`); a size N is the first N pairs of one
              fixed shuffle of the training data (`--subset-seed`), so sizes are nested and every cell of a size trains on
              the same pairs;
    train     each cell is a train-rm run (`rewardlab.train_rm.train_reward_model`) into DIR/cells/NAME/, kept at its best
              accuracy on the ID validation set (`--select-on`, model selection on it alone), then scored pair by pair on
              every eval set into DIR/cells/NAME/scores.jsonl (train-rm's own, eval-rm's `--scores` rows); cells run one at a
              time or in
              `--workers` processes;
    table     accuracy per variant / alpha / size / eval set (mean and per seed), each variant against vanilla paired by
              seed with `rewardlab.comparison` (the statistics of `rewardlab compare`, on the cells' scores files), Holm's
              adjustment across the family of comparisons; results.json, table.md, alpha_curve.png, id_vs_ood.png.

Resumable: a finished cell (sealed by rewardlab, with metrics.json and scores.jsonl) is skipped when the same study is run
again into the same directory; an unfinished one is trained again from the start. DIR/study.json records the settings
that decide the results; a rerun with other settings is refused.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rewardlab.config import STUDY_VARIANTS, VARIANT_SETTINGS, RewardTrainingFields, StudyFields, check_ranges
from rewardlab.errors import UserError
from rewardlab.rm_trainer.outputs import SCORES_NAME
from rewardlab.workers import run_jobs

GRM_VARIANTS = ("grm-sft", "grm-dpo", "grm-dpo-noref")
BASELINE = "vanilla"
# settings that change no cell (where and how the study runs; how the table judges): a rerun may change them and resume
RUN_ONLY = ("output_dir", "overwrite", "progress", "workers", "device", "report_to", "level", "resamples")
CELLS, SCORES = "cells", SCORES_NAME
METHOD = {
    "sizes": "a size N trains on the first N pairs of one shuffle of the training data (seeded by subset_seed): nested "
    "subsets, the same pairs for every variant, alpha and seed",
    "selection": "each cell keeps the weights with its best accuracy on the select-on set (evaluated every eval_steps); the "
    "other sets are scored once, on those weights",
    "accuracy": "per pair 1 if chosen out-scores rejected, 1/2 on a tie, else 0, from the cell's scores.jsonl; mean and "
    "t-interval over seeds (no interval with one seed)",
    "comparisons": "each variant (at each alpha) against vanilla at the same size, seed s with seed s, on every eval set but "
    "the select-on one: rewardlab compare's statistics (rewardlab.comparison) on the cells' scores files",
    "family": "Holm's step-down adjustment of p_mcnemar across every comparison of the study; verdict_holm keeps a "
    "comparison's verdict only where p_holm < 1 - level (the family's chance of any false verdict stays under 1 - level); "
    "verdict is the comparison judged alone, as rewardlab compare would",
}


def split_list(values: Any, kind: type, flag: str) -> list:
    """`["0.1,0.3", 1.0]` or `"0.1,0.3"` -> [0.1, 0.3, 1.0]: comma-separated or repeated values, as `kind`."""
    items = values if isinstance(values, list | tuple) else [values]
    out = []
    for item in items:
        for part in str(item).split(",") if isinstance(item, str) else [item]:
            if isinstance(part, str) and not part.strip():
                continue
            try:
                out.append(kind(part.strip()) if isinstance(part, str) else kind(part))
            except ValueError:
                raise UserError(f"{flag} {part!r}: not a{'n integer' if kind is int else ' number'}") from None
    return out


@dataclass
class StudyConfig(StudyFields):
    """Every study setting (declared in rewardlab.config.StudyFields); this class parses the lists and checks them."""

    def __post_init__(self) -> None:
        self.variants = split_list(self.variants, str, "--variants")
        self.alphas = split_list(self.alphas, float, "--alphas")
        self.sizes = split_list(self.sizes, int, "--sizes")

    def validate(self) -> None:
        check_ranges(self)
        if self.train_data is None:
            raise UserError("no training data: pass --train-data (or train_data in --config)")
        for variant in self.variants:
            if variant not in STUDY_VARIANTS:
                raise UserError(f"--variants {variant!r}: expected one of {', '.join(STUDY_VARIANTS)}")
        if len(set(self.variants)) != len(self.variants):
            raise UserError(f"--variants {','.join(self.variants)}: a variant is given twice")
        if any(v in GRM_VARIANTS for v in self.variants) and not self.alphas:
            raise UserError("--alphas: the GRM variants need at least one alpha")
        for alpha in self.alphas:
            if not 0.0 <= alpha <= 1.0:
                raise UserError(f"--alphas {alpha:g}: must be >= 0 and <= 1")
        for size in self.sizes:
            if size < 1:
                raise UserError(f"--sizes {size}: must be >= 1")
        if self.select_best_on is None:
            raise UserError("--select-on NAME: name the --eval-data set that is the ID validation set (model selection)")
        names = [spec.partition("=")[0] for spec in self.eval_data]
        if self.select_best_on not in names:
            raise UserError(f"--select-on {self.select_best_on}: not an --eval-data NAME ({', '.join(names) or 'none given'})")
        if self.eval_steps <= 0:
            raise UserError("--eval-steps: must be > 0 (how often the --select-on set is evaluated)")
        self.check_output()

    @property
    def all_variants(self) -> list[str]:
        """The variants run, vanilla first (every comparison is against it)."""
        return [BASELINE, *(v for v in self.variants if v != BASELINE)]

    def identity(self) -> dict:
        """The settings that decide the results (study.json): all but where and how it runs."""
        values = asdict(self)
        values["variants"] = self.all_variants
        return {k: v for k, v in values.items() if k not in RUN_ONLY}


@dataclass(frozen=True)
class Cell:
    """One reward-model run of the study."""

    variant: str
    alpha: float | None  # GRM variants only
    size: int | None  # None: all the training data
    seed: int

    @property
    def name(self) -> str:
        alpha = f"-a{self.alpha:g}" if self.alpha is not None else ""
        return f"{self.variant}{alpha}-n{self.size if self.size is not None else 'all'}-s{self.seed}"

    @property
    def group(self) -> tuple[str, float | None, int | None]:
        return self.variant, self.alpha, self.size


def grid(cfg: StudyConfig) -> list[Cell]:
    """Every cell, vanilla first, then by variant, alpha, size and seed."""
    sizes: list[int | None] = list(cfg.sizes) or [None]
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    cells = []
    for variant in cfg.all_variants:
        alphas: list[float | None] = list(cfg.alphas) if variant in GRM_VARIANTS else [None]
        cells += [Cell(variant, alpha, size, seed) for alpha in alphas for size in sizes for seed in seeds]
    return cells


def cell_config(cfg: StudyConfig, cell: Cell, out: Path, redo: bool = False) -> Any:
    """The cell's RewardTrainingConfig: every train-rm setting the study shares, and the cell's variant, alpha and seed."""
    from rewardlab.train_rm import RewardTrainingConfig

    shared = {f.name for f in fields(RewardTrainingFields)} & {f.name for f in fields(StudyFields)}
    values = {name: getattr(cfg, name) for name in shared} | VARIANT_SETTINGS[cell.variant]
    if cell.alpha is not None:
        values["alpha"] = cell.alpha
    if cell.variant == "ensemble":
        values["ensemble_size"] = cfg.ensemble_members
    values |= {"seed": cell.seed, "output_dir": str(out / CELLS / cell.name), "overwrite": redo, "progress": False}
    return RewardTrainingConfig(**values)


def cell_finished(path: Path) -> bool:
    """A cell rewardlab finished: its directory sealed, with metrics.json and scores.jsonl."""
    from rewardlab.runtime import output_sealed, written_by_rewardlab

    return written_by_rewardlab(path) and output_sealed(path) and (path / "metrics.json").is_file() and (path / SCORES).is_file()


# ----------------------------------------------------------------------------------------------------------------------
# data


def load_study_data(cfg: StudyConfig) -> dict:
    """{"train": PreferenceDataset, "eval": {name: PreferenceDataset}} as the settings read them."""
    from rewardlab.data.loading import load_named_preferences, load_preferences
    from rewardlab.rm_trainer.data import data_options

    return {
        "train": load_preferences(cfg.train_data, **data_options(cfg)),
        "eval": load_named_preferences(cfg.eval_data, **data_options(cfg)),
    }


def subset(train: Any, size: int | None, subset_seed: int) -> Any:
    """The first `size` pairs of one shuffle of `train` (seeded): nested across sizes; kept in the data's order."""
    from rewardlab.data.loading import PreferenceDataset

    if size is None:
        return train
    n = len(train.examples)
    if size > n:
        raise UserError(f"--sizes {size}: the training data has {n} pairs")
    order = random.Random(subset_seed).sample(range(n), n)
    kept = sorted(order[:size])
    return PreferenceDataset(train.name, [train.examples[i] for i in kept], train.format, {**train.stats, "subset": size})


# ----------------------------------------------------------------------------------------------------------------------
# the study directory


def open_study_dir(cfg: StudyConfig) -> Path:
    """Claim DIR once: new (or --overwrite: replaced), or the same study again (a resume). Another study's settings, or
    another rewardlab output, are refused in one line."""
    from rewardlab.runtime import claim_output_dir, dumps, version, write_json

    out = Path(cfg.output_dir)
    identity = cfg.identity()
    recorded = out / "study.json"
    resume = False
    if recorded.is_file() and not cfg.overwrite:
        import json

        try:
            previous = json.loads(recorded.read_text(encoding="utf-8")).get("config", {})
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous != json.loads(dumps(identity)):
            changed = sorted(k for k in identity.keys() | (previous or {}).keys() if (previous or {}).get(k) != identity.get(k))
            first = changed[0] if changed else "config"
            was = (previous or {}).get(first)
            raise UserError(
                f"--output-dir {out}: holds a study with other settings ({first}: {was!r} there, {identity.get(first)!r} "
                "now); rerun it with its own settings to resume, pass --overwrite to replace it, or choose a new --output-dir"
            )
        resume = True
    elif out.is_dir() and any(p.name != ".rewardlab-output.json" for p in out.iterdir()) and not cfg.overwrite:
        raise UserError(
            f"--output-dir {out}: holds an earlier output that is not a study; pass --overwrite to replace it (rewardlab "
            "outputs only), or choose a new path"
        )
    claim_output_dir(out, "study", overwrite=cfg.overwrite, resume=resume, inputs=cfg.input_paths())
    if not resume:
        write_json(recorded, {"config": identity, "rewardlab_version": version()})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# one cell (also the worker's task: module-level, so that a spawned process can run it)


def run_cell(run_cfg: Any, datasets: dict) -> dict:
    """Train the cell; train-rm scores every pair of every eval set with the kept weights into the cell's scores.jsonl
    (eval-rm's rows) and seals the directory once it is finished. Returns its accuracy per eval set, the selection
    (`select-on`'s history and the step kept), the steps it ran and its seconds."""
    from rewardlab.train_rm import train_reward_model

    t0 = time.perf_counter()
    metrics = train_reward_model(run_cfg, datasets)
    return {
        "accuracy": {name: m["accuracy"] for name, m in metrics["eval"].items()},
        "selection": metrics["train"].get("selection"),
        "steps": metrics["train"]["steps"],
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------------------------------------------------
# the study


def run_study(cfg: StudyConfig, datasets: dict | None = None, cell_runner: Callable = run_cell) -> dict:
    """Run (or resume) the study; returns the results (also results.json, table.md and the figures in cfg.output_dir).

    `datasets` may pass already-loaded data: {"train": PreferenceDataset, "eval": {name: PreferenceDataset}}; their names
    must match --eval-data's (the specs are then only recorded)."""
    from tqdm.auto import tqdm

    from rewardlab.runtime import seal_output_dir

    cfg.validate()
    data = datasets if datasets is not None else load_study_data(cfg)
    if cfg.select_best_on not in data["eval"]:
        raise UserError(f"--select-on {cfg.select_best_on}: not an eval set ({', '.join(data['eval'])})")
    trains = {size: subset(data["train"], size, cfg.subset_seed) for size in (cfg.sizes or [None])}
    out = open_study_dir(cfg)
    cells = grid(cfg)
    jobs = []
    for cell in cells:
        path = out / CELLS / cell.name
        if not cell_finished(path):
            redo = path.exists()  # rewardlab's own unfinished cell (a run killed mid-way): trained again
            jobs.append((cell, cell_config(cfg, cell, out, redo=redo), {"train": trains[cell.size], "eval": data["eval"]}))
    bar = tqdm(total=len(cells), initial=len(cells) - len(jobs), desc="study cells", disable=not cfg.progress)

    def done(cell: Cell, result: dict) -> None:
        accuracy = "  ".join(f"{name} {value:.3f}" for name, value in result["accuracy"].items())
        tqdm.write(f"{cell.name}: {accuracy}  ({result['seconds']:.0f} s)")
        bar.update(1)

    if len(jobs) < len(cells):
        tqdm.write(f"{out}: {len(cells) - len(jobs)} of {len(cells)} cells already finished, resuming")
    run_jobs(jobs, cfg.workers, done, cell_runner)
    bar.close()
    results = summarise(cfg, cells, out)
    write_outputs(results, out)
    seal_output_dir(out)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# the table


def group_label(variant: str, alpha: float | None, size: int | None) -> dict:
    return {"variant": variant, "alpha": alpha, "size": size}


def over_seeds(values: list[float], level: float) -> dict:
    """{mean, ci_low, ci_high}: the mean over seeds and its t-interval (None bounds with one seed)."""
    import numpy as np

    from rewardlab.paired_stats import t_interval

    mean, low, high = t_interval(np.array(values, dtype=np.float64), level)
    return {"mean": mean, "ci_low": low if math.isfinite(low) else None, "ci_high": high if math.isfinite(high) else None}


def summarise(cfg: StudyConfig, cells: list[Cell], out: Path) -> dict:
    """results.json's content from the finished cells' scores files."""
    import numpy as np

    from rewardlab.comparison import Side, compare_family, read_scores
    from rewardlab.paired_stats import pair_credit

    tables = {cell: read_scores(str(out / CELLS / cell.name / SCORES)) for cell in cells}
    eval_sets = list(tables[cells[0]])
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.group, []).append(cell)

    def accuracy(cell: Cell, name: str) -> float:
        rewards = np.array([tables[cell][name][i] for i in sorted(tables[cell][name])], dtype=np.float64).reshape(-1, 2)
        return float(pair_credit(rewards[:, 0], rewards[:, 1]).mean())

    table = []
    for (variant, alpha, size), members in groups.items():
        for name in eval_sets:
            per_seed = [accuracy(c, name) for c in members]
            table.append(
                group_label(variant, alpha, size) | {"eval_set": name} | over_seeds(per_seed, cfg.level) | {
                    "n_seeds": len(per_seed),
                    "per_seed": [{"seed": c.seed, "accuracy": a} for c, a in zip(members, per_seed, strict=True)],
                }
            )  # fmt: skip
    compared = [n for n in eval_sets if n != cfg.select_best_on] or [cfg.select_best_on]
    cases = []
    for (variant, alpha, size), members in groups.items():
        if variant == BASELINE:
            continue
        base = groups[(BASELINE, None, size)]
        side_a = Side(f"{variant}" + (f"-a{alpha:g}" if alpha is not None else ""), tuple(scores_path(out, c) for c in members))
        side_b = Side(BASELINE, tuple(scores_path(out, c) for c in base))
        label = group_label(variant, alpha, size)
        cases += [(label, side_a, [tables[m] for m in members], side_b, [tables[m] for m in base], name) for name in compared]
    comparisons, family = compare_family(cases, level=cfg.level, resamples=cfg.resamples)
    return {
        "config": asdict(cfg),
        "select_on": cfg.select_best_on,
        "eval_sets": eval_sets,
        "compared_on": compared,
        "method": METHOD,
        "cells": {
            c.name: group_label(*c.group)
            | {"seed": c.seed, "dir": f"{CELLS}/{c.name}", "accuracy": {n: accuracy(c, n) for n in eval_sets}}
            for c in cells
        },  # fmt: skip
        "table": table,
        "comparisons": comparisons,
        "family": family,
        "alpha_curve": alpha_curve(table),
    }


def scores_path(out: Path, cell: Cell) -> str:
    return str(out / CELLS / cell.name / SCORES)


def alpha_curve(table: list[dict]) -> dict:
    """GRM variant -> size -> eval set -> [{alpha, mean, ci_low, ci_high}] by alpha; "vanilla" as the reference line."""
    curve: dict = {}
    for row in table:
        if row["variant"] in GRM_VARIANTS or row["variant"] == BASELINE:
            point = {k: row[k] for k in ("alpha", "mean", "ci_low", "ci_high")}
            curve.setdefault(row["variant"], {}).setdefault(str(row["size"] or "all"), {}).setdefault(row["eval_set"], [])
            curve[row["variant"]][str(row["size"] or "all")][row["eval_set"]].append(point)
    for sizes in curve.values():
        for sets in sizes.values():
            for points in sets.values():
                points.sort(key=lambda p: p["alpha"] if p["alpha"] is not None else -1.0)
    return curve


# ----------------------------------------------------------------------------------------------------------------------
# outputs


def write_outputs(results: dict, out: Path) -> None:
    from rewardlab.runtime import version, write_json, write_text

    write_json(out / "results.json", results | {"rewardlab_version": version()})
    write_text(out / "table.md", markdown(results))
    plot_alpha_curve(results["alpha_curve"], results["eval_sets"], results["family"]["level"], out / "alpha_curve.png")
    plot_id_vs_ood(results, out / "id_vs_ood.png")


def _label(row: dict) -> str:
    alpha = f" a={row['alpha']:g}" if row["alpha"] is not None else ""
    return f"{row['variant']}{alpha}"


def _size(row: dict) -> str:
    return str(row["size"]) if row["size"] is not None else "all"


def markdown(results: dict) -> str:
    """table.md: accuracy per variant / alpha / size (mean +- seed sd, seeds) and the comparisons against vanilla."""
    import numpy as np

    sets = results["eval_sets"]
    lines = [
        "# Study: accuracy by variant, alpha and training size",
        "",
        f"Model selection on `{results['select_on']}` only (its column is optimistic: the weights were chosen on it). "
        "Mean over seeds, +- the seeds' standard deviation.",
        "",
        "| variant | size | " + " | ".join(sets) + " |",
        "|---|---|" + "---|" * len(sets),
    ]
    rows: dict[tuple, dict] = {}
    for row in results["table"]:
        rows.setdefault((_label(row), _size(row)), {})[row["eval_set"]] = row
    for (label, size), by_set in rows.items():
        cells = []
        for name in sets:
            values = [s["accuracy"] for s in by_set[name]["per_seed"]]
            sd = f" +- {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{by_set[name]['mean']:.3f}{sd} ({len(values)})")
        lines.append(f"| {label} | {size} | " + " | ".join(cells) + " |")
    family = results["family"]
    level = f"{family['level'] * 100:g}%"
    lines += [
        "",
        "## Against vanilla (paired by seed)",
        "",
        f"{family['size']} comparisons judged together. Alone, each verdict fires by chance at most {1 - family['level']:.2g} "
        f"of the time, so about {family['chance_passes_alone']:.1f} of {family['size']} could pass with no true effect; "
        f"{family['verdicts_alone']} pass alone. With Holm's adjustment across the family (the verdict column), "
        f"{family['verdicts_holm']} pass.",
        "",
        f"| variant | size | eval set | diff | {level} CI | p McNemar | p Holm | seeds | pairs | verdict (Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results["comparisons"]:
        lines.append(
            f"| {_label(c)} | {_size(c)} | {c['eval_set']} | {c['diff']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | "
            f"{c['p_mcnemar']:.2g} | {c['p_holm']:.2g} | {c['n_seeds']} | {c['n_pairs']} | {c['verdict_holm']} |"
        )
    return "\n".join(lines) + "\n"


def plot_alpha_curve(curve: dict, sets: list[str], level: float, path: Path, chosen: dict | None = None) -> None:
    """Accuracy against alpha (log scale) per GRM variant (`alpha_curve`'s shape), with the t-interval over seeds;
    vanilla as a band. One panel per training size (rows) and eval set (columns); `chosen` (variant -> size -> alpha)
    rings the alpha each variant's headline keeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(curve[BASELINE])
    fig, axes = plt.subplots(len(sizes), len(sets), figsize=(4.2 * len(sets), 3.2 * len(sizes)), squeeze=False)
    for r, size in enumerate(sizes):
        for k, name in enumerate(sets):
            ax = axes[r, k]
            [base] = curve[BASELINE][size][name]
            ax.axhline(base["mean"], color="black", lw=1, label="vanilla")
            if base["ci_low"] is not None:
                ax.axhspan(base["ci_low"], base["ci_high"], color="grey", alpha=0.2)
            for j, variant in enumerate(v for v in GRM_VARIANTS if v in curve):
                points = curve[variant][size][name]
                x = [p["alpha"] for p in points]
                y = [p["mean"] for p in points]
                low = [p["mean"] - p["ci_low"] if p["ci_low"] is not None else 0.0 for p in points]
                high = [p["ci_high"] - p["mean"] if p["ci_high"] is not None else 0.0 for p in points]
                ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, color=f"C{j}", label=variant)
                if chosen is not None and variant in chosen:
                    pick = next(p for p in points if p["alpha"] == chosen[variant][size])
                    ax.scatter([pick["alpha"]], [pick["mean"]], s=120, facecolors="none", edgecolors=f"C{j}")
            if any(p["alpha"] for v in GRM_VARIANTS if v in curve for p in curve[v][size][name]):
                ax.set_xscale("log")
            means = [base["mean"], *(p["mean"] for v in GRM_VARIANTS if v in curve for p in curve[v][size][name])]
            ax.set_ylim(max(0.0, min(means) - 0.1), min(1.02, max(means) + 0.1))  # few seeds: t-intervals run far past
            ax.set_title(f"{name}, size {size}", fontsize=9)
            ax.set_xlabel("alpha")
            ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    ringed = ", ring: the alpha chosen on ID validation" if chosen is not None else ""
    fig.suptitle(f"accuracy vs alpha (mean over seeds, {level * 100:g}% t-interval{ringed})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_id_vs_ood(results: dict, path: Path) -> None:
    """Each variant / alpha / size's mean accuracy on the select-on set (ID) against each other eval set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [n for n in results["eval_sets"] if n != results["select_on"]] or [results["select_on"]]
    fig, axes = plt.subplots(1, len(others), figsize=(4.5 * len(others), 4.2), squeeze=False)
    means: dict[tuple, dict] = {}
    for row in results["table"]:
        means.setdefault((row["variant"], row["alpha"], row["size"]), {})[row["eval_set"]] = row["mean"]
    variants = list(dict.fromkeys(v for v, _, _ in means))
    for ax, name in zip(axes[0], others, strict=True):
        for (variant, alpha, size), by_set in means.items():
            colour = f"C{variants.index(variant) % 10}"
            ax.scatter(by_set[results["select_on"]], by_set[name], color=colour, s=25)
            label = ("" if alpha is None else f"{alpha:g}") + ("" if size is None else f" n{size}")
            if label:
                ax.annotate(label.strip(), (by_set[results["select_on"]], by_set[name]), fontsize=6)
        for j, variant in enumerate(variants):
            ax.scatter([], [], color=f"C{j % 10}", label=variant)
        ax.set_xlabel(f"{results['select_on']} accuracy (ID, model selection)")
        ax.set_ylabel(f"{name} accuracy")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
