"""Reward-model training: Bradley-Terry (and baselines) with GRM's text-generation regularisers.

`train_reward_model` reads as its stages, in the modules of `rewardlab.rm_trainer`:
    data     (`rm_trainer.data`)   the training set and the eval sets, loaded before the output directory is claimed;
then one model (`rm_trainer.single`), or an ensemble (`rm_trainer.ensemble`: each member a run of its own, seed + k; then
the ensemble recorded, evaluated and saved as one model). One model's run:
    build    (`rm_trainer.build`)  the accelerator, the model (kernels chosen, unused parts frozen), length-grouped
             batches of pairs (`rm_trainer.data`), AdamW and the schedule, a resumed checkpoint; config.json;
    loop     (`rm_trainer.loop`)   one `training_step` per batch: the objective (`rewardlab.objective`: chosen and rejected in
             one forward pass, L_reward and L_reg from the table in `rewardlab.losses`, loss = (1 - alpha) * L_reward +
             alpha * L_reg), backward, clip, a stop at a non-finite loss or gradient norm, AdamW step; logging,
             evaluation (model selection, early stopping) and checkpoints at their intervals;
    evaluate (`rm_trainer.loop`)   the best validation weights restored (--select-best-on), every eval set scored;
    record   (`rm_trainer.outputs`) the mean and std of the model's rewards on the training responses or --norm-data
             (`reward_statistics`, read by `--normalize`);
    save     (`rm_trainer.outputs`) the model, metrics.json, log.jsonl, scores.jsonl, training_curves.png.
The loop runs through accelerate, so `accelerate launch` (DDP, DeepSpeed, FSDP configs) works unchanged; only the main
process writes files.

Outputs in `output_dir`: `config.json` (resolved), `metrics.json` (final metrics per eval set; the regulariser's strength,
docs/grm.md; `reward_statistics`), `log.jsonl` (training log: losses, GRM's two loss terms and their gradient norms at the
last hidden layer), `scores.jsonl` (each eval pair's final scores, eval-rm's `--scores` rows: `rewardlab compare` reads them),
`training_curves.png`, `model/` (the reward model), `checkpoints/step-N/` (for --resume).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from rewardlab.choices import PRM
from rewardlab.config import RewardTrainingFields, check_ranges
from rewardlab.config import from_dict as config_from_dict
from rewardlab.errors import UserError
from rewardlab.rm_trainer.checkpoints import latest_checkpoint
from rewardlab.rm_trainer.data import load_datasets
from rewardlab.rm_trainer.ensemble import member_config, train_ensemble
from rewardlab.rm_trainer.single import train_one_model
from rewardlab.runtime import claim_output_dir, is_main_process, seal_output_dir
from rewardlab.tracking import resolve_report_to


@dataclass
class RewardTrainingConfig(RewardTrainingFields):
    """Everything a reward-model run needs: the fields are declared by group in rewardlab.config (each with its default,
    help and flag; `rewardlab train-rm` and `--config` YAML files are generated from them); this class checks them."""

    def validate(self) -> None:
        """Every setting and the output directory, checked before any data or model loads (one line on a bad one)."""
        check_ranges(self)  # and every choice field among its Literal's values (config.check_choices)
        if self.train_data is None:
            raise UserError("no training data: pass --train-data (or train_data in --config)")
        if self.norm_samples == 1:
            raise UserError("norm_samples must be 0 (all) or at least 2 (a std needs two rewards)")
        if self.freeze_backbone and self.reg != "none":
            raise UserError("a frozen backbone cannot be regularised: use --reg none with --freeze-backbone")
        if self.select_best_on is not None and self.eval_steps <= 0:
            raise UserError("select_best_on needs eval_steps > 0 (how often the validation set is evaluated)")
        if self.early_stopping_patience and self.select_best_on is None:
            raise UserError("early_stopping_patience needs select_best_on")
        if self.objective == PRM:
            self.check_prm()
        resolve_report_to(self.report_to)  # an unknown or uninstalled tracker fails here, before anything loads
        self.check_output()
        if self.resume:
            self.check_checkpoints()

    def check_checkpoints(self) -> None:
        """--resume continues every run from its newest checkpoint (each member's, for an ensemble): one must be there."""
        runs = [self] if self.ensemble_size == 1 else [member_config(self, k) for k in range(self.ensemble_size)]
        for path in (Path(run.output_dir) for run in runs):
            if latest_checkpoint(path) is None:
                raise UserError(f"--resume: no checkpoint under {path / 'checkpoints'} (--save-steps N saves some)")

    def check_prm(self) -> None:
        """A process reward model reads step labels, not pairs: the settings that only pairs give meaning are refused."""
        if self.reg in ("dpo", "dpo-noref"):
            raise UserError(f"reg {self.reg} compares a chosen with a rejected response: a process reward model (objective "
                            "prm) has no pairs; use --reg sft or sft-nll (on its all-correct responses), or none")  # fmt: skip
        if self.loss != "bt":
            raise UserError(f"loss {self.loss} is a preference loss: objective prm trains on step labels (binary "
                            "cross-entropy); leave --loss at bt")  # fmt: skip
        if self.ensemble_size > 1:
            raise UserError("objective prm trains one model: ensemble_size must be 1")
        if self.norm_data is not None:
            raise UserError("a process reward model scores steps as probabilities: it records no reward statistics, so "
                            "norm_data does not apply")  # fmt: skip

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_dict(cls, d: dict) -> RewardTrainingConfig:
        return config_from_dict(cls, d)


def train_reward_model(cfg: RewardTrainingConfig, datasets: dict | None = None) -> dict:
    """Train one reward model (or an ensemble) as configured; returns the final metrics (also in metrics.json).

    `datasets` may pass already-loaded data: {"train": PreferenceDataset, "eval": {name: PreferenceDataset}}.
    """
    cfg.validate()
    train_set, eval_sets = load_datasets(cfg, datasets)  # bad data stops here, before the output directory is touched
    if is_main_process():
        claim_output_dir(cfg.output_dir, "train-rm", overwrite=cfg.overwrite, resume=cfg.resume, inputs=cfg.input_paths())
    one = cfg.ensemble_size == 1
    metrics = train_one_model(cfg, train_set, eval_sets) if one else train_ensemble(cfg, train_set, eval_sets)
    seal_output_dir(cfg.output_dir)  # on the main process
    return metrics
