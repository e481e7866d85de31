"""What a PPO run writes: its log records, summary, plots (used by the demo too) and the trained policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rewardlab.rl.ppo_math import explained_variance, explained_variance_moments
from rewardlab.rl.rollout import Rollout
from rewardlab.runtime import follow_umask


def summarise(log: list[dict]) -> dict:
    """First and last records, and the change in proxy / gold reward and KL between them."""
    if not log:
        return {"steps": 0}
    first, last = log[0], log[-1]
    summary: dict[str, Any] = {"steps": last["step"], "initial": first, "final": last}
    for key in ("proxy_reward", "gold_reward", "kl"):
        if key in first and key in last:
            summary[f"{key}_change"] = last[key] - first[key]
    return summary


def moving_average(values: list[float], window: int = 5) -> list[float]:
    """Trailing mean over up to `window` points (rollout statistics are noisy; the plots show both)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i - max(0, i - window + 1) + 1) for i in range(len(values))]


def plot_ppo(log: list[dict], output_dir: Path) -> None:
    """reward_vs_step.png (proxy, gold, KL vs step: raw and a 5-step moving average) and, with a gold scorer,
    gold_vs_kl.png (gold and proxy vs KL, points coloured by step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    panels = [("proxy_reward", "proxy reward", "tab:blue"), ("gold_reward", "gold reward", "tab:orange")]
    panels = [p for p in panels if p[0] in log[0]] + [("kl", "KL(policy || reference) per response", "tab:red")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title, colour) in zip(axes, panels, strict=True):
        values = [r[key] for r in log]
        ax.plot(steps, values, color=colour, alpha=0.3, linewidth=1)
        ax.plot(steps, moving_average(values), color=colour, linewidth=2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(output_dir / "reward_vs_step.png", dpi=110)
    plt.close(fig)
    if "gold_reward" not in log[0]:
        return
    kl = [r["kl"] for r in log]
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    points = ax.scatter(kl, [r["gold_reward"] for r in log], c=steps, cmap="viridis", s=14, label="gold")
    ax.plot(moving_average(kl), moving_average([r["gold_reward"] for r in log]), "-", color="black", linewidth=1.5)
    ax.set_xlabel("KL(policy || reference) per response")
    ax.set_ylabel("gold reward (solid: 5-step moving average)")
    proxy_ax = ax.twinx()
    proxy_ax.plot(moving_average(kl), moving_average([r["proxy_reward"] for r in log]), "--", color="grey")
    proxy_ax.set_ylabel("proxy reward (dashed, moving average)", color="grey")
    fig.colorbar(points, ax=proxy_ax, label="step", pad=0.15)
    ax.set_title("reward vs KL")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(output_dir / "gold_vs_kl.png", dpi=110)
    plt.close(fig)


def rollout_stats(
    ro: Rollout, mean: Callable[[torch.Tensor], float], gather: Callable[[torch.Tensor], torch.Tensor], kl_coef: float
) -> dict[str, float]:
    """A rollout's log record; `mean` averages over every process's responses, `gather` collects tensors from all."""
    mask = ro.batch.mask
    lengths = mask.sum(1)
    stats = {
        "proxy_reward": mean(ro.sequence_scores),
        "score_total": mean(ro.token_scores.sum(1)),  # what the policy is trained on (penalty, scale)
        "kl": mean(ro.kl.sum(1)),
        "kl_coef": kl_coef,
        "entropy": mean(ro.entropy.sum(1)) / max(mean(lengths), 1.0),
        "response_length": mean(lengths),
        "eos_rate": mean(ro.finished.float()),
        "return_mean": mean(ro.returns[:, 0]),
    }
    if ro.values is not None:
        stats["value_mean"] = mean(ro.values.sum(1)) / max(mean(lengths), 1.0)
        moments = explained_variance_moments(ro.values, ro.returns, mask)
        stats["value_explained_variance"] = explained_variance(gather(moments).view(-1, 5).sum(0))
    if ro.gold is not None:
        stats["gold_reward"] = mean(ro.gold)
    generate = ro.timings.get("generate_seconds", 0.0)
    stats["tokens_per_second"] = ro.timings.get("generated_tokens", 0.0) / generate if generate > 0 else 0.0
    stats |= {k: v for k, v in ro.timings.items() if k.endswith("_seconds")}
    return stats


def sample_rows(ro: Rollout, step: int, count: int) -> list[dict]:
    """The first `count` generations of a rollout, for samples.jsonl."""
    rows = []
    for i in range(min(count, len(ro.texts))):
        row = {
            "step": step,
            "prompt": ro.prompts[i],
            "response": ro.texts[i],
            "finished": bool(ro.finished[i]),
            "proxy_reward": float(ro.sequence_scores[i]),
        }
        if ro.gold is not None:
            row["gold_reward"] = float(ro.gold[i])
        rows.append(row)
    return rows


def save_policy(accelerator, model, policy, tokenizer, lora: bool, path: Path) -> None:
    """The trained policy with `save_pretrained` (LoRA: the adapter under adapter/, the merged model at `path`).
    `model` is the prepared PolicyAndCritic; call on every process (the state dict gathers ZeRO-3 shards)."""
    import copy

    state = accelerator.get_state_dict(model)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    tokenizer.save_pretrained(path)
    if lora:
        policy.save_pretrained(path / "adapter")
        merged = copy.deepcopy(policy).merge_and_unload()
        merged.save_pretrained(path)
    else:
        policy_state = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
        policy.save_pretrained(path, state_dict=policy_state)
    follow_umask(path)
