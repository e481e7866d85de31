"""The demo's process-supervision step (issue 24): a process reward model against an outcome reward model, as best-of-N
selectors and as PPO's reward, on the world's step tasks, judged by the world's gold reward.

The step policy: the demo's base policy warm-started for `step_policy_steps` steps on a mix of the world's tasks and
step tasks (`BasePolicyConfig.with_steps(warm_start_steps=...)`, cached). On its backbone, per seed:
    prm   `train-rm --objective prm` on step-labelled solutions (TRL stepwise; half all-correct, half with one planted
          error), kept at its lowest step cross-entropy on validation solutions;
    orm   a plain reward model (`train-rm`, Bradley-Terry) on preference pairs of the same kind of tasks: the correct
          solution over one with a planted error, kept at its best pairwise accuracy on validation pairs.
Best-of-N: for each of `prm_bon_prompts` test_id step tasks, `prm_bon_n` sampled solutions (each step computed from the
solution's own previous line and made wrong with probability `prm_bon_error_rate`: `tasks.steps.sample_step_solutions`);
the PRM picks the solution whose weakest step is likeliest correct (`min` of P(step correct)), the ORM the one with the
highest reward; gold = the world's gold reward of the pick's final line. The two picks are compared per prompt, seed s's
PRM with seed s's ORM (`paired_stats.compare_paired_values`: a bootstrap interval over prompts, the t-interval over
seeds with several, the sign test on the prompts where the picks' gold differs).
PPO: from the step policy, per seed, PPO with the PRM's step rewards (`--reward-shaping step`: sigmoid(s_k) - 1/2 at each
step's last token) against PPO with the outcome RM's sparse reward (R(x, y) at the last token), both with a fresh critic
and the same prompts, steps and seed; judged on held-out step tasks (test_id) by the outcome gold, at the final
checkpoint and at matched KL, paired by seed (`demo.ppo_comparisons`' held-out contrasts: a t-interval over seeds, none
with one seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rewardlab.demo.config import DemoConfig
from rewardlab.demo.reward_models import DEMO_NORM_SAMPLES

STEP_AGGREGATE = "min"  # the PRM's ranking score: its weakest step (ProcessBench's and Lightman et al.'s common choice)


@dataclass(frozen=True)
class StepCell:
    """One model of the process-supervision step: `kind` prm or orm, at a seed."""

    kind: str
    seed: int

    @property
    def dir_name(self) -> str:
        return f"{self.kind}-s{self.seed}"


def write_step_files(cfg: DemoConfig, out: Path) -> dict[str, Path]:
    """The step data under `out` (the demo's out/prm/data): TRL stepwise files of the train and validation splits (the
    PRM's), and preference pairs of the same splits (the ORM's), in chat form: the prompt a user message and the steps
    the assistant's turn, as the step policy writes them (so both models read in PPO what they were trained on)."""
    from rewardlab.runtime import write_jsonl
    from rewardlab.tasks.steps import step_preference_pairs, write_step_data

    sizes = {"train": cfg.prm_train, "validation": cfg.prm_val}
    paths = write_step_data(out, sizes=sizes, seed=0, chat=True)
    for split, n in sizes.items():
        paths[f"{split}_pairs"] = out / f"{split}_pairs.jsonl"
        write_jsonl(paths[f"{split}_pairs"], step_preference_pairs(split, n, seed=0, chat=True))
    return paths


def step_cells(cfg: DemoConfig) -> list[StepCell]:
    return [StepCell(kind, seed) for seed in range(cfg.seeds) for kind in ("prm", "orm")]


