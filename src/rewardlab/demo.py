"""`rewardlab demo`: the whole pipeline on the built-in world, offline, with the same code paths as real models.

    1. base policy (cached) -> preference data labelled by the gold reward (train small/large, val_id, test_id, test_ood),
       on world version 4 by default (`--world 3` for the previous one);
    2. reward models initialised from the base policy: vanilla BT, margin, label smoothing, GRM sft / dpo / dpo-noref,
       at two data sizes, over seeds, all with the same (linear) head, each trained until its ID validation accuracy
       stops improving and kept at its best (steps chosen by ID validation only); the frozen-backbone baseline (a linear
       head on the base model's features, fit to convergence); the official code's pairing as an extra, labelled row
       (GRM-sft with the MLP head vs BT with a linear head without dropout);
       the world check (`rewardlab.world_check`) is measured as soon as the vanilla models exist, before any GRM model;
    3. pairwise accuracy in and out of distribution (GRM's Tables 1 and 7 in miniature), mean and spread over seeds;
    4. best-of-N over-optimisation curves (proxy and gold vs KL) for vanilla vs GRM-sft reward models;
    5. sparse vs R3HF token rewards where they can differ: (a) critic-free RLOO with per-token returns, (b) PPO with a
       fresh critic, over seeds; and (c) PPO with the reward-model critic, where r3hf with the potential-offset critic
       must reproduce sparse (the shaping equivalence, measured).
Writes report.md, results.json and PNG figures. Every figure in the report is computed from this run; no seed is picked.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

VARIANTS: dict[str, dict] = {
    "vanilla": {"loss": "bt", "reg": "none"},
    "margin": {"loss": "margin", "reg": "none"},
    "label-smooth": {"loss": "label-smooth", "reg": "none"},
    "grm-sft": {"loss": "bt", "reg": "sft"},
    "grm-dpo": {"loss": "bt", "reg": "dpo"},
    "grm-dpo-noref": {"loss": "bt", "reg": "dpo-noref"},
}
# The official GRM code's comparison, reported apart from the main table (which keeps one head for every variant): GRM
# with its MLP head against a BT baseline with a linear head and no dropout, so the head's share of a "GRM gain" shows.
OFFICIAL_PAIRING: dict[str, dict] = {
    "official-grm-sft-mlp": {"loss": "bt", "reg": "sft", "head": "mlp"},
    "official-vanilla-linear-nodropout": {"loss": "bt", "reg": "none", "head": "linear", "head_dropout": 0.0},
}
# Sampling the preference data, training the reward models and the world check run on one torch thread: the matrices
# are tiny, and OpenMP threads on a busy CPU spin-wait (50 reward-model steps: 4.1 s on 1 thread, 90 s on 2, with
# load 3.5 on 2 cores).
SMALL_MODEL_THREADS = 1
FROZEN = "frozen-backbone"  # the linear head on frozen base features, fit to convergence (the world check's base probe)
ROW_LABELS = {
    FROZEN: "frozen backbone (linear head fit to convergence)",
    "official-grm-sft-mlp": "extra, official pairing: grm-sft, MLP head",
    "official-vanilla-linear-nodropout": "extra, official pairing: vanilla, linear head, no dropout",
}


def _preferences():
    from rewardlab.tasks import preferences  # lazily: it pulls in torch, and `--help` should not wait for it

    return preferences


def _world():
    from rewardlab.tasks import world

    return world


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    quick: bool = False
    seeds: int = 3
    sizes: dict[str, int] = field(default_factory=lambda: dict(_preferences().DATA_SIZES))
    test_sizes: dict[str, int] = field(default_factory=lambda: dict(_preferences().TEST_SIZES))
    label_noise: float = 0.1
    world_version: int = field(default_factory=lambda: _world().WORLD_VERSION)
    val_size: int = field(default_factory=lambda: _preferences().VAL_SIZE)
    # Reward models: at most rm_epochs, evaluated on val_id every rm_eval_pairs training pairs (at most once an epoch),
    # stopped after rm_patience evaluations without a gain and kept at their best val_id accuracy: each run gets its own
    # length, chosen on ID validation only.
    rm_epochs: float = 8.0
    rm_eval_pairs: int = 1000
    rm_patience: int = 3
    rm_lr: float = 3e-4
    rm_batch_size: int = 32
    official_pairing: bool = True
    alpha: float = 0.01
    bon_n: int = 256
    bon_prompts: int = 128
    ppo_steps: int = 60  # comparisons (a) and (b)
    ppo_batch_size: int = 64
    ppo_seeds: int = 3  # comparisons (a) and (b); (c) is a deterministic check and runs seed 0 only
    ppo_check_steps: int = 10  # comparison (c)
    ppo_lr: float = 3e-5
    ppo_kl_coef: float = 0.15  # at 0.05 the policy ran to KL ~2-3 and past the gold-reward peak (over-optimisation)
    rloo_k: int = 4
    progress: bool = True

    @classmethod
    def make(cls, quick: bool, seeds: int | None = None, **kw) -> DemoConfig:
        if quick:
            cfg = cls(
                quick=True, seeds=1, sizes={"small": 400, "large": 1600}, test_sizes={"test_id": 300, "test_ood": 600},
                val_size=300, rm_eval_pairs=400, official_pairing=False,
                bon_n=64, bon_prompts=48, ppo_steps=16, ppo_batch_size=64, ppo_seeds=1, ppo_check_steps=4, **kw,
            )  # fmt: skip  # PPO: 2 x 16 RLOO + 2 x 16 PPO + 2 x 4 PPO steps cost ~1.4x the old 2 x 20 PPO steps
        else:
            cfg = cls(**kw)
        if seeds is not None:
            cfg.seeds = seeds
            cfg.ppo_seeds = min(cfg.ppo_seeds, seeds) if quick else max(1, min(seeds, cfg.ppo_seeds))
        return cfg


def _mean_std(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    from rewardlab.runtime import write_json
    from rewardlab.tasks.policy import BasePolicyConfig, evaluate_gold, get_base_policy, torch_threads
    from rewardlab.tasks.preferences import write_preference_data

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    timings: dict[str, float] = {}
    results: dict = {"config": asdict(cfg)}

    # 1. base policy and preference data
    t0 = time.perf_counter()
    policy, tokenizer, policy_path = get_base_policy(BasePolicyConfig(world_version=cfg.world_version), progress=cfg.progress)
    timings["base_policy"] = time.perf_counter() - t0
    results["base_policy"] = {
        "path": str(policy_path),
        "gold_id": evaluate_gold(policy, tokenizer, "test_id", 256),
        "gold_ood": evaluate_gold(policy, tokenizer, "test_ood", 256),
    }
    t0 = time.perf_counter()
    with torch_threads(SMALL_MODEL_THREADS):
        paths = write_preference_data(
            out / "data", policy, tokenizer, sizes=cfg.sizes, test_sizes=cfg.test_sizes, label_noise=cfg.label_noise,
            val_size=cfg.val_size, world_version=cfg.world_version, progress=cfg.progress,
        )  # fmt: skip
    timings["preference_data"] = time.perf_counter() - t0
    results["data"] = {k: str(v) for k, v in paths.items()} | {"world": json.loads(Path(paths["world"]).read_text())}

    # 2-3. reward models, with the world check measured right after the vanilla ones
    t0 = time.perf_counter()
    results |= train_reward_models(cfg, policy_path, paths, out)
    timings["reward_models"] = time.perf_counter() - t0 - results["world_check"]["seconds"]
    timings["world_check"] = results["world_check"]["seconds"]
    plot_accuracy(results["reward_models"], out / "rm_accuracy.png")

    # 4. best-of-N: vanilla vs GRM-sft reward models trained on the small set (seed 0), gold = the world's gold reward
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.rl.bon import BonConfig, run_bon
    from rewardlab.rl.scorers import RewardModelScorer, resolve_scorer

    t0 = time.perf_counter()
    small = min(cfg.sizes, key=cfg.sizes.get)
    proxies = {name: out / "rm" / f"{name}-{small}-s0" for name in ("vanilla", "grm-sft")}
    bon_cfg = BonConfig(
        policy=str(policy_path), proxies={k: str(v) for k, v in proxies.items()}, gold="builtin",
        prompts="builtin:test_id", output_dir=str(out / "bon"), n=cfg.bon_n, limit=cfg.bon_prompts, max_new_tokens=16,
        progress=cfg.progress,
    )  # fmt: skip
    scorers = {name: RewardModelScorer(load_reward_model(path)) for name, path in proxies.items()}
    results["bon"] = run_bon(bon_cfg, policy=(policy, tokenizer), proxy_scorers=scorers, gold_scorer=resolve_scorer("builtin"))
    timings["best_of_n"] = time.perf_counter() - t0

    # 5. PPO: sparse vs r3hf token rewards from the same (vanilla, large-data) reward model, where they can differ
    t0 = time.perf_counter()
    large = max(cfg.sizes, key=cfg.sizes.get)
    rm_path = out / "rm" / f"vanilla-{large}-s0"
    results["ppo"], ppo_logs = run_ppo_comparisons(cfg, out / "ppo", (policy, tokenizer), policy_path, rm_path)
    timings["ppo"] = time.perf_counter() - t0
    plot_ppo_comparisons(ppo_logs, results["ppo"], out / "ppo_gold.png")
    results["timings_seconds"] = timings
    results["torch_threads"] = torch.get_num_threads()
    results["findings"] = findings(results)
    write_json(out / "results.json", results)
    (out / "report.md").write_text(render_report(results))
    return results


@dataclass(frozen=True)
class PPOComparison:
    """Two PPO-family runs per seed that differ in the token rewards (and, for the equivalence check, the critic)."""

    name: str
    algo: str
    arms: tuple[tuple[str, str | None], ...]  # (shaping, critic_init); critic_init None: no critic
    question: str
    kind: str  # "verdict": seeds, spread and a verdict on R3HF's claim; "equivalence": the two runs must coincide


PPO_COMPARISONS = (
    PPOComparison(
        "critic-free", "rloo", (("sparse", None), ("r3hf", None)),
        "RLOO with per-token returns, no critic: r3hf's prefix score R(x, y<t) acts as a per-token baseline",
        "verdict",
    ),
    PPOComparison(
        "fresh-critic", "ppo", (("sparse", "fresh"), ("r3hf", "fresh")),
        "PPO with a fresh critic (the reward model's backbone under a small random output layer): no critic holds the "
        "prefix score at the start",
        "verdict",
    ),
    PPOComparison(
        "potential-offset", "ppo", (("sparse", "reward-model"), ("r3hf", "potential-offset")),
        "PPO with the reward-model critic: r3hf with that critic minus the frozen prefix score must reproduce sparse "
        "(potential-based shaping)",
        "equivalence",
    ),
)  # fmt: skip


def run_ppo_comparisons(
    cfg: DemoConfig, out: Path, policy: tuple, policy_path: Path, rm_path: Path
) -> tuple[dict, dict[str, dict[str, list[list[dict]]]]]:
    """Every PPO_COMPARISONS run from a copy of the base policy against one loaded reward model; returns (the results
    entry, the logs by comparison and shaping, one per seed)."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.rl.ppo import PPOConfig, train_ppo
    from rewardlab.rl.scorers import resolve_prompts, resolve_scorer

    model, tokenizer = policy
    prompts = resolve_prompts("builtin:train", limit=1024)
    reward_model = load_reward_model(rm_path)  # frozen during PPO (the critic is a copy), so one load serves every run
    logs: dict[str, dict[str, list[list[dict]]]] = {}
    seconds: dict[str, float] = {}
    for comparison in PPO_COMPARISONS:
        start = time.perf_counter()
        verdict_runs = comparison.kind == "verdict"
        seeds, steps = (cfg.ppo_seeds, cfg.ppo_steps) if verdict_runs else (1, cfg.ppo_check_steps)
        for seed in range(seeds):  # seed-major, so an interrupted run still holds paired seeds
            for shaping, critic_init in comparison.arms:
                run_dir = out / f"{comparison.name}-{shaping}-s{seed}"
                ppo_cfg = PPOConfig(
                    policy=str(policy_path), reward_model=str(rm_path), reward_shaping=shaping, gold="builtin",
                    output_dir=str(run_dir), algo=comparison.algo, critic_init=critic_init or "reward-model",
                    steps=steps, batch_size=cfg.ppo_batch_size, minibatch_size=16, rloo_k=cfg.rloo_k, lr=cfg.ppo_lr,
                    critic_lr=cfg.ppo_lr, kl_coef=cfg.ppo_kl_coef, max_new_tokens=16, seed=seed, save_policy=False,
                    progress=cfg.progress,
                )  # fmt: skip
                train_ppo(
                    ppo_cfg,
                    policy=(copy.deepcopy(model), tokenizer),  # PPO trains its policy in place
                    reward_model=reward_model,
                    gold=resolve_scorer("builtin"),
                    prompts=prompts,
                )
                log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
                logs.setdefault(comparison.name, {}).setdefault(shaping, []).append(log)
        seconds[comparison.name] = time.perf_counter() - start
    return summarise_ppo_comparisons(logs, seconds), logs


