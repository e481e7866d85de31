"""Experiment (not a speed benchmark): does GRM's regulariser make a reward model's prefix scores more informative?

On the built-in world, train vanilla BT and GRM-sft reward models exactly as the full demo does (initialised from the
cached base policy; 3 epochs, lr 3e-4, batch 32, alpha 0.01, max length 256) for several seeds and data sizes, then run
the prefix-signal diagnostic (`rewardlab.diagnose`) on the world's in-distribution and OOD test sets. Writes
OUTPUT/runs/<variant>-<size>-s<seed>/diagnose.json per model, OUTPUT/summary.json (mean and spread over seeds, and the
per-seed GRM - vanilla differences: both variants of a seed see the same data in the same order) and OUTPUT/summary.png.

    OMP_NUM_THREADS=1 python benchmarks/prefix_signal_world.py --output runs/prefix-world --seeds 3
    python benchmarks/prefix_signal_world.py --quick --output /tmp/prefix-quick     # minutes: a smoke run, not a result
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

VARIANTS = {"vanilla": {"loss": "bt", "reg": "none"}, "grm-sft": {"loss": "bt", "reg": "sft"}}
# The figures compared across variants; each is a function of one set's diagnose.json entry.
FIGURES = {
    "accuracy": lambda m: m["accuracy"],
    "mean_prefix_accuracy": lambda m: m["mean_prefix_accuracy"],
    "prefix_accuracy_0.5": lambda m: m["prefix_accuracy"][4]["accuracy"],
    "accuracy_before_last_token": lambda m: m["accuracy_before_last_token"],
    "margin_pearson_0.5": lambda m: m["prefix_correlation"][4]["margin_pearson"],
    "pearson_0.5": lambda m: m["prefix_correlation"][4]["pearson"],
    "r3hf_std_over_sequence_std": lambda m: m["r3hf_token_rewards"]["std"] / m["r3hf_token_rewards"]["sequence_reward_std"],
    "last_token_share": lambda m: m["r3hf_token_rewards"]["last_token_share"],
}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/prefix-world")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["small", "large"], help="world data sizes (small 1K, large 4K pairs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny data and 1 epoch: checks the script runs")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from rewardlab.data.loading import load_preferences
    from rewardlab.demo.reward_models import rm_run_name
    from rewardlab.diagnose import diagnose_set, plot_prefix_signal
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.runtime import write_json
    from rewardlab.tasks import policy as policy_module
    from rewardlab.tasks.preferences import DATA_SIZES, TEST_SIZES, write_preference_data
    from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

    out = Path(args.output)
    sizes = {"small": 100, "large": 200} if args.quick else dict(DATA_SIZES)
    sizes = {k: v for k, v in sizes.items() if k in args.sizes}
    test_sizes = {"test_id": 100, "test_ood": 100} if args.quick else dict(TEST_SIZES)
    config = {
        "seeds": args.seeds, "sizes": sizes, "test_sizes": test_sizes, "threads": args.threads, "quick": args.quick,
        "label_noise": 0.1, "rm": {"learning_rate": 3e-4, "batch_size": 32, "epochs": 1.0 if args.quick else 3.0,
                                   "alpha": 0.01, "max_length": 256},
        "load_average_start": os.getloadavg(),
    }  # fmt: skip
    write_json(out / "config.json", config)

    policy_module.training_threads = lambda: args.threads  # pretraining (first use only) keeps to the thread budget
    policy, tokenizer, policy_path = policy_module.get_base_policy(progress=False)
    data_dir = out / "data"
    if not (data_dir / "world.json").exists() or json.loads((data_dir / "world.json").read_text())["sizes"] != sizes:
        write_preference_data(data_dir, policy, tokenizer, sizes=sizes, test_sizes=test_sizes, label_noise=0.1, progress=False)
    tests = {split: load_preferences(str(data_dir / f"{split}.jsonl")) for split in test_sizes}

    per_run: dict = {}
    started = time.perf_counter()
    for size in sizes:
        train = load_preferences(str(data_dir / f"train_{size}.jsonl"))
        for seed in range(args.seeds):
            for variant, objective in VARIANTS.items():
                run_dir = out / "runs" / rm_run_name(variant, size, seed)
                rm_cfg = RewardTrainingConfig(
                    model=str(policy_path), train_data=str(data_dir / f"train_{size}.jsonl"), output_dir=str(run_dir),
                    learning_rate=3e-4, per_device_train_batch_size=32, num_train_epochs=config["rm"]["epochs"],
                    alpha=0.01, seed=seed, max_length=256, logging_steps=10, progress=False, **objective,
                )  # fmt: skip
                train_reward_model(rm_cfg, {"train": train, "eval": {}})
                model = load_reward_model(run_dir)
                results = {split: diagnose_set(model, ds.examples, max_length=256) for split, ds in tests.items()}
                write_json(run_dir / "diagnose.json", results)
                plot_prefix_signal(results, run_dir / "prefix_signal.png", title=f"{variant}, {size}, seed {seed}")
                per_run.setdefault(size, {}).setdefault(variant, []).append(results)
                line = "  ".join(f"{s}: {r['accuracy']:.3f} prefix {r['mean_prefix_accuracy']:.3f}" for s, r in results.items())
                print(f"{variant:8s} {size} s{seed}  {line}  ({time.perf_counter() - started:.0f} s)", flush=True)

    summary: dict = {"config": config, "wall_seconds": time.perf_counter() - started, "load_average_end": os.getloadavg()}
    for size, variants in per_run.items():
        for split in test_sizes:
            cell = summary.setdefault(size, {}).setdefault(split, {})
            for variant, runs in variants.items():
                figures = {name: mean_std([f(r[split]) for r in runs]) for name, f in FIGURES.items()}
                curve = [mean_std([r[split]["prefix_accuracy"][k]["accuracy"] for r in runs]) for k in range(10)]
                cell[variant] = figures | {"prefix_accuracy": curve}
            cell["grm_minus_vanilla"] = {
                name: mean_std([f(g[split]) - f(v[split]) for g, v in zip(variants["grm-sft"], variants["vanilla"], strict=True)])
                for name, f in FIGURES.items()
            }
    write_json(out / "summary.json", summary)
    plot_summary(summary, sizes, list(test_sizes), out / "summary.png")
    return summary


def plot_summary(summary: dict, sizes: dict, splits: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sizes), len(splits), figsize=(5 * len(splits), 3.6 * len(sizes)), squeeze=False)
    xs = [k / 10 for k in range(1, 11)]
    for i, size in enumerate(sizes):
        for j, split in enumerate(splits):
            ax = axes[i][j]
            for k, variant in enumerate(VARIANTS):
                curve = summary[size][split][variant]["prefix_accuracy"]
                mean = [c["mean"] for c in curve]
                std = [c["std"] for c in curve]
                ax.plot(xs, mean, marker="o", color=f"C{k}", label=variant)
                low = [m - s for m, s in zip(mean, std, strict=True)]
                high = [m + s for m, s in zip(mean, std, strict=True)]
                ax.fill_between(xs, low, high, color=f"C{k}", alpha=0.2)
            ax.axhline(0.5, color="grey", ls=":", lw=1)
            ax.set(title=f"{size} ({sizes[size]} pairs), {split}", xlabel="fraction of response tokens", ylabel="accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("prefix accuracy, mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
