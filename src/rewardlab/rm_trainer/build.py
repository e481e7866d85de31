"""Build a reward-model run: the accelerator, the data, the model, the batches, the optimiser and schedule, a resumed state.

`build_run` returns the run's `TrainingRun` (`rewardlab.rm_trainer.state`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from rewardlab.choices import PRM
from rewardlab.config import BatchingSpec, LoraSpec, OptimisationSpec, RewardDataSpec, RewardTrainingFields
from rewardlab.data.pairs import LengthGroupedBatchSampler, PairCollator, encode_pairs
from rewardlab.data.step_batches import StepCollator
from rewardlab.data.step_encoding import encode_step_examples
from rewardlab.errors import UserError
from rewardlab.modeling.reward_model import KernelSettings, LoraSettings, RewardModel, build_reward_model, choose_kernels
from rewardlab.rm_trainer.checkpoints import resume_from_latest
from rewardlab.rm_trainer.outputs import write_run_config
from rewardlab.rm_trainer.state import TrainingRun
from rewardlab.runtime import resolve_device, resolve_dtype
from rewardlab.tracking import resolve_report_to

if TYPE_CHECKING:
    from rewardlab.data.loading import PreferenceDataset
    from rewardlab.data.steps import StepDataset


def build_run(cfg: RewardTrainingFields, train_set: PreferenceDataset, eval_sets: dict[str, PreferenceDataset]) -> TrainingRun:
    """Everything a run on the loaded data (`load_datasets`) needs before its first step; writes config.json (main
    process)."""
    accelerator, bf16, trackers = make_accelerator(cfg)
    set_seed(cfg.seed)
    model, kernels, sharded = prepare_model(cfg, accelerator, bf16)
    make_loader = step_loader if cfg.objective == PRM else pair_loader
    loader, data_counts = make_loader(cfg, model.tokenizer, train_set)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps, scheduler = schedule(cfg, optimizer, len(loader))
    accelerator.register_for_checkpointing(scheduler)
    run = TrainingRun(
        cfg, accelerator, model, optimizer, loader, scheduler, eval_sets, {**train_set.stats, **data_counts}, kernels,
        sharded, total_steps, trackers,
    )  # fmt: skip
    run.train_examples = list(train_set.examples)
    if cfg.resume:
        resume_from_latest(run)
    write_run_config(run)
    return run


def make_accelerator(cfg: RewardTrainingFields) -> tuple[Accelerator, bool, list[str]]:
    """The accelerator (its device, mixed precision, trackers), whether the run computes in bf16, and the trackers."""
    trackers = resolve_report_to(cfg.report_to)
    on_cpu = resolve_device(cfg.device).type == "cpu"
    bf16 = cfg.bf16 if cfg.bf16 is not None else resolve_dtype("auto", "cpu" if on_cpu else None) == torch.bfloat16
    accelerator = Accelerator(
        cpu=on_cpu,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision="bf16" if bf16 else "no",
        log_with=trackers or None,
        project_dir=str(cfg.output_dir),
    )
    return accelerator, bf16, trackers


def data_options(cfg: RewardDataSpec) -> dict:
    """How every data set of a run is read: format, invalid records, and how rated lists become pairs."""
    return {"format": cfg.format, "skip_invalid": cfg.skip_invalid, "pairs": cfg.pairs, "seed": cfg.seed}


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


def lora_settings(cfg: LoraSpec) -> LoraSettings | None:
    if not cfg.lora:
        return None
    return LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules)


def prepare_model(cfg: RewardTrainingFields, accelerator: Accelerator, bf16: bool) -> tuple[RewardModel, dict[str, str], bool]:
    """The reward model as configured, built with the run's kernel settings, what does not train frozen; the kernels it
    runs on the run's device (`choose_kernels`: an impossible explicit choice fails here, in one line, before training;
    recorded in config.json); and whether the weights are sharded (FSDP, DeepSpeed)."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    lora, kernels = lora_settings(cfg), kernel_settings(cfg, bf16, sharded)
    model = build_reward_model(
        cfg.model,
        head=cfg.head,
        head_hidden=cfg.head_hidden,
        head_dropout=cfg.head_dropout,
        lora=lora,
        reference_copy=cfg.reg == "dpo",
        seed=cfg.seed,
        kernels=kernels,
    )
    model.config.objective = cfg.objective
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if cfg.freeze_backbone:
        model.freeze_backbone()
    elif cfg.reg == "none":
        # unused without a regulariser, and DDP requires every trainable parameter be used
        model.freeze_lm_head()
    chosen = choose_kernels(model, accelerator.device, model.compute_dtype(), packed=cfg.padding_free, logprobs=cfg.reg != "none")
    return model, chosen, sharded


def kernel_settings(cfg: BatchingSpec, bf16: bool, sharded: bool) -> KernelSettings:
    """The model's kernel settings for a run: its batching settings, the bf16 it computes in under mixed precision, and
    whether the LM head is sharded (FSDP, DeepSpeed: Liger reads the head's weight whole, so the chunked path is used)."""
    return KernelSettings(
        attention=cfg.attention,
        logprob_backend=cfg.logprob_backend,
        logprob_chunk_tokens=cfg.logprob_chunk_size,
        sharded_lm_head=sharded,
        compute_dtype_hint=torch.bfloat16 if bf16 else None,
    )


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
    """Shuffled batches of encoded items (each with a `length`): length-grouped unless `group_by_length` is off."""
    if cfg.group_by_length:
        sampler = LengthGroupedBatchSampler([item.length for item in items], cfg.per_device_train_batch_size, cfg.seed)
        return DataLoader(items, batch_sampler=sampler, collate_fn=collate)
    generator = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(items, batch_size=cfg.per_device_train_batch_size, shuffle=True, generator=generator, collate_fn=collate)


def schedule(
    cfg: OptimisationSpec, optimizer: torch.optim.Optimizer, batches_per_epoch: int
) -> tuple[int, torch.optim.lr_scheduler.LRScheduler]:
    """The number of optimiser updates and the learning-rate schedule over them."""
    updates_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * updates_per_epoch)
    # Stepped by hand once per optimiser update (not prepared: accelerate would step it once per process).
    scheduler = get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return total_steps, scheduler