def summarise_ppo_comparisons(logs: dict[str, dict[str, list[list[dict]]]], seconds: dict[str, float] | None = None) -> dict:
    """results.json's `ppo`: per comparison its algo, question and kind, one entry per arm (algo, shaping, critic_init
    and `summarise_ppo`'s figures), and the r3hf - sparse paired difference (verdict kind) or the coincidence of the two
    logs (equivalence kind)."""
    summary = {}
    for comparison in PPO_COMPARISONS:
        if comparison.name not in logs:
            continue
        runs = logs[comparison.name]
        by_shaping = summarise_ppo(runs)
        entry: dict = {
            "algo": comparison.algo,
            "question": comparison.question,
            "kind": comparison.kind,
            "seeds": len(next(iter(runs.values()))),
            "steps": len(next(iter(runs.values()))[0]) - 1,
            "seconds": (seconds or {}).get(comparison.name),
            "arms": [
                {"algo": comparison.algo, "shaping": shaping, "critic_init": critic_init, **by_shaping[shaping]}
                for shaping, critic_init in comparison.arms
            ],
        }
        if comparison.kind == "verdict":
            entry["r3hf_minus_sparse"] = paired_difference(by_shaping["sparse"], by_shaping["r3hf"])
        else:
            entry["coincidence"] = coincidence(runs["sparse"][0], runs["r3hf"][0])
            # The reward-model critic IS the prefix score at step 0: how well R(x, y<t) predicts the return there says
            # whether it can serve as a per-token baseline (negative: worse than a constant, so it adds variance).
            entry["prefix_score_explained_variance"] = runs["sparse"][0][0].get("value_explained_variance")
        summary[comparison.name] = entry
    return summary


