"""A reward-model run's data: the training set and the named eval sets as configured (preference pairs, or step-labelled
examples for a process reward model), and the training batches of their encoded examples."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.data import DataLoader

from rewardlab.choices import PRM
from rewardlab.config import RewardDataSpec, RewardTrainingFields
from rewardlab.data.pairs import EpochBatchSampler, PairCollator, encode_pairs
from rewardlab.data.step_batches import StepCollator
from rewardlab.data.step_encoding import encode_step_examples
from rewardlab.errors import UserError

if TYPE_CHECKING:
    from rewardlab.data.loading import PreferenceDataset
    from rewardlab.data.steps import StepDataset


def load_datasets(
    cfg: RewardTrainingFields, datasets: dict | None = None
) -> tuple[PreferenceDataset | StepDataset, dict[str, PreferenceDataset | StepDataset]]:
    """The training set and the named eval sets: `datasets` ({"train": ..., "eval": {name: ...}}) or read as configured:
    preference data, or step-labelled data for a process reward model."""
    from rewardlab.data.loading import load_named, load_preferences
    from rewardlab.data.steps import load_steps

    if datasets is None:
        if cfg.objective == PRM:
            load, options = load_steps, {"format": cfg.format, "skip_invalid": cfg.skip_invalid}
        else:
            load, options = load_preferences, data_options(cfg)
        train_set = load(cfg.train_data, **options)
        eval_sets = load_named(cfg.eval_data, load, **options)
    else:
        train_set, eval_sets = datasets["train"], datasets.get("eval", {})
    if cfg.select_best_on is not None and cfg.select_best_on not in eval_sets:
        raise UserError(f"select_best_on = '{cfg.select_best_on}' is not an eval set ({', '.join(eval_sets) or 'none'})")
    return train_set, eval_sets


def data_options(cfg: RewardDataSpec) -> dict:
    """How every data set of a run is read: format, invalid records, and how rated lists become pairs."""
    return {"format": cfg.format, "skip_invalid": cfg.skip_invalid, "pairs": cfg.pairs, "seed": cfg.seed}


def pair_loader(cfg: RewardTrainingFields, tokenizer, train_set: PreferenceDataset) -> tuple[DataLoader, dict[str, int]]:
    """Batches of tokenised pairs (length-grouped unless `group_by_length` is off), and the tokenisation counts."""
    pairs, data_counts = encode_pairs(tokenizer, train_set.examples, cfg.max_length, cfg.truncation)
    if not pairs:
        raise UserError(f"{cfg.train_data}: no training pair left after truncation (max_length={cfg.max_length})")
    return training_batches(cfg, pairs, PairCollator(tokenizer.pad_token_id)), data_counts


def step_loader(cfg: RewardTrainingFields, tokenizer, train_set: StepDataset) -> tuple[DataLoader, dict[str, int]]:
    """A process reward model's batches of step-labelled rows (`rewardlab.data.step_batches`), length-grouped like pairs
    unless `group_by_length` is off; over-long examples keep the prompt and the whole steps that fit."""
    encoded, data_counts = encode_step_examples(tokenizer, train_set.examples, cfg.max_length)
    if not encoded:
        raise UserError(f"{cfg.train_data}: no training example left after truncation (max_length={cfg.max_length})")
    return training_batches(cfg, encoded, StepCollator(tokenizer.pad_token_id)), data_counts


def training_batches(cfg: RewardTrainingFields, items: list, collate) -> DataLoader:
    """Shuffled batches of encoded items (each with a `length`): length-grouped unless `group_by_length` is off, each
    epoch's order from the seed and the epoch alone (`EpochBatchSampler`), so that --resume continues it."""
    sampler = EpochBatchSampler([item.length for item in items], cfg.per_device_train_batch_size, cfg.seed, cfg.group_by_length)
    return DataLoader(items, batch_sampler=sampler, collate_fn=collate)