def step_cell_config(cfg: DemoConfig, policy_path: Path, paths: dict[str, Path], out: Path, cell: StepCell):
    """A cell's train-rm run: the demo reward models' settings (learning rate, batch, epochs, evaluation every
    `rm_eval_pairs` examples, early stopping, selection on validation), on step data (prm) or step pairs (orm). The PRM
    is kept at its lowest validation loss: its thresholded step accuracy sits at the share of correct steps until the
    head learns to call a step wrong, so selecting (and stopping) on it ended quick-size runs before they learnt."""
    from rewardlab.train_rm import RewardTrainingConfig

    prm = cell.kind == "prm"
    n = cfg.prm_train
    eval_steps = max(1, min(math.ceil(n / cfg.rm_batch_size), round(cfg.rm_eval_pairs / cfg.rm_batch_size)))
    train, val = ("train_stepwise", "validation_stepwise") if prm else ("train_pairs", "validation_pairs")
    return RewardTrainingConfig(
        model=str(policy_path), objective="prm" if prm else "preference", train_data=str(paths[train]),
        eval_data=[f"val={paths[val]}"], output_dir=str(out / cell.dir_name), learning_rate=cfg.rm_lr,
        per_device_train_batch_size=cfg.rm_batch_size, num_train_epochs=cfg.rm_epochs, seed=cell.seed, logging_steps=10,
        progress=False, max_length=256, eval_steps=eval_steps, select_best_on="val",
        select_metric="loss" if prm else "accuracy", early_stopping_patience=cfg.rm_patience, report_to=cfg.report_to,
        norm_samples=DEMO_NORM_SAMPLES,
    )  # fmt: skip


def step_jobs(cfg: DemoConfig, policy_path: Path, out: Path) -> list[tuple[StepCell, object, None]]:
    """The step data written and every cell's (cell, config, no preloaded data) job for `rewardlab.study.run_cell`."""
    paths = write_step_files(cfg, out / "data")
    return [(cell, step_cell_config(cfg, policy_path, paths, out, cell), None) for cell in step_cells(cfg)]


def step_policy_config(cfg: DemoConfig):
    """The demo's step policy: its base policy warm-started on step tasks for `step_policy_steps` steps."""
    return cfg.base_policy_config().with_steps(warm_start_steps=cfg.step_policy_steps)


def step_policy_path(cfg: DemoConfig, threads: int | None = None, progress: bool = False) -> Path:
    """The step policy's directory, its warm start run first where it is not cached yet (on `threads` torch threads)."""
    from rewardlab.tasks.policy import get_base_policy

    return get_base_policy(step_policy_config(cfg), progress=progress, threads=threads)[2]


def warm_start_step_policy(cfg: DemoConfig) -> Path:
    """The step policy cached (`step_policy_path`): with worker processes, in a spawned process on one torch thread, so
    that it can run beside the demo's other single-threaded work (the demo starts it as soon as the base policy is
    there); else here."""
    from rewardlab.workers import run_in_process

    if cfg.workers > 1:
        return run_in_process(step_policy_path, cfg, 1)  # no bar: the parent's bars are showing
    return step_policy_path(cfg, progress=cfg.progress)


def run_process_supervision(cfg: DemoConfig, out: Path) -> tuple[dict, dict[str, list[list[dict]]]]:
    """The step: the step policy (cached), the data and every cell trained under `out` (in `cfg.workers` processes),
    `prm_best_of_n`, then `step_ppo`. Returns (results.json's `prm`, the PPO runs' logs by arm)."""
    from rewardlab.progress import progress
    from rewardlab.study import run_cell
    from rewardlab.tasks.policy import evaluate_steps, get_base_policy
    from rewardlab.workers import run_jobs

    policy_cfg = step_policy_config(cfg)
    model, tokenizer, policy_path = get_base_policy(policy_cfg, progress=cfg.progress)
    step_policy = {
        "path": str(policy_path), "warm_start_steps": policy_cfg.warm_start_steps, "step_share": policy_cfg.step_share,
        **{f"gold_{split}": evaluate_steps(model, tokenizer, f"test_{split}", 256) for split in ("id", "ood")},
    }  # fmt: skip
    jobs = step_jobs(cfg, policy_path, out)
    results: dict[StepCell, dict] = {}
    bar = progress(total=len(jobs), desc="process supervision", enabled=cfg.progress)

    def done(cell: StepCell, result: dict) -> None:
        results[cell] = result
        bar.update(1)

    run_jobs(jobs, cfg.workers, done, run_cell)
    bar.close()
    result = {"step_policy": step_policy} | prm_best_of_n(cfg, out, results)
    result["ppo"], logs = step_ppo(cfg, (model, tokenizer), policy_path, out)
    return result, logs


