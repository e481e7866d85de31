"""Step 5 of the demo: sparse vs R3HF token rewards in the PPO family, where they can differ and where they cannot.

(a) critic-free RLOO with per-token returns and (b) PPO with a fresh critic, over seeds, each with a verdict on R3HF's
claim; (c) PPO with the reward-model critic, where r3hf with the potential-offset critic must reproduce sparse (the
shaping equivalence, measured). Every run starts from a copy of the base policy against one frozen reward model.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from rewardlab.demo.config import DemoConfig
from rewardlab.demo.stats import mean_std


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
    from rewardlab.rl.ppo import train_ppo
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
                ppo_cfg = ppo_run_config(cfg, comparison.algo, shaping, critic_init, seed, steps, run_dir, policy_path, rm_path)
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


def ppo_run_config(
    cfg: DemoConfig, algo: str, shaping: str, critic_init: str | None, seed: int, steps: int, run_dir: Path,
    policy_path: Path, rm_path: Path,
):  # fmt: skip
    """One PPO-family run of the demo (its trackers: the demo's `report_to`)."""
    from rewardlab.rl.ppo import PPOConfig

    return PPOConfig(
        policy=str(policy_path), reward_model=str(rm_path), reward_shaping=shaping, gold="builtin",
        output_dir=str(run_dir), algo=algo, critic_init=critic_init or "reward-model",
        steps=steps, batch_size=cfg.ppo_batch_size, minibatch_size=16, rloo_k=cfg.rloo_k, lr=cfg.ppo_lr,
        critic_lr=cfg.ppo_lr, kl_coef=cfg.ppo_kl_coef, max_new_tokens=16, seed=seed, save_policy=False,
        progress=cfg.progress, report_to=cfg.report_to,
    )  # fmt: skip


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
        out[key] = mean_std([r - s for s, r in zip(sparse[key]["values"], r3hf[key]["values"], strict=True)])
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
            "gold_initial": mean_std(initials),
            "gold_final": mean_std(finals),
            "gold_gain": mean_std([f - i for f, i in zip(finals, initials, strict=True)]),
            "gold_mean_gain": mean_std(mean_gains),  # the area under the learning curve: "learns faster" shows here
            "gold_final_sem": sum(e**2 for e in sems) ** 0.5 / len(sems),
            "kl_final": mean_std(kls),
            "proxy_final": mean_std(proxies),
        }
    return summary
