"""Step 5 of the demo: sparse vs R3HF token rewards in the PPO family, where they can differ and where they cannot.

(a) critic-free RLOO with per-token returns (rewardlab's construction: standard RLOO scores the whole sequence, which
cancels the redistribution) and (b) PPO with a fresh critic, over seeds; (c) PPO with the reward-model critic, where r3hf
with the potential-offset critic must reproduce sparse (the shaping equivalence, measured). Every run starts from a copy
of the base policy against one frozen reward model.

(a) and (b) each also hold the baseline users run: sparse PPO with the reward-model critic (`critic_init` reward-model,
the default), in the same seeds and steps (one run per seed, shared by both). Every run is evaluated on held-out prompts
(the world's test_id split, never trained on) at fixed checkpoints (`rewardlab.rl.ppo`'s eval rows), and the arms are
compared on those: at the final step and at matched KL (each run's held-out gold interpolated at KL values every run
reaches, `gold_at_kl`), as per-seed paired differences with a t-interval over seeds and a verdict
(`rewardlab.paired_stats`); with one seed there is no interval and no verdict.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rewardlab.demo.config import DemoConfig
from rewardlab.demo.stats import mean_std
from rewardlab.paired_stats import LEVEL, t_interval
from rewardlab.paired_stats import verdict as interval_verdict
from rewardlab.progress import progress

# the baseline users run: sparse PPO with the reward-model critic (rewardlab ppo's default critic_init)
BASELINE = "baseline"
BASELINE_ARM = ("ppo", "sparse", "reward-model")
ONE_SEED = "one seed: not distinguishable at this size"
KL_FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # the common KL values: these fractions of the smallest KL every run reaches
PER_TOKEN_RLOO = (
    "rewardlab's per-token RLOO: each token's return G_t = sum of the rewards from t on, minus the leave-one-out mean; "
    "not standard RLOO, which scores the whole sequence and so cancels any redistribution"
)


@dataclass(frozen=True)
class PPOComparison:
    """Two PPO-family runs per seed that differ in the token rewards (and, for the equivalence check, the critic)."""

    name: str
    algo: str
    arms: tuple[tuple[str, str | None], ...]  # (shaping, critic_init); critic_init None: no critic
    question: str
    kind: str  # "verdict": seeds, spread and a verdict on R3HF's claim; "equivalence": the two runs must coincide
    note: str | None = None  # how the algorithm is built, when it is not the standard one

    @property
    def with_baseline(self) -> bool:
        """Verdict comparisons also run the baseline users run (sparse PPO, reward-model critic) in the same seeds."""
        return self.kind == "verdict"


PPO_COMPARISONS = (
    PPOComparison(
        "critic-free", "rloo", (("sparse", None), ("r3hf", None)),
        "RLOO with per-token returns (rewardlab's construction), no critic: r3hf's prefix score R(x, y<t) acts as a "
        "per-token baseline",
        "verdict", PER_TOKEN_RLOO,
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


def ppo_run_name(name: str, shaping: str, seed: int) -> str:
    """The directory of one demo PPO run under out/ppo: `<comparison or baseline>-<shaping>-s<seed>`."""
    return f"{name}-{shaping}-s{seed}"


def run_ppo_comparisons(
    cfg: DemoConfig, out: Path, policy: tuple, policy_path: Path, rm_path: Path
) -> tuple[dict, dict[str, dict[str, list[list[dict]]]]]:
    """Every PPO_COMPARISONS run from a copy of the base policy against one frozen reward model, in `cfg.workers`
    processes (`rewardlab study`'s runner); returns (the results entry, the logs by comparison and arm (its shaping, or
    BASELINE), one per seed: metrics.jsonl's rows, training and eval). The baseline's runs (sparse PPO, reward-model
    critic) are made once per seed and shared."""
    from rewardlab.workers import run_jobs

    runs: dict[tuple, Any] = {}  # (algo, shaping, critic_init, seed, steps) -> its PPOConfig, in the order they are made
    plan: list[tuple[str, str, tuple]] = []  # (comparison, arm, run key)
    for comparison in PPO_COMPARISONS:
        verdict_runs = comparison.kind == "verdict"
        seeds, steps = (cfg.ppo_seeds, cfg.ppo_steps) if verdict_runs else (1, cfg.ppo_check_steps)
        for seed in range(seeds):  # seed-major, so an interrupted run still holds paired seeds
            arms = [(shaping, (comparison.algo, shaping, critic), comparison.name) for shaping, critic in comparison.arms]
            if comparison.with_baseline:
                arms.append((BASELINE, BASELINE_ARM, BASELINE))
            for arm, (algo, shaping, critic_init), name in arms:
                key = (algo, shaping, critic_init, seed, steps)
                if key not in runs:
                    run_dir = out / ppo_run_name(name, shaping, seed)
                    runs[key] = ppo_run_config(cfg, algo, shaping, critic_init, seed, steps, run_dir, policy_path, rm_path)
                plan.append((comparison.name, arm, key))
    parallel = cfg.workers > 1 and len(runs) > 1
    shared = None if parallel else ppo_components(policy, rm_path)  # one process: load the models once for every run
    done: dict[tuple, list[dict]] = {}
    seconds: dict[tuple, float] = {}
    bar = progress(total=len(runs), desc="PPO runs", enabled=cfg.progress and parallel)

    def finished(key: tuple, result: dict) -> None:
        done[key], seconds[key] = result["log"], result["seconds"]
        bar.update(1)

    jobs = [(key, replace(ppo_cfg, progress=ppo_cfg.progress and not parallel), shared) for key, ppo_cfg in runs.items()]
    run_jobs(jobs, cfg.workers, finished, run_ppo_job)
    bar.close()
    logs: dict[str, dict[str, list[list[dict]]]] = {}
    for name, arm, key in plan:
        logs.setdefault(name, {}).setdefault(arm, []).append(done[key])
    per_comparison = {c.name: sum(seconds[key] for name, _, key in set(plan) if name == c.name) for c in PPO_COMPARISONS}
    return summarise_ppo_comparisons(logs, per_comparison), logs


def ppo_components(policy: tuple | None, rm_path: Path, world: str = "builtin") -> dict:
    """What every demo PPO run reads besides its config: the base policy (model, tokenizer; None: loaded from the
    config's path), the frozen reward model, the gold of the world's tasks (`builtin`, or `builtin-steps`: the step
    tasks) and their training prompts."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.rl.scorers import resolve_scorer
    from rewardlab.rl.sources import resolve_prompts

    return {
        "policy": policy,
        "reward_model": load_reward_model(rm_path),  # frozen during PPO (the critic is a copy)
        "gold": resolve_scorer(world),
        "prompts": resolve_prompts(f"{world}:train", limit=1024),
    }


def run_ppo_job(ppo_cfg: Any, shared: dict | None) -> dict:
    """One PPO-family run (a worker's task: module-level, so a spawned process can run it): from a copy of the base
    policy, with the models in `shared` (None: loaded here). Returns its metrics.jsonl rows and its seconds."""
    from rewardlab.rl.ppo import train_ppo

    t0 = time.perf_counter()
    components = dict(shared) if shared is not None else ppo_components(None, Path(ppo_cfg.reward_model), ppo_cfg.gold)
    if components["policy"] is None:
        del components["policy"]  # PPOTrainer loads it from ppo_cfg.policy
    else:
        model, tokenizer = components["policy"]
        components["policy"] = (copy.deepcopy(model), tokenizer)  # PPO trains its policy in place
    train_ppo(ppo_cfg, **components)
    log = [json.loads(line) for line in (Path(ppo_cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    return {"log": log, "seconds": time.perf_counter() - t0}


def ppo_run_config(
    cfg: DemoConfig, algo: str, shaping: str, critic_init: str | None, seed: int, steps: int, run_dir: Path,
    policy_path: Path, rm_path: Path,
):  # fmt: skip
    """One PPO-family run of the demo (its trackers: the demo's `report_to`), evaluated on `ppo_eval_prompts` held-out
    test_id prompts every `ppo_eval_every` steps."""
    from rewardlab.rl.ppo_config import PPOConfig

    return PPOConfig(
        policy=str(policy_path), reward_model=str(rm_path), reward_shaping=shaping, gold="builtin",
        output_dir=str(run_dir), algo=algo, critic_init=critic_init or "reward-model",
        steps=steps, batch_size=cfg.ppo_batch_size, minibatch_size=16, rloo_k=cfg.rloo_k, lr=cfg.ppo_lr,
        critic_lr=cfg.ppo_lr, kl_coef=cfg.ppo_kl_coef, max_new_tokens=16, seed=seed, save_policy=False,
        progress=cfg.progress, report_to=cfg.report_to,
        eval_prompts="builtin:test_id", eval_limit=cfg.ppo_eval_prompts, eval_every=cfg.ppo_eval_every,
    )  # fmt: skip


def training_rows(log: list[dict]) -> list[dict]:
    """A run's training rows (metrics.jsonl rows without a `kind`)."""
    return [r for r in log if "kind" not in r]


def eval_rows(log: list[dict]) -> list[dict]:
    """A run's held-out evaluation rows (kind eval), in step order."""
    return sorted((r for r in log if r.get("kind") == "eval"), key=lambda r: r["step"])


def arm_descriptors(comparison: PPOComparison) -> list[tuple[str, str, str, str | None]]:
    """(arm, algo, shaping, critic_init) of each arm: the comparison's own arms (named by their shaping), then the
    baseline where it has one."""
    arms = [(shaping, comparison.algo, shaping, critic_init) for shaping, critic_init in comparison.arms]
    return arms + ([(BASELINE, *BASELINE_ARM)] if comparison.with_baseline else [])


def summarise_ppo_comparisons(logs: dict[str, dict[str, list[list[dict]]]], seconds: dict[str, float] | None = None) -> dict:
    """results.json's `ppo`: per comparison its algo, question and kind, one entry per arm (arm, algo, shaping,
    critic_init, `summarise_ppo`'s figures on the training rollouts and `held_out`'s on the evaluation prompts), and
    - verdict kind: `r3hf_minus_sparse` (training rollouts, descriptive), the common KL values `kl_grid` and `paired`:
      r3hf - sparse, r3hf - baseline and sparse - baseline on held-out gold, at the final step and at each common KL
      (`contrast`: per-seed differences, t-interval, verdict);
    - equivalence kind: the coincidence of the two logs."""
    summary = {}
    for comparison in PPO_COMPARISONS:
        if comparison.name not in logs:
            continue
        runs = logs[comparison.name]
        train_runs = {arm: [training_rows(log) for log in seed_logs] for arm, seed_logs in runs.items()}
        by_arm = summarise_ppo(train_runs)
        first = next(iter(train_runs.values()))
        entry: dict = {
            "algo": comparison.algo,
            "question": comparison.question,
            "kind": comparison.kind,
            "seeds": len(first),
            "steps": len(first[0]) - 1,
            "seconds": (seconds or {}).get(comparison.name),
        }
        if comparison.note:
            entry["construction"] = comparison.note
        present = [a for a in arm_descriptors(comparison) if a[0] in runs]
        evaluated = all(eval_rows(log) for arm, *_ in present for log in runs[arm])
        kls = [[r["kl"] for r in eval_rows(log)] for arm, *_ in present for log in runs[arm]]
        grid = common_kl_grid(kls) if evaluated else []
        held_out = {arm: summarise_held_out(runs[arm], grid) for arm, *_ in present} if evaluated else {}
        entry["arms"] = [
            {"arm": arm, "algo": algo, "shaping": shaping, "critic_init": critic_init, **by_arm[arm]}
            | ({"held_out": held_out[arm], "gold_at_kl": held_out[arm]["gold_at_kl"]} if evaluated else {})
            | ({"role": "baseline: sparse PPO with the reward-model critic (the default users run)"} if arm == BASELINE else {})
            for arm, algo, shaping, critic_init in present
        ]
        if comparison.kind == "verdict":
            entry["r3hf_minus_sparse"] = paired_difference(by_arm["sparse"], by_arm["r3hf"])
            if evaluated:
                entry["kl_grid"] = grid
                entry["paired"] = {
                    f"{a} - {b}": paired_held_out(held_out[a], held_out[b])
                    for a, b in (("r3hf", "sparse"), ("r3hf", BASELINE), ("sparse", BASELINE))
                    if a in held_out and b in held_out
                }
        else:
            entry["coincidence"] = coincidence(train_runs["sparse"][0], train_runs["r3hf"][0])
            # The reward-model critic IS the prefix score at step 0: how well R(x, y<t) predicts the return there says
            # whether it can serve as a per-token baseline (negative: worse than a constant, so it adds variance).
            entry["prefix_score_explained_variance"] = train_runs["sparse"][0][0].get("value_explained_variance")
        summary[comparison.name] = entry
    return summary


# ----- held-out evaluation: matched KL and paired contrasts (pure functions) -----


def gold_at_kl(kl: list[float], gold: list[float], targets: list[float]) -> list[float | None]:
    """Gold at each target KL along one run, from its checkpoints in step order (`kl[k]`, `gold[k]`): linear between the
    two checkpoints where the run first reaches the target (the first segment [kl_k, kl_k+1] holding it, whichever way
    the KL moves); None where the run never reaches it (no extrapolation)."""
    if len(kl) != len(gold):
        raise ValueError(f"{len(kl)} KL values but {len(gold)} gold values")
    out: list[float | None] = []
    for target in targets:
        value = gold[0] if kl and kl[0] == target else None
        for k in range(len(kl) - 1):
            if value is not None:
                break
            a, b = kl[k], kl[k + 1]
            if min(a, b) <= target <= max(a, b):
                value = gold[k] if a == b else gold[k] + (gold[k + 1] - gold[k]) * (target - a) / (b - a)
        out.append(value)
    return out


def common_kl_grid(kls: list[list[float]], fractions: tuple[float, ...] = KL_FRACTIONS) -> list[float]:
    """KL values every run reaches: `fractions` of the smallest, over the runs, of the largest KL a run reached (none
    when some run never moved from its reference)."""
    reach = min((max(kl) for kl in kls if kl), default=0.0)
    return [f * reach for f in fractions] if reach > 0 else []


def summarise_held_out(seed_logs: list[list[dict]], grid: list[float]) -> dict:
    """One arm on the held-out prompts, per seed and over seeds: the checkpoints' steps, gold at the first and the final
    checkpoint and its gain, the final KL, and `gold_at_kl` (gold at each common KL: per seed and their mean)."""
    per_seed = [eval_rows(log) for log in seed_logs]
    at_kl = [gold_at_kl([r["kl"] for r in rows], [r["gold_reward"] for r in rows], grid) for rows in per_seed]
    return {
        "steps": [r["step"] for r in per_seed[0]],
        "n_prompts": per_seed[0][0].get("n_prompts"),
        "gold": [[r["gold_reward"] for r in rows] for rows in per_seed],
        "kl": [[r["kl"] for r in rows] for rows in per_seed],
        "gold_initial": mean_std([rows[0]["gold_reward"] for rows in per_seed]),
        "gold_final": mean_std([rows[-1]["gold_reward"] for rows in per_seed]),
        "gold_gain": mean_std([rows[-1]["gold_reward"] - rows[0]["gold_reward"] for rows in per_seed]),
        "kl_final": mean_std([rows[-1]["kl"] for rows in per_seed]),
        "gold_at_kl": {
            "kl": grid,
            "per_seed": at_kl,
            "mean": [statistics.fmean(v) if None not in (v := [s[i] for s in at_kl]) else None for i in range(len(grid))],
        },
    }


def contrast(values: list[float], level: float = LEVEL) -> dict:
    """Per-seed paired differences: their mean, the t-interval over seeds and the verdict at `level` (`better` /
    `worse` when the interval excludes zero, else not distinguishable); with one seed there is no interval and the
    verdict is ONE_SEED."""
    mean, low, high = t_interval(values, level)
    out = {"diff": mean, "per_seed": values, "ci_low": None, "ci_high": None, "n_seeds": len(values), "level": level}
    if len(values) < 2:
        return out | {"verdict": ONE_SEED}
    # no McNemar here (gold is no pairwise credit): p = 0 lets the t-interval decide
    return out | {"ci_low": low, "ci_high": high, "verdict": interval_verdict(low, high, 0.0, level)}


def paired_held_out(a: dict, b: dict) -> dict:
    """Arm a minus arm b on the held-out prompts, seed by seed: gold at the final checkpoint (`final`), its gain over
    the first (`gain`) and gold at each common KL (`at_kl`, in `kl`'s order; the last is the largest KL every run
    reached)."""
    seeds = range(min(len(a["gold"]), len(b["gold"])))
    final = [a["gold"][s][-1] - b["gold"][s][-1] for s in seeds]
    gain = [(a["gold"][s][-1] - a["gold"][s][0]) - (b["gold"][s][-1] - b["gold"][s][0]) for s in seeds]
    at_kl = [
        contrast([a["gold_at_kl"]["per_seed"][s][i] - b["gold_at_kl"]["per_seed"][s][i] for s in seeds])
        for i in range(len(a["gold_at_kl"]["kl"]))
    ]
    return {"final": contrast(final), "gain": contrast(gain), "kl": a["gold_at_kl"]["kl"], "at_kl": at_kl}


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
    """On the training rollouts, per arm (shaping or BASELINE): initial and final gold / proxy reward and KL, mean and
    spread over seeds (final = mean of the last quarter of steps, to smooth rollout noise; `gold_mean_gain` = mean gold
    over the steps after 0, minus step 0's). `gold_final_sem` is the batch-to-batch noise of the final figure (the
    spread of the tail's batch means / sqrt(steps), combined over seeds): descriptive only, since successive steps are
    not independent and the rollouts are training prompts; the verdicts read the held-out evaluation instead."""
    summary = {}
    for shaping, logs in runs.items():
        logs = [training_rows(log) for log in logs]
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
