"""The demo's process-supervision step (issue 24): a process reward model against an outcome reward model, as best-of-N
selectors on the world's step tasks, judged by the world's gold reward.

On the base policy's backbone, per seed:
    prm   `train-rm --objective prm` on step-labelled solutions (TRL stepwise; half all-correct, half with one planted
          error), kept at its best step accuracy on validation solutions;
    orm   a plain reward model (`train-rm`, Bradley-Terry) on preference pairs of the same kind of tasks: the correct
          solution over one with a planted error, kept at its best pairwise accuracy on validation pairs.
Best-of-N: for each of `prm_bon_prompts` test_id step tasks, `prm_bon_n` sampled solutions (each step computed from the
solution's own previous line and made wrong with probability `prm_bon_error_rate`: `tasks.steps.sample_step_solutions`);
the PRM picks the solution whose weakest step is likeliest correct (`min` of P(step correct)), the ORM the one with the
highest reward; gold = the world's gold reward of the pick's final line. The two picks are compared per prompt, seed s's
PRM with seed s's ORM (`paired_stats.compare_paired_values`: a bootstrap interval over prompts, the t-interval over
seeds with several, the sign test on the prompts where the picks' gold differs).
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
    """The step data under out/steps: TRL stepwise and ProcessBench files of the train and validation splits (the
    PRM's), and preference pairs of the same splits (the ORM's)."""
    from rewardlab.runtime import write_jsonl
    from rewardlab.tasks.steps import step_preference_pairs, write_step_data

    sizes = {"train": cfg.prm_train, "validation": cfg.prm_val}
    paths = write_step_data(out, sizes=sizes, seed=0)
    for split, n in sizes.items():
        paths[f"{split}_pairs"] = out / f"{split}_pairs.jsonl"
        write_jsonl(paths[f"{split}_pairs"], step_preference_pairs(split, n, seed=0))
    return paths


def step_cells(cfg: DemoConfig) -> list[StepCell]:
    return [StepCell(kind, seed) for seed in range(cfg.seeds) for kind in ("prm", "orm")]


def step_cell_config(cfg: DemoConfig, policy_path: Path, paths: dict[str, Path], out: Path, cell: StepCell):
    """A cell's train-rm run: the demo reward models' settings (learning rate, batch, epochs, evaluation every
    `rm_eval_pairs` examples, early stopping, selection on validation), on step data (prm) or step pairs (orm)."""
    from rewardlab.train_rm import RewardTrainingConfig

    prm = cell.kind == "prm"
    n = cfg.prm_train
    eval_steps = max(1, min(math.ceil(n / cfg.rm_batch_size), round(cfg.rm_eval_pairs / cfg.rm_batch_size)))
    train, val = ("train_stepwise", "validation_processbench") if prm else ("train_pairs", "validation_pairs")
    return RewardTrainingConfig(
        model=str(policy_path), objective="prm" if prm else "preference", train_data=str(paths[train]),
        eval_data=[f"val={paths[val]}"], output_dir=str(out / cell.dir_name), learning_rate=cfg.rm_lr,
        per_device_train_batch_size=cfg.rm_batch_size, num_train_epochs=cfg.rm_epochs, seed=cell.seed, logging_steps=10,
        progress=False, max_length=256, eval_steps=eval_steps, select_best_on="val",
        early_stopping_patience=cfg.rm_patience, report_to=cfg.report_to, norm_samples=DEMO_NORM_SAMPLES,
    )  # fmt: skip


def step_jobs(cfg: DemoConfig, policy_path: Path, out: Path) -> list[tuple[StepCell, object, None]]:
    """The step data written and every cell's (cell, config, no preloaded data) job for `rewardlab.study.run_cell`."""
    paths = write_step_files(cfg, out / "data")
    return [(cell, step_cell_config(cfg, policy_path, paths, out, cell), None) for cell in step_cells(cfg)]


def run_process_supervision(cfg: DemoConfig, policy_path: Path, out: Path) -> dict:
    """The step: the data and every cell trained under `out` (in this process, one after another: the demo runs it
    beside PPO's worker processes), then `prm_best_of_n`."""
    from rewardlab.progress import progress
    from rewardlab.study import run_cell
    from rewardlab.workers import run_jobs

    jobs = step_jobs(cfg, policy_path, out)
    results: dict[StepCell, dict] = {}
    bar = progress(total=len(jobs), desc="process supervision", enabled=cfg.progress)

    def done(cell: StepCell, result: dict) -> None:
        results[cell] = result
        bar.update(1)

    run_jobs(jobs, 1, done, run_cell)
    bar.close()
    return prm_best_of_n(cfg, out, results)


def prm_best_of_n(cfg: DemoConfig, out: Path, results: dict) -> dict:
    """results.json's `prm`: each cell's validation figures, and the paired best-of-N comparison (module docstring).
    `results`: StepCell -> `run_cell`'s result."""
    import json

    import numpy as np

    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.paired_stats import compare_paired_values
    from rewardlab.rl.bon_math import picked_gold
    from rewardlab.rl.scorers import RewardModelScorer, StepScorer
    from rewardlab.tasks.steps import STEP_SEPARATOR, join_steps, make_step_tasks, outcome_gold, sample_step_solutions

    n = cfg.prm_bon_n
    tasks = make_step_tasks("test_id", cfg.prm_bon_prompts, seed=1)
    candidates = sample_step_solutions(tasks, n, cfg.prm_bon_error_rate, seed=0)
    prompts = [task.prompt_text + STEP_SEPARATOR for task in tasks for _ in range(n)]
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