def prm_best_of_n(cfg: DemoConfig, out: Path, results: dict) -> dict:
    """results.json's `prm`: each cell's validation figures, and the paired best-of-N comparison (module docstring).
    `results`: StepCell -> `run_cell`'s result."""
    import json

    import numpy as np

    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.paired_stats import compare_paired_values
    from rewardlab.rl.bon_math import picked_gold
    from rewardlab.rl.scorers import RewardModelScorer, StepScorer
    from rewardlab.tasks.steps import join_steps, make_step_tasks, outcome_gold, sample_step_solutions

    n = cfg.prm_bon_n
    tasks = make_step_tasks("test_id", cfg.prm_bon_prompts, seed=1)
    candidates = sample_step_solutions(tasks, n, cfg.prm_bon_error_rate, seed=0)
    prompts = [task.messages for task in tasks for _ in range(n)]  # chat, as the models were trained
    responses = [join_steps(steps) for solutions in candidates for steps in solutions]
    gold = np.array([[outcome_gold(t, steps) for steps in solutions] for t, solutions in zip(tasks, candidates, strict=True)])
    picks: dict[str, list[np.ndarray]] = {"prm": [], "orm": []}
    for cell in step_cells(cfg):
        model = load_reward_model(out / cell.dir_name)
        scorer = StepScorer(model, "prm", STEP_AGGREGATE) if cell.kind == "prm" else RewardModelScorer(model)
        proxy = np.asarray(scorer.score(prompts, responses), dtype=np.float64).reshape(gold.shape)
        picks[cell.kind].append(picked_gold(proxy, gold, n))
    comparison = compare_paired_values(np.stack(picks["prm"]), np.stack(picks["orm"]), measure="gold").as_dict()
    validation = {}
    for cell in step_cells(cfg):
        metrics = json.loads((out / cell.dir_name / "metrics.json").read_text())["eval"]["val"]
        entry = {"accuracy": metrics["accuracy"], "steps_trained": results[cell]["steps"]}
        if cell.kind == "prm":
            entry["first_error_f1"] = metrics["processbench"]["average_f1"]
        validation.setdefault(cell.kind, []).append(entry)
    return {
        "validation": validation,
        "bon": {
            "a": "prm", "b": "orm", "n": n, "n_prompts": len(tasks), "error_rate": cfg.prm_bon_error_rate,
            "prm_aggregate": STEP_AGGREGATE, "gold_random": float(gold.mean()), "gold_oracle": float(gold.max(axis=1).mean()),
            "what": "gold of the best-of-n pick, a minus b, per prompt", **comparison,
        },
    }  # fmt: skip


# ----- PPO: the PRM's step rewards against the outcome RM's sparse reward -----

STEP_PPO_ARMS = (("step", "prm"), ("sparse", "orm"))  # (reward_shaping, the cell whose model gives the reward)
STEP_PPO_CRITIC = "fresh"  # the same start for both arms' critics (a PRM's and an outcome RM's heads read differently)
STEP_PPO_QUESTION = (
    "PPO from the step policy with the PRM's step rewards (sigmoid(s_k) - 1/2 at each step's end) vs with the outcome "
    "RM's sparse reward, both with a fresh critic: does process supervision train a better policy?"
)


