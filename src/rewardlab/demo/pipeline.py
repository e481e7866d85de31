"""`run_demo`: the demo's five steps in order (the package docstring says what each measures), then the findings, the
report, results.json and the figures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardlab.demo.config import SMALL_MODEL_THREADS, STEP_PPO, DemoConfig
from rewardlab.demo.plots import plot_accuracy, plot_ppo_comparisons
from rewardlab.demo.ppo_comparisons import run_ppo_comparisons
from rewardlab.demo.prm import run_process_supervision, warm_start_step_policy
from rewardlab.demo.report import findings, render_report
from rewardlab.demo.reward_models import reward_model_results, rm_run_name, train_every_reward_model
from rewardlab.paired_stats import LEVEL
from rewardlab.study import plot_alpha_curve

if TYPE_CHECKING:
    from rewardlab.rl.bon import ScoredSamples


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block as timings[name] (seconds)."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


class Started:
    """A job started by `started`: its result (waiting for it) and its wall time from start to end."""

    def __init__(self, pool: ThreadPoolExecutor, fn: Callable, args: tuple):
        self.start = self.end = time.perf_counter()
        self.future = pool.submit(self._run, fn, args)

    def _run(self, fn: Callable, args: tuple) -> Any:
        try:
            return fn(*args)
        finally:
            self.end = time.perf_counter()  # set before the result is handed out

    def result(self) -> Any:
        return self.future.result()

    @property
    def seconds(self) -> float:
        return self.end - self.start


@contextmanager
def started(fn: Callable, *args: Any, beside: bool) -> Iterator[Started]:
    """Start `fn(*args)` in a thread: `beside` the block (its workers run while the block does), or run to its end
    before the block starts."""
    with ThreadPoolExecutor(1) as pool:
        job = Started(pool, fn, args)
        if not beside:
            job.result()
        yield job


def run_demo(cfg: DemoConfig) -> dict:
    import torch

    from rewardlab.runtime import claim_output_dir, seal_output_dir, write_json, write_text
    from rewardlab.tasks.policy import evaluate_gold, get_base_policy, torch_threads
    from rewardlab.tasks.preferences import write_preference_data
    from rewardlab.tracking import resolve_report_to

    resolve_report_to(cfg.report_to)  # an unknown or uninstalled tracker fails before the first model loads
    out = claim_output_dir(cfg.output_dir, "demo", overwrite=cfg.overwrite, flag="--output")
    write_json(out / "config.json", asdict(cfg))
    timings: dict[str, float] = {}
    results: dict = {"config": asdict(cfg)}

    # 1. base policy and preference data
    with timed(timings, "base_policy"):
        policy, tokenizer, policy_path = get_base_policy(cfg.base_policy_config(), progress=cfg.progress)
    results["base_policy"] = {
        "path": str(policy_path),
        "gold_id": evaluate_gold(policy, tokenizer, "test_id", 256),
        "gold_ood": evaluate_gold(policy, tokenizer, "test_ood", 256),
    }
    # 6's step policy needs only the base policy: with worker processes its warm start runs from now on, in a process of
    # its own on one thread, beside steps 1-5 (single-threaded processes too, so the two cores stay busy)
    with started(warm_start_step_policy, cfg, beside=cfg.workers > 1) as step_policy:
        with timed(timings, "preference_data"), torch_threads(SMALL_MODEL_THREADS):
            paths = write_preference_data(
                out / "data", policy, tokenizer, sizes=cfg.sizes, test_sizes=cfg.test_sizes, label_noise=cfg.label_noise,
                val_size=cfg.val_size, world_version=cfg.world_version, progress=cfg.progress,
            )  # fmt: skip
        results["data"] = {k: str(v) for k, v in paths.items()} | {"world": json.loads(Path(paths["world"]).read_text())}

        # 2. every reward model
        with timed(timings, "reward_models"):
            runs = train_every_reward_model(cfg, policy_path, paths, out)

        # 5. PPO: sparse vs r3hf token rewards from the same (vanilla, large-data) reward model, where they can differ.
        # Its runs need only that model: with worker processes they start now, beside steps 3, 4 and 6 (a thread waits)
        large = max(cfg.sizes, key=cfg.sizes.get)
        rm_path = out / "rm" / rm_run_name("vanilla", large, 0)
        ppo_job = (run_ppo_comparisons, cfg, out / "ppo", (policy, tokenizer), policy_path, rm_path)
        with started(*ppo_job, beside=cfg.workers > 1) as ppo:  # one process: one thing at a time
            # 3. the world check, the alpha choice, the accuracy table and the paired comparisons
            results |= reward_model_results(runs)
            timings["world_check"] = results["world_check"]["seconds"]
            plot_accuracy(results["reward_models"], out / "rm_accuracy.png")
            selection = results["alpha_selection"]
            chosen = {n: {size: pick["alpha"] for size, pick in sizes.items()} for n, sizes in selection.items()}
            plot_alpha_curve(results["alpha_curve"], ["val", "id", "ood"], LEVEL, out / "alpha_curve.png", chosen)

            # 4. best-of-N: vanilla vs GRM-sft reward models trained on the small set, gold = the world's gold reward.
            # Beside PPO's workers on one thread: a second spin-waits on a busy CPU (on 2 threads the full demo sampled 3
            # batches/s)
            threads = SMALL_MODEL_THREADS if cfg.workers > 1 else torch.get_num_threads()
            with timed(timings, "best_of_n"), torch_threads(threads):
                results["bon"] = run_best_of_n(cfg, (policy, tokenizer), policy_path, out, results["reward_model_dirs"])

            # 6. process supervision: a step policy, PRMs and outcome RMs on the world's step tasks, PRM- vs outcome-RM-
            # guided best-of-N and PPO with step vs sparse rewards (demo.prm); its cells and PPO runs in worker processes
            # of their own, beside PPO's
            step_policy.result()
            timings["step_policy"] = step_policy.seconds
            with timed(timings, "process_supervision"), torch_threads(threads):
                results["prm"], prm_ppo_logs = run_process_supervision(cfg, out / "prm")
            (results["ppo"], ppo_logs), timings["ppo"] = ppo.result(), ppo.seconds
    if cfg.workers > 1:
        results["timings_note"] = (
            "ppo ran in worker processes beside world_check, best_of_n and process_supervision (its wall time holds "
            "theirs); step_policy (process supervision's warm start) in a process of its own beside everything from "
            "preference_data on"
        )
    plot_ppo_comparisons(ppo_logs, results["ppo"], out / "ppo_gold.png")
    plot_ppo_comparisons({STEP_PPO: prm_ppo_logs}, {STEP_PPO: results["prm"]["ppo"]}, out / "prm_ppo_gold.png")

    results["timings_seconds"] = timings
    results["torch_threads"] = torch.get_num_threads()
    results["findings"] = findings(results)
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_report(results))
    seal_output_dir(out)
    return results


def run_best_of_n(cfg: DemoConfig, policy: tuple, policy_path: Path, out: Path, dirs: dict) -> dict:
    """Step 4: best-of-N curves (proxy and gold vs KL) for the vanilla and GRM-sft reward models of the smallest training
    set (seed 0; grm-sft at its alpha chosen on val_id), on test_id prompts, with the world's gold reward; then the same
    samples picked by every seed's models, compared paired by prompt (`paired`). results.json's `bon`. `dirs`:
    name -> size -> the seeds' run directories (relative to `out`)."""
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.rl.bon import BonConfig, sample_and_score, write_curves
    from rewardlab.rl.scorers import RewardModelScorer, resolve_scorer

    small = min(cfg.sizes, key=cfg.sizes.get)
    proxies = {name: out / dirs[name][small][0] for name in BON_PROXIES}
    bon_cfg = BonConfig(
        policy=str(policy_path), proxies={k: str(v) for k, v in proxies.items()}, gold="builtin",
        prompts="builtin:test_id", output_dir=str(out / "bon"), n=cfg.bon_n, limit=cfg.bon_prompts, max_new_tokens=16,
        progress=cfg.progress,
    )  # fmt: skip
    scorers = {name: RewardModelScorer(load_reward_model(path)) for name, path in proxies.items()}
    scored = sample_and_score(bon_cfg, policy=policy, proxy_scorers=scorers, gold_scorer=resolve_scorer("builtin"))
    result = write_curves(bon_cfg, scored)
    result["paired"] = paired_best_of_n(scored, {name: [out / d for d in dirs[name][small]] for name in BON_PROXIES})
    return result


