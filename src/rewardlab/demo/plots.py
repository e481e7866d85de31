"""The demo's figures: reward-model accuracy per variant and size, and gold reward along the PPO comparisons."""

from __future__ import annotations

from pathlib import Path

from rewardlab.demo.report import PPO_LABELS


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
    """One row per comparison: gold reward vs step and vs KL on the training rollouts, one line per seed and arm (the
    baseline, sparse PPO with the reward-model critic, in green); and, where the runs were evaluated, held-out gold vs
    held-out KL at the checkpoints, with the common KL values as dotted lines. Rollout means are noisy (one batch each),
    so the training lines are trailing means over 5 steps, with the raw points faint behind them. In the equivalence
    row r3hf is dashed over sparse: the lines should coincide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rewardlab.rl.ppo_report import moving_average

    fig, axes = plt.subplots(len(logs), 3, figsize=(16, 3.6 * len(logs)), squeeze=False)
    for (a, b, c), (name, runs) in zip(axes, logs.items(), strict=True):
        critic = {arm.get("arm", arm["shaping"]): (arm["algo"], arm["critic_init"]) for arm in summary[name]["arms"]}
        colours, styles = ("tab:blue", "tab:red", "tab:green"), ("-", "--", ":")
        for colour, style, (arm, seed_logs) in zip(colours, styles, runs.items(), strict=False):
            algo, init = critic[arm]
            for k, full_log in enumerate(seed_logs):
                label = f"{arm} ({algo}, critic: {init or 'none'})" if k == 0 else None
                log = [r for r in full_log if "kind" not in r]
                steps, gold, kl = ([r[key] for r in log] for key in ("step", "gold_reward", "kl"))
                a.plot(steps, gold, color=colour, alpha=0.15, lw=0.8)
                a.plot(steps, moving_average(gold), style, color=colour, alpha=0.9, label=label)
                b.scatter(kl, gold, color=colour, alpha=0.15, s=6)
                b.plot(moving_average(kl), moving_average(gold), style, color=colour, alpha=0.9, label=label)
                evals = sorted((r for r in full_log if r.get("kind") == "eval"), key=lambda r: r["step"])
                if evals:
                    c.plot([r["kl"] for r in evals], [r["gold_reward"] for r in evals], style, marker="o", ms=3,
                           color=colour, alpha=0.9, label=label)  # fmt: skip
        for value in summary[name].get("kl_grid", []):
            c.axvline(value, color="grey", ls=":", lw=0.8)
        a.set_title(f"{PPO_LABELS.get(name, name)} ({summary[name]['algo']})", fontsize=10)
        a.set_xlabel("step")
        b.set_xlabel("KL(policy || base), training rollouts")
        c.set_xlabel("KL(policy || base), held-out prompts")
        c.set_title("held-out test_id prompts, at the checkpoints", fontsize=10)
        for ax in (a, b):
            ax.set_ylabel("gold reward (trailing mean of 5)")
        c.set_ylabel("held-out gold reward")
        for ax in (a, b, c):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