def step_ppo_config(cfg: DemoConfig, policy_path: Path, rm_dir: Path, shaping: str, seed: int, run_dir: Path):
    """One PPO run on the step tasks: the demo's PPO settings (learning rate, KL coefficient, held-out evaluation) at
    `step_ppo_steps` steps of `step_ppo_batch_size` step-task prompts, answers up to STEP_MAX_NEW_TOKENS long."""
    from rewardlab.rl.ppo_config import PPOConfig
    from rewardlab.tasks.policy import STEP_MAX_NEW_TOKENS

    return PPOConfig(
        policy=str(policy_path), reward_model=str(rm_dir), reward_shaping=shaping, gold="builtin-steps",
        prompts="builtin-steps:train", output_dir=str(run_dir), algo="ppo", critic_init=STEP_PPO_CRITIC,
        steps=cfg.step_ppo_steps, batch_size=cfg.step_ppo_batch_size, minibatch_size=16, lr=cfg.ppo_lr,
        critic_lr=cfg.ppo_lr, kl_coef=cfg.ppo_kl_coef, max_new_tokens=STEP_MAX_NEW_TOKENS, seed=seed,
        save_policy=False, progress=cfg.progress, report_to=cfg.report_to,
        eval_prompts="builtin-steps:test_id", eval_limit=cfg.ppo_eval_prompts, eval_every=cfg.ppo_eval_every,
    )  # fmt: skip


def step_ppo(cfg: DemoConfig, policy: tuple, policy_path: Path, out: Path) -> tuple[dict, dict]:
    """Both arms at every PPO seed (seed-major), each from a copy of the step policy (`policy`: model, tokenizer), in
    `cfg.workers` processes (which load it from `policy_path`); returns (results.json's `prm.ppo`, the logs by arm, one
    per seed)."""
    from dataclasses import replace

    from rewardlab.demo.ppo_comparisons import ppo_components, run_ppo_job
    from rewardlab.workers import run_jobs

    runs = [(shaping, kind, seed) for seed in range(cfg.ppo_seeds) for shaping, kind in STEP_PPO_ARMS]
    parallel = cfg.workers > 1 and len(runs) > 1
    jobs = []
    for shaping, kind, seed in runs:
        rm_dir = out / StepCell(kind, seed).dir_name
        run_cfg = step_ppo_config(cfg, policy_path, rm_dir, shaping, seed, out / "ppo" / f"{shaping}-s{seed}")
        shared = None if parallel else ppo_components(policy, rm_dir, run_cfg.gold)
        jobs.append(((shaping, seed), replace(run_cfg, progress=run_cfg.progress and not parallel), shared))
    done: dict[tuple[str, int], dict] = {}
    run_jobs(jobs, cfg.workers, done.__setitem__, run_ppo_job)
    logs: dict[str, list[list[dict]]] = {}
    for shaping, _, seed in runs:
        logs.setdefault(shaping, []).append(done[shaping, seed]["log"])
    return summarise_step_ppo(logs, sum(result["seconds"] for result in done.values())), logs


def summarise_step_ppo(logs: dict[str, list[list[dict]]], seconds: float | None = None) -> dict:
    """`prm.ppo`: the arms (training-rollout figures and held-out gold, as the demo's other PPO comparisons report them)
    and `paired`: step - sparse on held-out gold, at the final checkpoint and at each KL both arms reach
    (`ppo_comparisons.paired_held_out`)."""
    from rewardlab.demo.ppo_comparisons import (
        common_kl_grid,
        eval_rows,
        paired_held_out,
        summarise_held_out,
        summarise_ppo,
        training_rows,
    )

    by_arm = summarise_ppo({arm: [training_rows(log) for log in seed_logs] for arm, seed_logs in logs.items()})
    first = next(iter(logs.values()))
    grid = common_kl_grid([[r["kl"] for r in eval_rows(log)] for seed_logs in logs.values() for log in seed_logs])
    held_out = {arm: summarise_held_out(seed_logs, grid) for arm, seed_logs in logs.items()}
    kinds = dict(STEP_PPO_ARMS)
    return {
        "algo": "ppo", "question": STEP_PPO_QUESTION, "kind": "verdict", "seeds": len(first),
        "steps": len(training_rows(first[0])) - 1, "seconds": seconds, "kl_grid": grid,
        "arms": [
            {"arm": arm, "algo": "ppo", "shaping": arm, "critic_init": STEP_PPO_CRITIC, "reward_model": kinds[arm],
             **by_arm[arm], "held_out": held_out[arm], "gold_at_kl": held_out[arm]["gold_at_kl"]}
            for arm in logs
        ],
        "paired": {"step - sparse": paired_held_out(held_out["step"], held_out["sparse"])},
    }  # fmt: skip
