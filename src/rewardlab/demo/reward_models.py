"""Steps 2-3 of the demo: every reward model (variants x sizes x seeds, each kept at its best ID validation accuracy)
and the world check (`rewardlab.world_check`), measured as soon as the vanilla models exist, before any GRM model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from rewardlab.demo.config import FROZEN, OFFICIAL_PAIRING, SMALL_MODEL_THREADS, VARIANTS, DemoConfig
from rewardlab.demo.report import world_check_findings
from rewardlab.demo.stats import mean_std
from rewardlab.progress import progress, write

# The demo never serves its reward models with --normalize: a small sample records their statistics all the same.
DEMO_NORM_SAMPLES = 512


def rm_run_config(cfg: DemoConfig, policy_path: Path, train_path: Path, n_pairs: int, run_dir: Path, seed: int, settings: dict):
    """One reward-model run of the demo: evaluated on val_id every `rm_eval_pairs` pairs (at most once an epoch), stopped
    `rm_patience` evaluations after its best, kept at its best (its length is chosen by ID validation only; test sets are
    scored once, on the kept weights)."""
    from rewardlab.train_rm import RewardTrainingConfig

    steps_per_epoch = math.ceil(n_pairs / cfg.rm_batch_size)
    eval_steps = max(1, min(steps_per_epoch, round(cfg.rm_eval_pairs / cfg.rm_batch_size)))
    return RewardTrainingConfig(
        model=str(policy_path), train_data=str(train_path), output_dir=str(run_dir),
        learning_rate=cfg.rm_lr, per_device_train_batch_size=cfg.rm_batch_size, num_train_epochs=cfg.rm_epochs,
        alpha=cfg.alpha, seed=seed, logging_steps=10, progress=False, max_length=256,
        eval_steps=eval_steps, select_best_on="val", early_stopping_patience=cfg.rm_patience, report_to=cfg.report_to,
        norm_samples=DEMO_NORM_SAMPLES, **settings,
    )  # fmt: skip


@dataclass
class RewardModelRuns:
    """Trains the demo's reward models one at a time (under out/rm/<name>-<size>-s<seed>) and collects, per variant and
    size, each seed's accuracies and the epochs it kept and ran."""

    cfg: DemoConfig
    policy_path: Path
    paths: dict[str, Path]
    out: Path
    train_sets: dict  # size -> training pairs
    eval_sets: dict  # "val" (val_id), "id" (test_id), "ood" (test_ood)
    accuracy: dict = field(default_factory=dict)  # name -> size -> {"id", "ood", "val"}: one accuracy per seed
    ood_split: dict = field(default_factory=dict)  # name -> size -> one `rewardlab.ood_split` table of test_ood a seed
    training: dict = field(default_factory=dict)  # name -> size -> one {seed, epoch_kept, epochs_run, val_history} a seed

    def train(self, name: str, settings: dict, size: str, seed: int) -> None:
        from rewardlab.train_rm import train_reward_model

        n_pairs = len(self.train_sets[size].examples)
        run_dir = self.out / "rm" / f"{name}-{size}-s{seed}"
        run_cfg = rm_run_config(self.cfg, self.policy_path, self.paths[f"train_{size}"], n_pairs, run_dir, seed, settings)
        metrics = train_reward_model(run_cfg, {"train": self.train_sets[size], "eval": self.eval_sets})
        cell = self.accuracy.setdefault(name, {}).setdefault(size, {"id": [], "ood": [], "val": []})
        for split, values in cell.items():
            values.append(metrics["eval"][split]["accuracy"])
        self.ood_split.setdefault(name, {}).setdefault(size, []).append(read_ood_split(run_dir, self.eval_sets["ood"]))
        epoch_steps = math.ceil(n_pairs / self.cfg.rm_batch_size)
        selection = metrics["train"]["selection"]
        self.training.setdefault(name, {}).setdefault(size, []).append(
            {"seed": seed, "epoch_kept": selection["step"] / epoch_steps, "epochs_run": metrics["train"]["steps"] / epoch_steps,
             "val_history": selection["history"]}
        )  # fmt: skip

    def summary(self) -> dict:
        """name -> size -> split -> mean / std / values over seeds."""
        return {
            name: {size: {split: mean_std(values) for split, values in cell.items()} for size, cell in sizes.items()}
            for name, sizes in self.accuracy.items()
        }


