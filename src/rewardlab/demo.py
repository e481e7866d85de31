"""`rewardlab demo`: the whole pipeline on the built-in world, offline, with the same code paths as real models.

    1. base policy (cached) -> preference data labelled by the gold reward (train small/large, test_id, test_ood);
    2. reward models initialised from the base policy: vanilla BT, margin, label smoothing, GRM sft / dpo / dpo-noref,
       at two data sizes, over seeds;
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


def _preferences():
    from rewardlab.tasks import preferences  # lazily: it pulls in torch, and `--help` should not wait for it

    return preferences


@dataclass
class DemoConfig:
    output_dir: str = "runs/demo"
    quick: bool = False
    seeds: int = 3
    sizes: dict[str, int] = field(default_factory=lambda: dict(_preferences().DATA_SIZES))
    test_sizes: dict[str, int] = field(default_factory=lambda: dict(_preferences().TEST_SIZES))
    label_noise: float = 0.1
    rm_epochs: float = 3.0  # 1 epoch at lr 1e-4 left the small-data models barely trained (accuracy ~0.55)
    rm_lr: float = 3e-4
    rm_batch_size: int = 32
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

    from rewardlab.data.loading import load_preferences
    from rewardlab.runtime import write_json
    from rewardlab.tasks.policy import evaluate_gold, get_base_policy
    from rewardlab.tasks.preferences import write_preference_data
    from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    timings: dict[str, float] = {}
    results: dict = {"config": asdict(cfg)}

    # 1. base policy and preference data
    t0 = time.perf_counter()
    policy, tokenizer, policy_path = get_base_policy(progress=cfg.progress)
    timings["base_policy"] = time.perf_counter() - t0
    results["base_policy"] = {
        "path": str(policy_path),
        "gold_id": evaluate_gold(policy, tokenizer, "test_id", 256),
        "gold_ood": evaluate_gold(policy, tokenizer, "test_ood", 256),
    }
    t0 = time.perf_counter()
    paths = write_preference_data(
        out / "data", policy, tokenizer, sizes=cfg.sizes, test_sizes=cfg.test_sizes, label_noise=cfg.label_noise,
        progress=cfg.progress,
    )  # fmt: skip
    timings["preference_data"] = time.perf_counter() - t0
    results["data"] = {k: str(v) for k, v in paths.items()} | {"world": json.loads(Path(paths["world"]).read_text())}
    eval_sets = {"id": load_preferences(str(paths["test_id"])), "ood": load_preferences(str(paths["test_ood"]))}
    train_sets = {size: load_preferences(str(paths[f"train_{size}"])) for size in cfg.sizes}

    # 2-3. reward models
    t0 = time.perf_counter()
    table: dict = {}
    runs = [(v, s, seed) for s in cfg.sizes for v in VARIANTS for seed in range(cfg.seeds)]
    for variant, size, seed in tqdm(runs, desc="reward models", disable=not cfg.progress):
        rm_cfg = RewardTrainingConfig(
            model=str(policy_path), train_data=str(paths[f"train_{size}"]),
            output_dir=str(out / "rm" / f"{variant}-{size}-s{seed}"),
            learning_rate=cfg.rm_lr, per_device_train_batch_size=cfg.rm_batch_size, num_train_epochs=cfg.rm_epochs,
            alpha=cfg.alpha, seed=seed, logging_steps=10, progress=False, max_length=256, **VARIANTS[variant],
        )  # fmt: skip
        metrics = train_reward_model(rm_cfg, {"train": train_sets[size], "eval": eval_sets})
        cell = table.setdefault(variant, {}).setdefault(size, {"id": [], "ood": []})
        cell["id"].append(metrics["eval"]["id"]["accuracy"])
        cell["ood"].append(metrics["eval"]["ood"]["accuracy"])
    timings["reward_models"] = time.perf_counter() - t0
    results["reward_models"] = {
        v: {s: {split: _mean_std(vals) for split, vals in cell.items()} for s, cell in sizes.items()}
        for v, sizes in table.items()
    }
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
    """Plain sentences comparing this run's figures with the papers' claims; every number comes from `results`."""
    lines = []
    table = results["reward_models"]
    for size in next(iter(table.values())):
        van = table["vanilla"][size]
        for variant in ("grm-sft", "grm-dpo", "grm-dpo-noref"):
            cell = table[variant][size]
            d_ood = cell["ood"]["mean"] - van["ood"]["mean"]
            d_id = cell["id"]["mean"] - van["id"]["mean"]
            spread = (cell["ood"]["std"] ** 2 + van["ood"]["std"] ** 2) ** 0.5
            lines.append(
                f"{size} data: {variant} vs vanilla: OOD {d_ood * 100:+.1f} points (seed spread {spread * 100:.1f}), "
                f"ID {d_id * 100:+.1f} points ({verdict(d_ood, spread, 0.005)} GRM's claim of better OOD accuracy)."
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
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 3.8), sharey=True)
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
        "## Reward models: pairwise accuracy (mean ± std over seeds)",
        "",
    ]
    table = results["reward_models"]
    sizes = list(next(iter(table.values())))
    header = "| variant | " + " | ".join(f"{s} ID | {s} OOD" for s in sizes) + " |"
    lines += [header, "|---" * (1 + 2 * len(sizes)) + "|"]
    for variant, cells in table.items():
        row = [variant] + [f"{cells[s][sp]['mean']:.3f} ± {cells[s][sp]['std']:.3f}" for s in sizes for sp in ("id", "ood")]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "![reward-model accuracy](rm_accuracy.png)", ""]
    lines += render_report_bon(results.get("bon", {}))
    lines += render_ppo_section(results["ppo"])
    lines += ["", "## Where this small world agrees or disagrees with the papers", ""]
    lines += [f"- {f}" for f in results["findings"]]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_seconds"].items()), ""]
    return "\n".join(lines)