def paired_difference(sparse: dict, r3hf: dict) -> dict:
    """r3hf minus sparse, seed by seed (both arms run each seed from the same first rollout): gold gain (final and
    averaged over steps) and final KL, as mean / std / values over seeds; `sampling_error` of the final-gold difference
    from the tails' batch-to-batch noise."""
    out = {}
    for key in ("gold_gain", "gold_mean_gain", "kl_final"):
        out[key] = _mean_std([r - s for s, r in zip(sparse[key]["values"], r3hf[key]["values"], strict=True)])
    out["sampling_error"] = (sparse["gold_final_sem"] ** 2 + r3hf["gold_final_sem"] ** 2) ** 0.5
    return out


def coincidence(first: list[dict], second: list[dict], tolerance: float = 1e-6) -> dict:
    """How closely two runs' logs agree: the largest |difference| of proxy reward, gold reward and KL over the steps,
    and how many steps from the start log the same proxy and gold rewards (to `tolerance`, i.e. the same responses)."""
    keys = ("proxy_reward", "gold_reward", "kl")
    max_abs = {key: max(abs(a[key] - b[key]) for a, b in zip(first, second, strict=True)) for key in keys}
    same = 0
    for a, b in zip(first, second, strict=True):
        if abs(a["proxy_reward"] - b["proxy_reward"]) > tolerance or abs(a["gold_reward"] - b["gold_reward"]) > tolerance:
            break
        same += 1
    return {"max_abs_difference": max_abs, "steps_matching": same, "steps_logged": len(first), "tolerance": tolerance}


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
        eval_steps=eval_steps, select_best_on="val", early_stopping_patience=cfg.rm_patience,
        **settings,
    )  # fmt: skip