def train_reward_models(cfg: DemoConfig, policy_path: Path, paths: dict[str, Path], out: Path) -> dict:
    """Every reward model of the demo and the world check: vanilla first (all sizes and seeds), then the world check
    (printed as soon as it is measured), then the other variants and the official pairing.

    Returns {"world_check", "reward_models" (accuracy table; the frozen-backbone row comes from the world check's probe),
    "reward_model_training" (epochs kept and run per model)}."""
    from rewardlab.data.loading import load_preferences
    from rewardlab.tasks.policy import torch_threads

    eval_sets = {"val": load_preferences(str(paths["val_id"])), "id": load_preferences(str(paths["test_id"])),
                 "ood": load_preferences(str(paths["test_ood"]))}  # fmt: skip
    train_sets = {size: load_preferences(str(paths[f"train_{size}"])) for size in cfg.sizes}
    rows = dict(VARIANTS) | (dict(OFFICIAL_PAIRING) if cfg.official_pairing else {})
    runs = RewardModelRuns(cfg, policy_path, paths, out, train_sets, eval_sets)
    bar = progress(total=len(rows) * len(cfg.sizes) * cfg.seeds, desc="reward models", enabled=cfg.progress)

    def train_every_size_and_seed(name: str) -> None:
        for size in cfg.sizes:
            for seed in range(cfg.seeds):
                runs.train(name, rows[name], size, seed)
                bar.update(1)

    with torch_threads(SMALL_MODEL_THREADS) as threads:
        train_every_size_and_seed("vanilla")
        world_check = measure_world_check(
            cfg, policy_path, train_sets, eval_sets, out, runs.accuracy["vanilla"], vanilla_splits=runs.ood_split["vanilla"]
        )
        for line in world_check_findings(world_check):
            write(f"world check: {line}")
        for line in world_check_findings(world_check["neutral"]):
            write(f"world check, cue-neutral OOD pairs: {line}")
        for name in rows:
            if name != "vanilla":
                train_every_size_and_seed(name)
        world_check["threads"] = threads
    bar.close()
    summary = runs.summary()
    summary[FROZEN] = {size: world_check["by_size"][size]["frozen_backbone"] for size in cfg.sizes}
    ordered = {name: summary[name] for name in (*VARIANTS, FROZEN, *(OFFICIAL_PAIRING if cfg.official_pairing else ()))}
    comparisons, family = reward_model_comparisons(cfg, out)
    return {"world_check": world_check, "reward_models": ordered, "reward_model_training": runs.training,
            "ood_split": ood_split_results(runs.ood_split, world_check, ordered), "comparisons": comparisons,
            "comparisons_family": family}  # fmt: skip


def reward_model_comparisons(cfg: DemoConfig, out: Path) -> tuple[list[dict], dict]:
    """Every variant against vanilla at each size, on test_id and test_ood, paired by seed: `rewardlab compare`'s
    statistics on the runs' scores.jsonl (train-rm's own), Holm's adjustment across the family (issue 21)."""
    from rewardlab.comparison import Side, compare_family, read_scores
    from rewardlab.rm_trainer.outputs import SCORES_NAME

    def side(name: str, size: str) -> tuple[Side, list]:
        paths = tuple(str(out / "rm" / f"{name}-{size}-s{seed}" / SCORES_NAME) for seed in range(cfg.seeds))
        return Side(name, paths), [read_scores(path) for path in paths]

    cases = []
    for size in cfg.sizes:
        base, base_tables = side("vanilla", size)
        for name in VARIANTS:
            if name != "vanilla":
                variant, tables = side(name, size)
                cases += [({"variant": name, "size": size}, variant, tables, base, base_tables, split) for split in ("id", "ood")]
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
            vanilla = load_reward_model(out / "rm" / f"vanilla-{size}-s{seed}")
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
