"""The demo's process-supervision step (demo.prm): a PRM and an outcome RM trained a few steps on the world's step data,
then their best-of-N picks compared on gold (recomputed here by hand from the scorers' own scores), and PPO with the
PRM's step rewards against PPO with the outcome RM's sparse reward (paired by seed, checked against the logs)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rewardlab.demo.config import STEP_PPO, DemoConfig
from rewardlab.demo.ppo_comparisons import eval_rows
from rewardlab.demo.prm import prm_best_of_n, step_cells, step_jobs, step_ppo, summarise_step_ppo
from rewardlab.demo.report import PPO_LABELS, ppo_verdict_findings
from rewardlab.modeling.loader import load_reward_model
from rewardlab.rl.scorers import RewardModelScorer, StepScorer
from rewardlab.rl.sources import resolve_policy
from rewardlab.study import run_cell
from rewardlab.tasks.steps import join_steps, make_step_tasks, outcome_gold, sample_step_solutions

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
    prompts = [t.messages for t in tasks for _ in range(cfg.prm_bon_n)]
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


def test_step_ppo_runs_both_arms_on_the_step_tasks_and_pairs_them_by_seed(tmp_path):
    cfg = DemoConfig.make(quick=True)
    cfg.prm_train, cfg.prm_val, cfg.rm_epochs = 32, 8, 1.0
    cfg.step_ppo_steps, cfg.step_ppo_batch_size, cfg.ppo_eval_prompts, cfg.ppo_eval_every = 2, 4, 4, 1
    for _, run_cfg, data in step_jobs(cfg, "tiny-llama", tmp_path):
        run_cell(run_cfg, data)
    assert cfg.workers == 2  # the runs in 2 worker processes, which load the policy from its path
    summary, logs = step_ppo(cfg, resolve_policy("tiny-llama", device="cpu"), Path("tiny-llama"), tmp_path)

    for shaping, kind in (("step", "prm"), ("sparse", "orm")):
        run = json.loads((tmp_path / "ppo" / f"{shaping}-s0" / "config.json").read_text())
        assert run["reward_shaping"] == shaping and run["reward_model"] == str(tmp_path / f"{kind}-s0")
        assert run["gold"] == "builtin-steps" and run["eval_prompts"] == "builtin-steps:test_id"
    assert [arm["arm"] for arm in summary["arms"]] == ["step", "sparse"] and summary["steps"] == 2
    gold = {arm: [r["gold_reward"] for r in eval_rows(seed_logs[0])] for arm, seed_logs in logs.items()}
    assert len(gold["step"]) == 3  # steps 0, 1 and 2
    final = summary["paired"]["step - sparse"]["final"]
    assert final["diff"] == pytest.approx(gold["step"][-1] - gold["sparse"][-1]) and final["verdict"].startswith("one seed")
    words = " ".join(ppo_verdict_findings(PPO_LABELS[STEP_PPO], summary))
    assert "step - sparse, held-out gold" in words and f"{final['diff']:+.3f} (one seed, no interval)" in words

    # in this process, the models loaded here: the same runs, number for number
    cfg.workers = 1
    for cell in step_cells(cfg):
        shutil.copytree(tmp_path / cell.dir_name, tmp_path / "serial" / cell.dir_name)
    _, serial = step_ppo(cfg, resolve_policy("tiny-llama", device="cpu"), Path("tiny-llama"), tmp_path / "serial")
    keys = ("step", "kind", "gold_reward", "kl", "proxy_reward")
    for arm, seed_logs in logs.items():
        assert [{k: r.get(k) for k in keys} for r in seed_logs[0]] == [{k: r.get(k) for k in keys} for r in serial[arm][0]]


def test_step_ppo_summary_pairs_seed_by_seed():
    def log(golds: list[float], kls: list[float]) -> list[dict]:
        rows = [{"step": i, "gold_reward": g, "kl": k} for i, (g, k) in enumerate(zip(golds, kls, strict=True))]
        return [r | {"proxy_reward": 0.0} for r in rows] + [r | {"kind": "eval", "n_prompts": 8} for r in rows]

    logs = {
        "step": [log([0.2, 0.5], [0.0, 1.0]), log([0.3, 0.4], [0.0, 2.0])],
        "sparse": [log([0.2, 0.3], [0.0, 2.0]), log([0.3, 0.6], [0.0, 1.0])],
    }
    pair = summarise_step_ppo(logs)["paired"]["step - sparse"]
    assert pair["final"]["per_seed"] == pytest.approx([0.2, -0.2]) and pair["kl"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # at KL 1.0: seed 0: step 0.5 vs sparse 0.2 + 0.1 / 2 = 0.25; seed 1: step 0.3 + 0.1 / 2 = 0.35 vs sparse 0.6
    assert pair["at_kl"][-1]["per_seed"] == pytest.approx([0.25, -0.25])
