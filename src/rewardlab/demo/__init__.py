"""`rewardlab demo`: the whole pipeline on the built-in world, offline, with the same code paths as real models.

    1. base policy (cached) -> preference data labelled by the gold reward (train small/large, val_id, test_id, test_ood),
       on world version 4 by default (`--world 3` for the previous one);
    2. reward models initialised from the base policy: vanilla BT, margin, label smoothing, GRM sft / dpo / dpo-noref
       (each at every alpha of the demo's curve; the headline keeps the alpha chosen on val_id), at two data sizes, over
       seeds, all with the same (linear) head, each trained until its ID validation accuracy stops improving and kept at
       its best (steps chosen by ID validation only), in `--workers` processes; the frozen-backbone baseline (a linear
       head on the base model's features, fit to convergence); the official code's pairing as an extra, labelled row
       (GRM-sft with the MLP head vs BT with a linear head without dropout); the world check
       (`rewardlab.world_check`) on the vanilla models;
    3. pairwise accuracy in and out of distribution (GRM's Tables 1 and 7 in miniature), mean and spread over seeds;
    4. best-of-N over-optimisation curves (proxy and gold vs KL) for vanilla vs GRM-sft reward models, and their picks
       compared paired by prompt and seed;
    5. sparse vs R3HF token rewards where they can differ: (a) critic-free RLOO with per-token returns, (b) PPO with a
       fresh critic, over seeds; and (c) PPO with the reward-model critic, where r3hf with the potential-offset critic
       must reproduce sparse (the shaping equivalence, measured);
    6. process supervision on the world's step tasks (`prm`): a step policy (the base policy warm-started on step tasks),
       a PRM and an outcome RM per seed on its backbone, compared as best-of-N selectors (paired by prompt and seed)
       and as PPO's reward (step rewards vs sparse, paired by seed on held-out step tasks).
Writes report.md, results.json and PNG figures. Every figure in the report is computed from this run; no seed is picked.

Modules: `config` (`DemoConfig`, the variants), `pipeline` (`run_demo`, steps 1-6 in order, and step 4), `reward_models`
(steps 2-3 and the world check), `ppo_comparisons` (step 5), `prm` (step 6), `report` (findings, report.md), `plots`
(the figures).
Importing the package does not import torch: `rewardlab demo --help` stays fast.
"""

from rewardlab.demo.config import (
    FROZEN,
    OFFICIAL_PAIRING,
    ROW_LABELS,
    SMALL_MODEL_THREADS,
    VARIANTS,
    DemoConfig,
)
from rewardlab.demo.pipeline import run_best_of_n, run_demo
from rewardlab.demo.plots import plot_accuracy, plot_ppo_comparisons
from rewardlab.demo.ppo_comparisons import (
    PPO_COMPARISONS,
    PPOComparison,
    coincidence,
    paired_difference,
    run_ppo_comparisons,
    summarise_ppo,
    summarise_ppo_comparisons,
)
from rewardlab.demo.report import (
    PPO_LABELS,
    findings,
    ppo_findings,
    render_ppo_section,
    render_report,
    render_report_bon,
    render_world_check,
    verdict,
    world_check_findings,
)
from rewardlab.demo.reward_models import measure_world_check, rm_run_config, train_reward_models
from rewardlab.demo.stats import mean_std

__all__ = [
    "FROZEN",
    "OFFICIAL_PAIRING",
    "PPO_COMPARISONS",
    "PPO_LABELS",
    "ROW_LABELS",
    "SMALL_MODEL_THREADS",
    "VARIANTS",
    "DemoConfig",
    "PPOComparison",
    "coincidence",
    "findings",
    "mean_std",
    "measure_world_check",
    "paired_difference",
    "plot_accuracy",
    "plot_ppo_comparisons",
    "ppo_findings",
    "render_ppo_section",
    "render_report",
    "render_report_bon",
    "render_world_check",
    "rm_run_config",
    "run_best_of_n",
    "run_demo",
    "run_ppo_comparisons",
    "summarise_ppo",
    "summarise_ppo_comparisons",
    "train_reward_models",
    "verdict",
    "world_check_findings",
]
