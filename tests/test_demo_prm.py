"""The demo's process-supervision step (demo.prm): a PRM and an outcome RM trained a few steps on the world's step data,
then their best-of-N picks compared on gold; the comparison recomputed here by hand from the scorers' own scores."""

import numpy as np
import pytest

from rewardlab.demo.config import DemoConfig
from rewardlab.demo.prm import prm_best_of_n, step_cells, step_jobs
from rewardlab.modeling.loader import load_reward_model
from rewardlab.rl.scorers import RewardModelScorer, StepScorer
from rewardlab.study import run_cell
from rewardlab.tasks.steps import STEP_SEPARATOR, join_steps, make_step_tasks, outcome_gold, sample_step_solutions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prm_and_outcome_rm_picks_are_compared_paired_on_gold(tmp_path):
    cfg = DemoConfig.make(quick=True)
    cfg.prm_train, cfg.prm_val, cfg.prm_bon_n, cfg.prm_bon_prompts, cfg.rm_epochs = 64, 16, 4, 12, 1.0
    jobs = step_jobs(cfg, "tiny-llama", tmp_path)  # the model: any causal LM (the demo passes the base policy)
    results = {cell: run_cell(run_cfg, data) for cell, run_cfg, data in jobs}
    assert [c.dir_name for c in step_cells(cfg)] == ["prm-s0", "orm-s0"] and set(results) == set(step_cells(cfg))
    prm = prm_best_of_n(cfg, tmp_path, results)
    bon = prm["bon"]

    tasks = make_step_tasks("test_id", cfg.prm_bon_prompts, seed=1)
    candidates = sample_step_solutions(tasks, cfg.prm_bon_n, cfg.prm_bon_error_rate, seed=0)
    prompts = [t.prompt_text + STEP_SEPARATOR for t in tasks for _ in range(cfg.prm_bon_n)]
    responses = [join_steps(s) for sols in candidates for s in sols]
    gold = np.array([[outcome_gold(t, s) for s in sols] for t, sols in zip(tasks, candidates, strict=True)])
    shape = gold.shape
    prm_scores = np.array(StepScorer(load_reward_model(tmp_path / "prm-s0")).score(prompts, responses)).reshape(shape)
    orm_scores = np.array(RewardModelScorer(load_reward_model(tmp_path / "orm-s0")).score(prompts, responses)).reshape(shape)
    rows = np.arange(shape[0])
    by_hand = gold[rows, prm_scores.argmax(1)] - gold[rows, orm_scores.argmax(1)]
    assert bon["diff"] == pytest.approx(by_hand.mean()) and bon["n_pairs"] == cfg.prm_bon_prompts
    assert bon["gold_random"] == pytest.approx(gold.mean()) and bon["gold_oracle"] == pytest.approx(gold.max(1).mean())
    assert bon["discordant"] == {"a_better": int((by_hand > 0).sum()), "b_better": int((by_hand < 0).sum())}
    assert 0.0 <= prm["validation"]["prm"][0]["accuracy"] <= 1.0 and "first_error_f1" in prm["validation"]["prm"][0]
