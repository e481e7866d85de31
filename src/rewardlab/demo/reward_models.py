"""Steps 2-3 of the demo: every reward model (variants x sizes x seeds, the GRM variants at every alpha of the demo's
curve; each kept at its best ID validation accuracy), trained in parallel processes with `rewardlab study`'s runner, and
the world check (`rewardlab.world_check`) on the vanilla ones. The headline row of a GRM variant is its alpha chosen on
val_id; the alpha curve is an ablation beside it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from rewardlab.config import DEFAULT_ALPHA
from rewardlab.demo.config import FROZEN, OFFICIAL_PAIRING, SMALL_MODEL_THREADS, VARIANTS, DemoConfig
from rewardlab.demo.report import world_check_findings
from rewardlab.demo.stats import mean_std
from rewardlab.progress import progress, write
from rewardlab.study import GRM_VARIANTS

# The demo never serves its reward models with --normalize: a small sample records their statistics all the same.
DEMO_NORM_SAMPLES = 512


def rm_run_name(name: str, size: str, seed: int, alpha: float | None = None) -> str:
    """The directory of one demo reward model under out/rm: `<variant>[-a<alpha>]-<size>-s<seed>` (alpha: GRM cells of
    the alpha curve only)."""
    return f"{name}{'' if alpha is None else f'-a{alpha:g}'}-{size}-s{seed}"


@dataclass(frozen=True)
class RMCell:
    """One reward model of the demo: a variant (a VARIANTS row or an official-pairing row) at a size, seed and, for a GRM
    variant, an alpha of the curve."""

    name: str
    alpha: float | None
    size: str
    seed: int

    @property
    def dir_name(self) -> str:
        return rm_run_name(self.name, self.size, self.seed, self.alpha)


def demo_cells(cfg: DemoConfig) -> list[RMCell]:
    """Every reward model of the demo, vanilla first (the world check needs them), then each variant at every size and
    seed; the GRM variants at every alpha of `cfg.alphas` (the alpha curve; the headline keeps the alpha chosen on
    val_id); the official pairing (extra rows, at train-rm's default alpha)."""
    rows = dict(VARIANTS) | (dict(OFFICIAL_PAIRING) if cfg.official_pairing else {})
    cells = []
    for name in rows:
        for size in cfg.sizes:
            alphas: tuple[float | None, ...] = cfg.alphas_at(size) if name in GRM_VARIANTS else (None,)
            cells += [RMCell(name, a, size, seed) for a in alphas for seed in range(cfg.seeds)]
    return cells


def rm_run_config(cfg: DemoConfig, policy_path: Path, train_path: Path, n_pairs: int, run_dir: Path, cell: RMCell):
    """One reward-model run of the demo: evaluated on val_id every `rm_eval_pairs` pairs (at most once an epoch), stopped
    `rm_patience` evaluations after its best, kept at its best (its length is chosen by ID validation only; test sets are
    scored once, on the kept weights)."""
    from rewardlab.train_rm import RewardTrainingConfig

    steps_per_epoch = math.ceil(n_pairs / cfg.rm_batch_size)
    eval_steps = max(1, min(steps_per_epoch, round(cfg.rm_eval_pairs / cfg.rm_batch_size)))
    settings = (dict(VARIANTS) | OFFICIAL_PAIRING)[cell.name] | ({} if cell.alpha is None else {"alpha": cell.alpha})
    return RewardTrainingConfig(
        model=str(policy_path), train_data=str(train_path), output_dir=str(run_dir),
        learning_rate=cfg.rm_lr, per_device_train_batch_size=cfg.rm_batch_size, num_train_epochs=cfg.rm_epochs,
        seed=cell.seed, logging_steps=10, progress=False, max_length=256,
        eval_steps=eval_steps, select_best_on="val", early_stopping_patience=cfg.rm_patience, report_to=cfg.report_to,
        norm_samples=DEMO_NORM_SAMPLES, **settings,
    )  # fmt: skip


@dataclass
class RewardModelRuns:
    """The demo's reward models (under out/rm/`rm_run_name`), trained in `cfg.workers` processes, and what each
    reported: accuracy per eval set, the epoch it kept and how long it ran."""

    cfg: DemoConfig
    policy_path: Path
    paths: dict[str, Path]
    out: Path
    train_sets: dict  # size -> training pairs
    eval_sets: dict  # "val" (val_id), "id" (test_id), "ood" (test_ood)
    results: dict = field(default_factory=dict)  # RMCell -> rewardlab.study.run_cell's result

    def train(self, cells: list[RMCell]) -> None:
        from rewardlab.study import run_cell
        from rewardlab.workers import run_jobs

        jobs = []
        for cell in cells:
            n_pairs = len(self.train_sets[cell.size].examples)
            run_dir = self.out / "rm" / cell.dir_name
            run_cfg = rm_run_config(self.cfg, self.policy_path, self.paths[f"train_{cell.size}"], n_pairs, run_dir, cell)
            jobs.append((cell, run_cfg, {"train": self.train_sets[cell.size], "eval": self.eval_sets}))
        bar = progress(total=len(jobs), desc="reward models", enabled=self.cfg.progress)

        def done(cell: RMCell, result: dict) -> None:
            self.results[cell] = result
            bar.update(1)

        run_jobs(jobs, self.cfg.workers, done, run_cell)
        bar.close()

    def seeds(self, name: str, size: str, alpha: float | None = None) -> list[RMCell]:
        return [RMCell(name, alpha, size, seed) for seed in range(self.cfg.seeds)]

    def accuracy(self, name: str, size: str, alpha: float | None = None) -> dict:
        """split -> mean / std / values over seeds (in seed order)."""
        cells = self.seeds(name, size, alpha)
        return {split: mean_std([self.results[c]["accuracy"][split] for c in cells]) for split in ("id", "ood", "val")}

    def training(self, name: str, size: str, alpha: float | None = None) -> list[dict]:
        """One {seed, epoch_kept, epochs_run, val_history} a seed."""
        epoch_steps = math.ceil(len(self.train_sets[size].examples) / self.cfg.rm_batch_size)
        rows = []
        for cell in self.seeds(name, size, alpha):
            selection = self.results[cell]["selection"]
            rows.append(
                {"seed": cell.seed, "epoch_kept": selection["step"] / epoch_steps,
                 "epochs_run": self.results[cell]["steps"] / epoch_steps, "val_history": selection["history"]}
            )  # fmt: skip
        return rows


def choose_alpha(val_means: dict[float, float], preferred: float) -> float:
    """The alpha with the best mean val_id accuracy over seeds (model selection on ID validation only); among ties
    `preferred` (train-rm's default), else the smallest."""
    best = max(val_means.values())
    tied = [alpha for alpha, value in val_means.items() if value == best]
    return preferred if preferred in tied else min(tied)


def alpha_results(cfg: DemoConfig, runs: RewardModelRuns) -> tuple[dict, dict]:
    """(alpha_curve, alpha_selection). alpha_curve: `rewardlab study`'s shape, variant -> size -> eval set ->
    [{alpha, mean, ci_low, ci_high}] in alpha order, vanilla as the reference (alpha None); alpha_selection: GRM variant
    -> size -> {alpha, val_means, rule}."""
    from rewardlab.paired_stats import LEVEL
    from rewardlab.study import alpha_curve, group_label, over_seeds

    rows = []
    for name in ("vanilla", *GRM_VARIANTS):
        for size in cfg.sizes:
            for alpha in cfg.alphas_at(size) if name in GRM_VARIANTS else (None,):
                for split, stat in runs.accuracy(name, size, alpha).items():
                    rows.append(group_label(name, alpha, size) | {"eval_set": split} | over_seeds(stat["values"], LEVEL))
    selection: dict = {}
    preferred = DEFAULT_ALPHA
    for name in GRM_VARIANTS:
        for size in cfg.sizes:
            val = {alpha: runs.accuracy(name, size, alpha)["val"]["mean"] for alpha in cfg.alphas_at(size)}
            rule = (
                f"best mean val_id accuracy over seeds; ties to {preferred:g} (train-rm's default), else the smallest alpha"
                if len(val) > 1
                else "no curve at this size: train-rm's default alpha"
            )
            selection.setdefault(name, {})[size] = {
                "alpha": choose_alpha(val, preferred),
                "val_means": [[alpha, value] for alpha, value in val.items()],
                "rule": rule,
            }
    return alpha_curve(rows), selection


def train_reward_models(cfg: DemoConfig, policy_path: Path, paths: dict[str, Path], out: Path) -> dict:
    """Every reward model of the demo (`demo_cells`, in `cfg.workers` processes), then the world check on the vanilla
    ones; each GRM variant's headline row at the alpha chosen on val_id, the whole alpha curve beside it.

    Returns {"world_check", "reward_models" (accuracy table; the frozen-backbone row comes from the world check's probe),
    "reward_model_training" (epochs kept and run per model), "ood_split", "comparisons", "comparisons_family",
    "alpha_curve", "alpha_selection", "reward_model_dirs"}."""
    return reward_model_results(train_every_reward_model(cfg, policy_path, paths, out))


def train_every_reward_model(cfg: DemoConfig, policy_path: Path, paths: dict[str, Path], out: Path) -> RewardModelRuns:
    """Step 2: train every cell of `demo_cells` (the largest training sets first, so that no long run is left alone at the
    end) into out/rm."""
    from rewardlab.data.loading import load_preferences
    from rewardlab.tasks.policy import torch_threads

    eval_sets = {"val": load_preferences(str(paths["val_id"])), "id": load_preferences(str(paths["test_id"])),
                 "ood": load_preferences(str(paths["test_ood"]))}  # fmt: skip
    train_sets = {size: load_preferences(str(paths[f"train_{size}"])) for size in cfg.sizes}
    runs = RewardModelRuns(cfg, policy_path, paths, out, train_sets, eval_sets)
    with torch_threads(SMALL_MODEL_THREADS):
        runs.train(sorted(demo_cells(cfg), key=lambda cell: -cfg.sizes[cell.size]))
    return runs


def reward_model_results(runs: RewardModelRuns) -> dict:
    """Step 3 on the trained cells: the alpha choice, the world check, the accuracy table, the OOD split and the paired
    comparisons (`train_reward_models`' dict)."""
    from rewardlab.tasks.policy import torch_threads

    cfg, out, eval_sets = runs.cfg, runs.out, runs.eval_sets
    curve, selection = alpha_results(cfg, runs)
    chosen = {name: {size: selection[name][size]["alpha"] for size in cfg.sizes} for name in GRM_VARIANTS}

    def headline(name: str, size: str) -> float | None:
        return chosen[name][size] if name in chosen else None

    rows = (*VARIANTS, *(OFFICIAL_PAIRING if cfg.official_pairing else ()))
    dirs = {name: {size: [out / "rm" / c.dir_name for c in runs.seeds(name, size, headline(name, size))]
                   for size in cfg.sizes} for name in rows}  # fmt: skip
    with torch_threads(SMALL_MODEL_THREADS) as threads:
        world_check = measure_world_check(
            cfg,
            runs.policy_path,
            runs.train_sets,
            eval_sets,
            out,
            {size: {"ood": runs.accuracy("vanilla", size)["ood"]["values"]} for size in cfg.sizes},
            vanilla_splits={size: [read_ood_split(d, eval_sets["ood"]) for d in dirs["vanilla"][size]] for size in cfg.sizes},
        )
    world_check["threads"] = threads
    for line in world_check_findings(world_check):
        write(f"world check: {line}")
    for line in world_check_findings(world_check["neutral"]):
        write(f"world check, cue-neutral OOD pairs: {line}")
    summary = {name: {size: runs.accuracy(name, size, headline(name, size)) for size in cfg.sizes} for name in dirs}
    for name in chosen:
        for size in cfg.sizes:
            summary[name][size]["alpha"] = chosen[name][size]
    summary[FROZEN] = {size: world_check["by_size"][size]["frozen_backbone"] for size in cfg.sizes}
    ordered = {name: summary[name] for name in (*VARIANTS, FROZEN, *(OFFICIAL_PAIRING if cfg.official_pairing else ()))}
    splits = {name: {size: [read_ood_split(d, eval_sets["ood"]) for d in sizes[size]] for size in sizes}
              for name, sizes in dirs.items()}  # fmt: skip
    training = {name: {size: runs.training(name, size, headline(name, size)) for size in cfg.sizes} for name in dirs}
    comparisons, family = reward_model_comparisons(cfg, dirs)
    curve_comparisons, curve_family = alpha_curve_comparisons(cfg, runs)
    return {"world_check": world_check, "reward_models": ordered, "reward_model_training": training,
            "ood_split": ood_split_results(splits, world_check, ordered), "comparisons": comparisons,
            "comparisons_family": family, "alpha_curve": curve, "alpha_selection": selection,
            "alpha_comparisons": curve_comparisons, "alpha_comparisons_family": curve_family,
            "reward_model_dirs": {name: {size: [str(d.relative_to(out)) for d in ds] for size, ds in sizes.items()}
                                  for name, sizes in dirs.items()}}  # fmt: skip


def reward_model_comparisons(cfg: DemoConfig, dirs: dict) -> tuple[list[dict], dict]:
    """Every variant (GRM ones at their chosen alpha) against vanilla at each size, on test_id and test_ood, paired by
    seed: `rewardlab compare`'s statistics on the runs' scores.jsonl (train-rm's own), Holm's adjustment across the
    family (issue 21). `dirs`: name -> size -> the seeds' run directories."""
    from rewardlab.comparison import compare_family, runs_side

    def side(name: str, size: str) -> tuple:
        return runs_side(name, dirs[name][size])

    cases = []
    for size in cfg.sizes:
        base, base_tables = side("vanilla", size)
        for name in VARIANTS:
            if name != "vanilla":
                variant, tables = side(name, size)
                cases += [({"variant": name, "size": size}, variant, tables, base, base_tables, split) for split in ("id", "ood")]
    return compare_family(cases)


def alpha_curve_comparisons(cfg: DemoConfig, runs: RewardModelRuns) -> tuple[list[dict], dict]:
    """The alpha curve read with statistics (an ablation, its own family): every GRM variant at every alpha of the curve
    against vanilla at that size, on test_id and test_ood, paired by seed, Holm's adjustment across these comparisons."""
    from rewardlab.comparison import compare_family, runs_side

    def side(name: str, size: str, alpha: float | None) -> tuple:
        label = name if alpha is None else f"{name}-a{alpha:g}"
        return runs_side(label, [runs.out / "rm" / c.dir_name for c in runs.seeds(name, size, alpha)])

    cases = []
    for size in cfg.sizes:
        if len(cfg.alphas_at(size)) < 2:
            continue  # no curve at this size
        base, base_tables = side("vanilla", size, None)
        for name in GRM_VARIANTS:
            for alpha in cfg.alphas_at(size):
                variant, tables = side(name, size, alpha)
                label = {"variant": name, "alpha": alpha, "size": size}
                cases += [(label, variant, tables, base, base_tables, split) for split in ("id", "ood")]
    return compare_family(cases)


def measure_world_check(
    cfg: DemoConfig,
    policy_path: Path,
    train_sets: dict,
    eval_sets: dict,
    out: Path,
    vanilla_cells: dict,
    vanilla_splits: dict | None = None,
) -> dict:
    """The world check (`rewardlab.world_check`) per training size: a probe on the frozen base model's features at the
    reward-read position and on every vanilla model's, trained on that size's ID pairs (l2 chosen on val_id), scored
    on test_ood; the base model's likelihood as a judge; the vanilla models' own OOD accuracy. The headline figures are
    those of the largest size. With `vanilla_splits` (size -> the vanilla models' OOD split tables, one a seed), the same
    check on the cue-neutral OOD pairs (`neutral`) and every probe's OOD split (`ood_split`)."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.ood_split import pair_cells, split_accuracy
    from rewardlab.world_check import pair_accuracy, pair_features, train_probe, world_check_conditions

    t0 = time.perf_counter()
    base = build_reward_model(str(policy_path))  # features only: the (random) head is not used
    splits = {"val": eval_sets["val"], "id": eval_sets["id"], "ood": eval_sets["ood"]}
    base_features = {name: pair_features(base, ds.examples) for name, ds in splits.items()}
    ood_cells = pair_cells(eval_sets["ood"].examples)
    probe_splits: dict = {}
    judge = {
        split: pair_accuracy(base_features[split].logp_chosen, base_features[split].logp_rejected) for split in ("id", "ood")
    }
    by_size: dict = {}
    for size, train in train_sets.items():
        probe = train_probe(pair_features(base, train.examples), base_features["val"])
        after, after_l2, after_edge, after_splits = [], [], [], []
        for seed in range(cfg.seeds):
            vanilla = load_reward_model(out / "rm" / rm_run_name("vanilla", size, seed))
            features = {name: pair_features(vanilla, ds.examples) for name, ds in (("train", train), *splits.items())}
            vanilla_probe = train_probe(features["train"], features["val"])
            after.append(vanilla_probe.accuracy(features["ood"]))
            after_l2.append(vanilla_probe.l2)
            after_edge.append(vanilla_probe.l2_on_edge)
            after_splits.append(probe_split(vanilla_probe, features["ood"], ood_cells))
        base_ood = probe.accuracy(base_features["ood"])
        probe_splits[size] = {"base": probe_split(probe, base_features["ood"], ood_cells), "after_vanilla": after_splits}
        vanilla_ood = vanilla_cells[size]["ood"]
        by_size[size] = {
            "probe_ood_base": base_ood,
            "probe_ood_after_vanilla": mean_std(after),
            "vanilla_ood": mean_std(vanilla_ood),
            "conditions": world_check_conditions(base_ood, after, vanilla_ood),
            "probe_l2": probe.l2,
            "probe_val_path": [[l2, accuracy] for l2, accuracy in probe.val_path.items()],
            "probe_after_vanilla_l2": after_l2,
            "probe_l2_on_edge": probe.l2_on_edge,
            "probe_after_vanilla_l2_on_edge": after_edge,
            "frozen_backbone": {split: mean_std([probe.accuracy(base_features[split])]) for split in ("id", "ood", "val")},
        }
    large = max(cfg.sizes, key=cfg.sizes.get)
    headline = by_size[large]
    ood = base_features["ood"]
    judge_split = split_accuracy(ood_cells, ood.logp_chosen.tolist(), ood.logp_rejected.tolist())
    check = {
        "train_size": large,
        "probe_ood_base": headline["probe_ood_base"],
        "probe_ood_after_vanilla": headline["probe_ood_after_vanilla"]["mean"],
        "likelihood_judge_ood": judge["ood"],
        "vanilla_ood": headline["vanilla_ood"]["mean"],
        "likelihood_judge_id": judge["id"],
        "conditions": headline["conditions"],
        "both_conditions_hold": all(c["holds"] for c in headline["conditions"].values()),
        "by_size": by_size,
        "probe_l2_on_edge": headline["probe_l2_on_edge"],
        "ood_split": {"probes": probe_splits, "likelihood_judge": judge_split},
    }
    if vanilla_splits is not None:
        check["neutral"] = neutral_world_check(check, vanilla_splits)
    check["seconds"] = time.perf_counter() - t0
    return check


# ---------------------------------------------------------------- OOD taken apart (issue 21, part 4)


def read_ood_split(run_dir: Path, ood) -> dict:
    """The OOD split table of a trained reward model, from the per-pair scores its final evaluation wrote (scores.jsonl,
    eval set "ood"): bookkeeping, nothing is scored again."""
    import json

    from rewardlab.ood_split import pair_cells, split_from_score_rows
    from rewardlab.rm_trainer.outputs import SCORES_NAME

    rows = [json.loads(line) for line in (run_dir / SCORES_NAME).read_text(encoding="utf-8").splitlines() if line]
    return split_from_score_rows(pair_cells(ood.examples), rows, "ood")


def probe_split(probe, features, cells: list) -> dict:
    """A world-check probe's OOD split table, from its scores on the OOD pairs' features."""
    from rewardlab.ood_split import split_accuracy

    return split_accuracy(cells, probe.scores(features.chosen).tolist(), probe.scores(features.rejected).tolist())


def neutral_accuracy(table: dict) -> float:
    """Accuracy on the cue-neutral pairs (both responses carry the cue, or neither), every kind together."""
    return table["neutral"]["all"]["accuracy"]


def neutral_world_check(check: dict, vanilla_splits: dict) -> dict:
    """The world check's figures and conditions restricted to the cue-neutral OOD pairs, in the shape of the check itself
    (so `world_check_findings` words it): where the shortcut says nothing, is vanilla behind the base probe?"""
    from rewardlab.world_check import world_check_conditions

    probes, by_size = check["ood_split"]["probes"], {}
    for size, split in probes.items():
        base = neutral_accuracy(split["base"])
        after = [neutral_accuracy(t) for t in split["after_vanilla"]]
        vanilla = [neutral_accuracy(t) for t in vanilla_splits[size]]
        by_size[size] = {
            "probe_ood_base": base,
            "probe_ood_after_vanilla": mean_std(after),
            "vanilla_ood": mean_std(vanilla),
            "conditions": world_check_conditions(base, after, vanilla),
        }
    headline = by_size[check["train_size"]]
    return {
        "train_size": check["train_size"],
        "n": probes[check["train_size"]]["base"]["neutral"]["all"]["n"],
        "probe_ood_base": headline["probe_ood_base"],
        "probe_ood_after_vanilla": headline["probe_ood_after_vanilla"]["mean"],
        "likelihood_judge_ood": neutral_accuracy(check["ood_split"]["likelihood_judge"]),
        "vanilla_ood": headline["vanilla_ood"]["mean"],
        "conditions": headline["conditions"],
        "both_conditions_hold": all(c["holds"] for c in headline["conditions"].values()),
        "by_size": by_size,
    }


PROBE_AFTER_VANILLA = "probe-after-vanilla"
LIKELIHOOD_JUDGE = "likelihood-judge"


def ood_split_results(splits: dict, world_check: dict, table: dict) -> dict:
    """results.json's `ood_split`: model -> size -> {"mean", "per_seed"} split tables of test_ood, for every reward model
    in the accuracy table's order, the world check's probes (the frozen backbone is its base probe; the probe on each
    vanilla model's features) and the base model's likelihood as a judge (untrained: the same table at every size)."""
    from rewardlab.ood_split import split_summary

    probes = world_check["ood_split"]["probes"]
    models = {name: splits[name] for name in table if name in splits}
    models[FROZEN] = {size: [p["base"]] for size, p in probes.items()}
    models[PROBE_AFTER_VANILLA] = {size: p["after_vanilla"] for size, p in probes.items()}
    models[LIKELIHOOD_JUDGE] = {size: [world_check["ood_split"]["likelihood_judge"]] for size in probes}
    ordered = {name: models[name] for name in (*table, PROBE_AFTER_VANILLA, LIKELIHOOD_JUDGE) if name in models}
    return {name: {size: split_summary(tables) for size, tables in sizes.items()} for name, sizes in ordered.items()}