def train_reward_models(cfg: DemoConfig, policy_path: Path, paths: dict[str, Path], out: Path) -> dict:
    """Every reward model of the demo and the world check: vanilla first (all sizes and seeds), then the world check
    (printed as soon as it is measured), then the other variants and the official pairing.

    Returns {"world_check", "reward_models" (accuracy table; the frozen-backbone row comes from the world check's probe),
    "reward_model_training" (epochs kept and run per model)}."""
    from rewardlab.data.loading import load_preferences
    from rewardlab.tasks.policy import torch_threads
    from rewardlab.train_rm import train_reward_model

    eval_sets = {"val": load_preferences(str(paths["val_id"])), "id": load_preferences(str(paths["test_id"])),
                 "ood": load_preferences(str(paths["test_ood"]))}  # fmt: skip
    train_sets = {size: load_preferences(str(paths[f"train_{size}"])) for size in cfg.sizes}
    rows = dict(VARIANTS) | (dict(OFFICIAL_PAIRING) if cfg.official_pairing else {})
    table: dict = {}
    training: dict = {}
    bar = tqdm(total=len(rows) * len(cfg.sizes) * cfg.seeds, desc="reward models", disable=not cfg.progress)

    def run(name: str, size: str, seed: int) -> None:
        n_pairs = len(train_sets[size].examples)
        run_cfg = rm_run_config(
            cfg, policy_path, paths[f"train_{size}"], n_pairs, out / "rm" / f"{name}-{size}-s{seed}", seed, rows[name]
        )
        metrics = train_reward_model(run_cfg, {"train": train_sets[size], "eval": eval_sets})
        cell = table.setdefault(name, {}).setdefault(size, {"id": [], "ood": [], "val": []})
        for split, values in cell.items():
            values.append(metrics["eval"][split]["accuracy"])
        epoch_steps = math.ceil(n_pairs / cfg.rm_batch_size)
        selection = metrics["train"]["selection"]
        training.setdefault(name, {}).setdefault(size, []).append(
            {"seed": seed, "epoch_kept": selection["step"] / epoch_steps, "epochs_run": metrics["train"]["steps"] / epoch_steps,
             "val_history": selection["history"]}
        )  # fmt: skip
        bar.update(1)

    with torch_threads(SMALL_MODEL_THREADS) as threads:
        for size in cfg.sizes:
            for seed in range(cfg.seeds):
                run("vanilla", size, seed)
        world_check = measure_world_check(cfg, policy_path, train_sets, eval_sets, out, table["vanilla"])
        for line in world_check_findings(world_check):
            tqdm.write(f"world check: {line}")
        for name in rows:
            if name == "vanilla":
                continue
            for size in cfg.sizes:
                for seed in range(cfg.seeds):
                    run(name, size, seed)
        world_check["threads"] = threads
    bar.close()
    summary = {
        name: {size: {split: _mean_std(values) for split, values in cell.items()} for size, cell in sizes.items()}
        for name, sizes in table.items()
    }
    summary[FROZEN] = {size: world_check["by_size"][size]["frozen_backbone"] for size in cfg.sizes}
    ordered = {name: summary[name] for name in (*VARIANTS, FROZEN, *(OFFICIAL_PAIRING if cfg.official_pairing else ()))}
    return {"world_check": world_check, "reward_models": ordered, "reward_model_training": training}


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
            "probe_ood_after_vanilla": _mean_std(after),
            "vanilla_ood": _mean_std(vanilla_ood),
            "conditions": world_check_conditions(base_ood, after, vanilla_ood),
            "probe_l2": probe.l2,
            "probe_val_path": [[l2, accuracy] for l2, accuracy in probe.val_path.items()],
            "probe_after_vanilla_l2": after_l2,
            "frozen_backbone": {split: _mean_std([probe.accuracy(base_features[split])]) for split in ("id", "ood", "val")},
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


