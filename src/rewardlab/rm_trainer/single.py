"""One reward model, start to end: build -> loop -> evaluate -> record -> save, then the run ends (its trackers, and the
process group unless more runs follow in it: an ensemble's members)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardlab.choices import PRM
from rewardlab.config import RewardTrainingFields
from rewardlab.rm_trainer.build import build_run
from rewardlab.rm_trainer.loop import final_evaluation, train_loop
from rewardlab.rm_trainer.outputs import end_run, record_reward_statistics, save_outputs

if TYPE_CHECKING:
    from rewardlab.data.loading import PreferenceDataset


def train_one_model(
    cfg: RewardTrainingFields,
    train_set: PreferenceDataset,
    eval_sets: dict[str, PreferenceDataset],
    keep_process_group: bool = False,
) -> dict:
    """Train, evaluate and save one model into cfg.output_dir; returns its metrics (metrics.json)."""
    run = build_run(cfg, train_set, eval_sets)
    loop = train_loop(run)
    metrics = final_evaluation(run, loop)
    # a PRM's step logits are log-odds, read as probabilities: nothing to normalise
    metrics["reward_statistics"] = None if cfg.objective == PRM else record_reward_statistics(run).to_dict()
    save_outputs(run, metrics)
    end_run(run, keep_process_group)
    return metrics