BON_PROXIES = ("vanilla", "grm-sft")


def paired_best_of_n(scored: ScoredSamples, seed_dirs: dict[str, list[Path]]) -> dict:
    """grm-sft against vanilla at the largest N, paired: on each prompt, the gold of grm-sft's pick minus vanilla's among
    the same samples, for every seed's pair of models (seed s with seed s; seed 0's scores are best-of-N's own). The
    paired statistics of `rewardlab compare` on these differences (`paired_stats.compare_paired_values`: a bootstrap
    interval over prompts, the t-interval over seeds with several, the sign test on the prompts where the picks' gold
    differs, `p_sign`)."""
    import numpy as np

    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.paired_stats import compare_paired_values
    from rewardlab.rl.bon import score_matrix
    from rewardlab.rl.bon_math import picked_gold
    from rewardlab.rl.scorers import RewardModelScorer

    n = scored.gold.shape[1]
    picks: dict[str, list[np.ndarray]] = {}
    for name, paths in seed_dirs.items():
        for seed, path in enumerate(paths):
            proxy = scored.proxy[name] if seed == 0 else score_matrix(RewardModelScorer(load_reward_model(path)), scored.batch, n)
            picks.setdefault(name, []).append(picked_gold(proxy, scored.gold, n))
    grm, vanilla = (np.stack(picks[name]) for name in BON_PROXIES[::-1])
    c = compare_paired_values(grm, vanilla, measure="gold").as_dict()
    return {"a": "grm-sft", "b": "vanilla", "n": n, "n_prompts": scored.gold.shape[0],
            "what": "gold of the best-of-n pick, a minus b, per prompt", **c}  # fmt: skip