def world_check_findings(check: dict) -> list[str]:
    """The two conditions in words, with their numbers, for the headline size and every other size."""
    lines = []
    for size, cell in [(check["train_size"], check["by_size"][check["train_size"]])] + [
        (s, c) for s, c in check["by_size"].items() if s != check["train_size"]
    ]:
        good, damage = cell["conditions"]["base_features_good"], cell["conditions"]["vanilla_damages_features"]
        after = cell["probe_ood_after_vanilla"]
        lines.append(
            f"{size} data: base features good where the reward is read (probe_ood_base {good['probe_ood_base']:.3f} >= "
            f"vanilla_ood {good['vanilla_ood']:.3f}): {'holds' if good['holds'] else 'FAILS'} "
            f"({good['difference'] * 100:+.1f} points{', every seed' if good['every_seed'] else ''}); vanilla training "
            f"damages them (probe_ood_after_vanilla {after['mean']:.3f} ± {after['std']:.3f} < probe_ood_base "
            f"{damage['probe_ood_base']:.3f}): {'holds' if damage['holds'] else 'FAILS'} "
            f"({damage['difference'] * 100:+.1f} points{', every seed' if damage['every_seed'] else ''})."
        )
    lines.append(f"the base model's likelihood as a judge (no training): OOD {check['likelihood_judge_ood']:.3f}.")
    return lines


