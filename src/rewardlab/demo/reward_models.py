"""Steps 2-3 of the demo: every reward model (variants x sizes x seeds, each kept at its best ID validation accuracy)
and the world check (`rewardlab.world_check`), measured as soon as the vanilla models exist, before any GRM model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from rewardlab.demo.config import FROZEN, OFFICIAL_PAIRING, SMALL_MODEL_THREADS, VARIANTS, DemoConfig
from rewardlab.demo.report import world_check_findings
from rewardlab.demo.stats import mean_std


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
        **settings,
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
    bar = tqdm(total=len(rows) * len(cfg.sizes) * cfg.seeds, desc="reward models", disable=not cfg.progress)

    def train_every_size_and_seed(name: str) -> None:
        for size in cfg.sizes:
            for seed in range(cfg.seeds):
                runs.train(name, rows[name], size, seed)
                bar.update(1)

    with torch_threads(SMALL_MODEL_THREADS) as threads:
        train_every_size_and_seed("vanilla")
        world_check = measure_world_check(cfg, policy_path, train_sets, eval_sets, out, runs.accuracy["vanilla"])
        for line in world_check_findings(world_check):
            tqdm.write(f"world check: {line}")
        for name in rows:
            if name != "vanilla":
                train_every_size_and_seed(name)
        world_check["threads"] = threads
    bar.close()
    summary = runs.summary()
    summary[FROZEN] = {size: world_check["by_size"][size]["frozen_backbone"] for size in cfg.sizes}
    ordered = {name: summary[name] for name in (*VARIANTS, FROZEN, *(OFFICIAL_PAIRING if cfg.official_pairing else ()))}
    return {"world_check": world_check, "reward_models": ordered, "reward_model_training": runs.training}


def measure_world_check(
    cfg: DemoConfig, policy_path: Path, train_sets: dict, eval_sets: dict, out: Path, vanilla_cells: dict
) -> dict:
    """The world check (`rewardlab.world_check`) per training size: a probe on the frozen base model's features at the
    reward-read position and on every vanilla model's, trained on that size's ID pairs (l2 chosen on val_id), scored
    on test_ood; the base model's likelihood as a judge; the vanilla models' own OOD accuracy. The headline figures are
    those of the largest size."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.modeling.reward_model import build_reward_model
    from rewardlab.world_check import pair_accuracy, pair_features, train_probe, world_check_conditions

    t0 = time.perf_counter()
    base = build_reward_model(str(policy_path))  # features only: the (random) head is not used
    splits = {"val": eval_sets["val"], "id": eval_sets["id"], "ood": eval_sets["ood"]}
    base_features = {name: pair_features(base, ds.examples) for name, ds in splits.items()}
    judge = {
        split: pair_accuracy(base_features[split].logp_chosen, base_features[split].logp_rejected) for split in ("id", "ood")
    }
    by_size: dict = {}
    for size, train in train_sets.items():
        probe = train_probe(pair_features(base, train.examples), base_features["val"])
        after, after_l2 = [], []
        for seed in range(cfg.seeds):
            vanilla = load_reward_model(out / "rm" / f"vanilla-{size}-s{seed}")
            features = {name: pair_features(vanilla, ds.examples) for name, ds in (("train", train), *splits.items())}
            vanilla_probe = train_probe(features["train"], features["val"])
            after.append(vanilla_probe.accuracy(features["ood"]))
            after_l2.append(vanilla_probe.l2)
        base_ood = probe.accuracy(base_features["ood"])
        vanilla_ood = vanilla_cells[size]["ood"]
        by_size[size] = {
            "probe_ood_base": base_ood,
            "probe_ood_after_vanilla": mean_std(after),
            "vanilla_ood": mean_std(vanilla_ood),
            "conditions": world_check_conditions(base_ood, after, vanilla_ood),
            "probe_l2": probe.l2,
            "probe_val_path": [[l2, accuracy] for l2, accuracy in probe.val_path.items()],
            "probe_after_vanilla_l2": after_l2,
            "frozen_backbone": {split: mean_std([probe.accuracy(base_features[split])]) for split in ("id", "ood", "val")},
        }
    large = max(cfg.sizes, key=cfg.sizes.get)
    headline = by_size[large]
    return {
        "train_size": large,
        "probe_ood_base": headline["probe_ood_base"],
        "probe_ood_after_vanilla": headline["probe_ood_after_vanilla"]["mean"],
        "likelihood_judge_ood": judge["ood"],
        "vanilla_ood": headline["vanilla_ood"]["mean"],
        "likelihood_judge_id": judge["id"],
        "conditions": headline["conditions"],
        "both_conditions_hold": all(c["holds"] for c in headline["conditions"].values()),
        "by_size": by_size,
        "seconds": time.perf_counter() - t0,
    }
