"""An ensemble of K reward models: each member is a run of its own (`rm_trainer.single`, seed + k, into
output_dir/model/member-k); the ensemble of their saved models is then recorded, evaluated and saved as one model.

Under several processes every process takes part in training each member (accelerate shares the batches) and scores
the ensemble; only the main process writes files.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rewardlab.config import RewardTrainingFields
from rewardlab.modeling.ensemble import EnsembleRewardModel, member_name, member_names
from rewardlab.modeling.reward_model import MODEL_SUBDIR, RewardModel
from rewardlab.rm_trainer.loop import evaluate_preference_sets
from rewardlab.rm_trainer.outputs import reward_statistics, save_ensemble_outputs
from rewardlab.rm_trainer.single import train_one_model

if TYPE_CHECKING:
    from rewardlab.data.loading import PreferenceDataset


def train_ensemble(cfg: RewardTrainingFields, train_set: PreferenceDataset, eval_sets: dict[str, PreferenceDataset]) -> dict:
    """K members with seeds seed, seed+1, ...; the ensemble is saved under output_dir/model and evaluated as a whole;
    returns its metrics (metrics.json)."""
    from accelerate import PartialState

    members = []
    for k in range(cfg.ensemble_size):
        member = member_config(cfg, k)
        members.append(train_one_model(member, train_set, eval_sets, keep_process_group=True))  # the next member follows
    # loaded from the members' directories, which every process has once their training ended
    model_dir = Path(cfg.output_dir) / MODEL_SUBDIR
    models = [RewardModel.from_pretrained(model_dir / name / MODEL_SUBDIR) for name in member_names(cfg.ensemble_size)]
    ensemble = EnsembleRewardModel(models, cfg.ensemble_aggregate).eval()
    eval_results, rows = evaluate_preference_sets(ensemble, eval_sets, cfg)  # an ensemble scores pairs (no PRM)
    ensemble.reward_statistics = reward_statistics(ensemble, cfg, train_set.examples)  # of the aggregate
    metrics = {
        "eval": eval_results,
        "members": [m["eval"] for m in members],
        "train": {"members": [m["train"] for m in members]},
        "reward_statistics": ensemble.reward_statistics.to_dict(),
    }
    save_ensemble_outputs(cfg, ensemble, metrics, rows)
    PartialState().destroy_process_group()
    return metrics


def member_config(cfg: RewardTrainingFields, k: int) -> RewardTrainingFields:
    """Member k of an ensemble: seed + k, trained into output_dir/model/member-k as a run of its own."""
    member_dir = Path(cfg.output_dir) / MODEL_SUBDIR / member_name(k)
    return type(cfg)(**{**asdict(cfg), "ensemble_size": 1, "seed": cfg.seed + k, "output_dir": str(member_dir)})