def summarise_ppo(runs: dict[str, list[list[dict]]]) -> dict:
    """Per shaping: initial and final gold / proxy reward and KL, mean and spread over seeds (final = mean of the last
    quarter of steps, to smooth rollout noise; `gold_mean_gain` = mean gold over the steps after 0, minus step 0's).
    `gold_final_sem` is the sampling error of the final figure (the spread of the tail's batch means / sqrt(steps),
    combined over seeds): with one seed it is the only noise gauge there is."""
    summary = {}
    for shaping, logs in runs.items():
        finals, initials, kls, proxies, sems, mean_gains = [], [], [], [], [], []
        for log in logs:
            tail = log[-max(1, len(log) // 4) :]
            initials.append(log[0]["gold_reward"])
            after_start = log[1:] or log
            mean_gains.append(statistics.fmean(r["gold_reward"] for r in after_start) - log[0]["gold_reward"])
            tail_gold = [r["gold_reward"] for r in tail]
            finals.append(statistics.fmean(tail_gold))
            sems.append(statistics.stdev(tail_gold) / len(tail_gold) ** 0.5 if len(tail_gold) > 1 else 0.0)
            kls.append(statistics.fmean(r["kl"] for r in tail))
            proxies.append(statistics.fmean(r["proxy_reward"] for r in tail))
        summary[shaping] = {
            "gold_initial": _mean_std(initials),
            "gold_final": _mean_std(finals),
            "gold_gain": _mean_std([f - i for f, i in zip(finals, initials, strict=True)]),
            "gold_mean_gain": _mean_std(mean_gains),  # the area under the learning curve: "learns faster" shows here
            "gold_final_sem": sum(e**2 for e in sems) ** 0.5 / len(sems),
            "kl_final": _mean_std(kls),
            "proxy_final": _mean_std(proxies),
        }
    return summary


def verdict(difference: float, spread: float, floor: float) -> str:
    """'agrees with' only when the difference exceeds the spread over seeds (or `floor` when there is no spread);
    within it there is no clear difference, which does not reproduce a claim either."""
    threshold = max(spread, floor)
    if difference > threshold:
        return "agrees with"
    if difference < -threshold:
        return "contradicts"
    return "no clear difference; does not reproduce"


def findings(results: dict) -> list[str]:
    """Plain sentences comparing this run's figures with the papers' claims; every number comes from `results`.
    The world check comes first: whether this world can show GRM's mechanism at all."""
    lines = []
    check = results.get("world_check")
    if check:
        lines += [f"world check, {line}" for line in world_check_findings(check)]
    table = results["reward_models"]
    grm_agrees = []
    for size in table["vanilla"]:
        van = table["vanilla"][size]
        for variant in ("grm-sft", "grm-dpo", "grm-dpo-noref"):
            cell = table[variant][size]
            d_ood = cell["ood"]["mean"] - van["ood"]["mean"]
            d_id = cell["id"]["mean"] - van["id"]["mean"]
            spread = (cell["ood"]["std"] ** 2 + van["ood"]["std"] ** 2) ** 0.5
            said = verdict(d_ood, spread, 0.005)
            grm_agrees.append(said == "agrees with")
            lines.append(
                f"{size} data: {variant} vs vanilla: OOD {d_ood * 100:+.1f} points (seed spread {spread * 100:.1f}), "
                f"ID {d_id * 100:+.1f} points ({said} GRM's claim of better OOD accuracy)."
            )
    for size in table["vanilla"]:
        if FROZEN in table:
            frozen, van = table[FROZEN][size]["ood"]["mean"], table["vanilla"][size]["ood"]["mean"]
            lines.append(f"{size} data: frozen backbone (linear head fit to convergence) OOD {frozen:.3f}, vanilla {van:.3f}.")
        if all(name in table for name in OFFICIAL_PAIRING):
            grm, bt = (table[name][size]["ood"] for name in OFFICIAL_PAIRING)
            d_official = grm["mean"] - bt["mean"]
            d_same = table["grm-sft"][size]["ood"]["mean"] - table["vanilla"][size]["ood"]["mean"]
            spread = (grm["std"] ** 2 + bt["std"] ** 2) ** 0.5
            lines.append(
                f"{size} data, the official code's pairing (grm-sft with the MLP head vs vanilla with a linear head without "
                f"dropout): OOD {d_official * 100:+.1f} points (seed spread {spread * 100:.1f}) against {d_same * 100:+.1f} "
                f"with one head for both, so the head and dropout account for {(d_official - d_same) * 100:+.1f} points."
            )
    if check:
        if not check["both_conditions_hold"]:
            lines.append(
                "GRM: the world check fails, so the GRM verdicts above cannot speak for or against GRM's mechanism here."
            )
        elif not any(grm_agrees):
            lines.append(
                "GRM: both world-check conditions hold, and still no GRM variant beats vanilla out of distribution beyond "
                "the seed spread at either size: in this world, GRM's regularisers do not help."
            )
        else:
            lines.append(
                f"GRM: both world-check conditions hold, and {sum(grm_agrees)} of {len(grm_agrees)} GRM cells beat vanilla "
                "out of distribution beyond the seed spread."
            )
    bon = results.get("bon", {}).get("curves", results.get("bon", {}))
    gold_end = {}
    for name in ("vanilla", "grm-sft"):
        curve = bon.get(name) if isinstance(bon, dict) else None
        if curve and "gold" in curve:
            gold = curve["gold"]
            sem = curve.get("gold_sem", [0.0])[-1]
            gold_end[name] = (gold[-1] - gold[0], max(gold) - gold[0], sem if sem == sem else 0.0)
    if len(gold_end) == 2:
        (v_end, v_peak, v_sem), (g_end, g_peak, g_sem) = gold_end["vanilla"], gold_end["grm-sft"]
        lines.append(
            f"best-of-N: gold gain at the largest N: vanilla {v_end:+.3f} (peak {v_peak:+.3f}), grm-sft {g_end:+.3f} "
            f"(peak {g_peak:+.3f}); {verdict(g_end - v_end, (v_sem**2 + g_sem**2) ** 0.5, 0.01)} GRM's claim of less "
            "over-optimisation."
        )
    lines += ppo_findings(results.get("ppo", {}))
    return lines


PPO_LABELS = {
    "critic-free": "Critic-free (RLOO, per-token returns)",
    "fresh-critic": "PPO with a fresh critic",
    "potential-offset": "PPO with the reward-model critic",
}


def ppo_findings(ppo: dict) -> list[str]:
    """One sentence per PPO comparison: verdicts on R3HF's claim from the comparisons where dense rewards can matter,
    and the measured equivalence where they cannot."""
    lines = []
    for name, entry in ppo.items():
        label = PPO_LABELS.get(name, name)
        arms = {arm["shaping"]: arm for arm in entry["arms"]}
        if entry["kind"] == "verdict":
            s, r, d = arms["sparse"], arms["r3hf"], entry["r3hf_minus_sparse"]
            gain, spread = d["gold_gain"], d["gold_gain"]["std"]
            floor = max(0.01, 2 * d["sampling_error"])
            lines.append(
                f"{label}, {entry['seeds']} seed(s) x {entry['steps']} steps: gold gain sparse "
                f"{s['gold_gain']['mean']:+.3f} ± {s['gold_gain']['std']:.3f}, r3hf {r['gold_gain']['mean']:+.3f} ± "
                f"{r['gold_gain']['std']:.3f}; r3hf - sparse {gain['mean']:+.3f} (per seed "
                f"{', '.join(f'{v:+.3f}' for v in gain['values'])}; seed spread {spread:.3f}, sampling error "
                f"{d['sampling_error']:.3f}); averaged over the steps {d['gold_mean_gain']['mean']:+.3f}; final KL "
                f"{s['kl_final']['mean']:.2f} / {r['kl_final']['mean']:.2f}; "
                f"{verdict(gain['mean'], spread, floor)} R3HF's claim that dense rewards learn faster."
            )
        else:
            c = entry["coincidence"]
            match = "the same" if c["steps_matching"] == c["steps_logged"] else "different"
            lines.append(
                f"{label}: r3hf with the potential-offset critic logged the same proxy and gold rewards as sparse for "
                f"{c['steps_matching']} of {c['steps_logged']} steps (max |gold difference| "
                f"{c['max_abs_difference']['gold_reward']:.1e}, |KL difference| {c['max_abs_difference']['kl']:.1e}): "
                f"{match} runs, as potential-based shaping says; with a critic that already holds the prefix score, "
                "r3hf is sparse PPO, and a difference would come only from how the critic starts."
            )
            explained = entry.get("prefix_score_explained_variance")
            if explained is not None:
                quality = "better" if explained > 0 else "worse"
                lines.append(
                    f"The reward model's prefix score R(x, y<t), read as a value estimate at step 0, explains "
                    f"{explained:+.2f} of the variance of the returns ({quality} than a constant): that is the per-token "
                    "baseline r3hf adds without a critic, and the signal it offers a fresh critic."
                )
    return lines


def plot_accuracy(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(table)
    sizes = list(next(iter(table.values())))
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(6.0, 0.75 * len(variants)) * len(sizes), 4.2), sharey=True)
    axes = [axes] if len(sizes) == 1 else axes
    for ax, size in zip(axes, sizes, strict=True):
        for j, split in enumerate(("id", "ood")):
            means = [table[v][size][split]["mean"] for v in variants]
            stds = [table[v][size][split]["std"] for v in variants]
            xs = [i + (j - 0.5) * 0.38 for i in range(len(variants))]
            ax.bar(xs, means, width=0.38, yerr=stds, capsize=3, label=split.upper())
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_title(f"{size} training set")
        lo = min(table[v][s][sp]["mean"] for v in variants for s in sizes for sp in ("id", "ood"))
        ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("pairwise accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ppo_comparisons(logs: dict[str, dict[str, list[list[dict]]]], summary: dict, path: Path) -> None:
    """One row per comparison: gold reward vs step and vs KL, one line per seed and shaping. Rollout means are noisy (one
    batch each), so the lines are trailing means over 5 steps, with the raw points faint behind them. In the equivalence
    row r3hf is dashed over sparse: the lines should coincide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rewardlab.rl.ppo_report import moving_average

    fig, axes = plt.subplots(len(logs), 2, figsize=(11, 3.6 * len(logs)), squeeze=False)
    for (a, b), (name, runs) in zip(axes, logs.items(), strict=True):
        critic = {arm["shaping"]: arm["critic_init"] for arm in summary[name]["arms"]}
        for color, style, (shaping, seed_logs) in zip(("tab:blue", "tab:red"), ("-", "--"), runs.items(), strict=False):
            for k, log in enumerate(seed_logs):
                label = f"{shaping} (critic: {critic[shaping] or 'none'})" if k == 0 else None
                steps, gold, kl = ([r[key] for r in log] for key in ("step", "gold_reward", "kl"))
                a.plot(steps, gold, color=color, alpha=0.15, lw=0.8)
                a.plot(steps, moving_average(gold), style, color=color, alpha=0.9, label=label)
                b.scatter(kl, gold, color=color, alpha=0.15, s=6)
                b.plot(moving_average(kl), moving_average(gold), style, color=color, alpha=0.9, label=label)
        a.set_title(f"{PPO_LABELS.get(name, name)} ({summary[name]['algo']})", fontsize=10)
        a.set_xlabel("step")
        b.set_xlabel("KL(policy || base)")
        for ax in (a, b):
            ax.set_ylabel("gold reward (trailing mean of 5)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_report_bon(bon: dict) -> list[str]:
    """The best-of-N section: the figure, and the analytic vs empirical KL at the largest N."""
    lines = ["## Best-of-N", "", "![best-of-N](bon/bon_curves.png)", ""]
    curves = bon.get("curves", {})
    if curves and all("kl_empirical" in c for c in curves.values()):
        first = next(iter(curves.values()))
        lines += [
            f"KL at N = {first['n'][-1]}: analytic log N - (N-1)/N = {first['kl'][-1]:.2f}; on the samples' empirical "
            "distribution (exact for a policy that repeats itself) "
            + ", ".join(f"{name} {c['kl_empirical'][-1]:.2f}" for name, c in curves.items())
            + f". Distinct responses: {bon.get('distinct_fraction', float('nan')):.0%} of the samples per prompt; the most "
            f"common one is {bon.get('top_response_share', float('nan')):.0%} of them. The analytic axis (left panel) "
            "overstates the KL; the right panel uses the empirical one.",
            "",
        ]
    return lines


def render_ppo_section(ppo: dict) -> list[str]:
    """The PPO section: what each comparison asks, one table row per arm (mean ± std over seeds), the figure."""
    lines = [
        "## PPO: sparse vs R3HF token rewards where they can differ",
        "",
        "With gamma = 1, r3hf is sparse plus potential-based shaping with Phi_t = R(x, y<t): under PPO + GAE it changes "
        "nothing but the critic's target. So the comparisons are (a) without a critic, (b) with a critic that does not "
        "hold Phi, and (c) the equivalence itself.",
        "",
    ]
    for name, entry in ppo.items():
        lines.append(f"- **{PPO_LABELS.get(name, name)}** ({entry['algo']}, {entry['seeds']} seed(s) x {entry['steps']} "
                     f"steps): {entry['question']}.")  # fmt: skip
    lines += [
        "",
        "| comparison | algo | shaping | critic | gold before | gold after (± seed std) | gain | gain averaged over steps "
        "| sampling error | KL | proxy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in ppo.items():
        for arm in entry["arms"]:
            lines.append(
                f"| {name} | {arm['algo']} | {arm['shaping']} | {arm['critic_init'] or 'none'} | "
                f"{arm['gold_initial']['mean']:.3f} | {arm['gold_final']['mean']:.3f} ± {arm['gold_final']['std']:.3f} | "
                f"{arm['gold_gain']['mean']:+.3f} ± {arm['gold_gain']['std']:.3f} | {arm['gold_mean_gain']['mean']:+.3f} | "
                f"{arm['gold_final_sem']:.3f} | {arm['kl_final']['mean']:.2f} | {arm['proxy_final']['mean']:.3f} |"
            )
    lines += ["", "![PPO gold reward](ppo_gold.png)"]
    return lines


def render_world_check(check: dict) -> list[str]:
    """The world check section of the report: the four figures, then both conditions with their numbers."""
    lines = [
        "## World check (measured before any GRM model was trained)",
        "",
        f"Training size {check['train_size']}; probes are linear heads on fixed features at the reward-read position, "
        "trained on ID pairs (l2 by the one-standard-error rule on val_id), scored on test_ood.",
        "",
        "| probe_ood_base | probe_ood_after_vanilla | likelihood_judge_ood | vanilla_ood |",
        "|---|---|---|---|",
        f"| {check['probe_ood_base']:.3f} | {check['probe_ood_after_vanilla']:.3f} | {check['likelihood_judge_ood']:.3f} | "
        f"{check['vanilla_ood']:.3f} |",
        "",
    ]
    lines += [f"- {line}" for line in world_check_findings(check)]
    return [*lines, ""]


def render_report(results: dict) -> str:
    cfg = results["config"]
    lines = [
        "# rewardlab demo report",
        "",
        f"Mode: {'quick' if cfg['quick'] else 'full'}; seeds: {cfg['seeds']} (reward models), {cfg['ppo_seeds']} (PPO "
        "comparisons); "
        f"label noise {cfg['label_noise']}; sizes {cfg['sizes']}. All numbers below come from this run.",
        "",
        "## Base policy",
        "",
        f"Gold reward of one sample per prompt (temperature 0.7): ID {results['base_policy']['gold_id']['mean_gold']:.3f}, "
        f"OOD {results['base_policy']['gold_ood']['mean_gold']:.3f}.",
        "",
    ]
    if "world_check" in results:
        lines += render_world_check(results["world_check"])
    lines += ["## Reward models: pairwise accuracy (mean ± std over seeds)", ""]
    table = results["reward_models"]
    sizes = list(next(iter(table.values())))
    header = "| variant | " + " | ".join(f"{s} ID | {s} OOD" for s in sizes) + " |"
    lines += [header, "|---" * (1 + 2 * len(sizes)) + "|"]
    for variant, cells in table.items():
        row = [ROW_LABELS.get(variant, variant)]
        row += [f"{cells[s][sp]['mean']:.3f} ± {cells[s][sp]['std']:.3f}" for s in sizes for sp in ("id", "ood")]
        lines.append("| " + " | ".join(row) + " |")
    note = (
        "One head (linear, dropout 0.1) for every variant of the main rows; each model trained until its ID validation "
        "accuracy stopped improving and kept at its best."
    )
    if FROZEN in table:
        note += " The frozen backbone has no seed (a convex fit)."
    if any(name in table for name in OFFICIAL_PAIRING):
        note += " The extra rows pair the variants as the official GRM code does."
    lines += ["", note]
    training = results.get("reward_model_training")
    if training:
        lines += ["", "Epochs kept by ID validation (mean over seeds; epochs run in brackets):", ""]
        lines += ["| variant | " + " | ".join(sizes) + " |", "|---" * (1 + len(sizes)) + "|"]
        for variant, per_size in training.items():
            cells = [
                f"{statistics.fmean(r['epoch_kept'] for r in per_size[s]):.1f} "
                f"({statistics.fmean(r['epochs_run'] for r in per_size[s]):.1f})"
                for s in sizes
            ]
            lines.append(f"| {ROW_LABELS.get(variant, variant)} | " + " | ".join(cells) + " |")
    lines += ["", "![reward-model accuracy](rm_accuracy.png)", ""]
    lines += render_report_bon(results.get("bon", {}))
    lines += render_ppo_section(results["ppo"])
    lines += ["", "## Where this small world agrees or disagrees with the papers", ""]
    lines += [f"- {f}" for f in results["findings"]]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()), ""]
    return "\n".join(lines)
