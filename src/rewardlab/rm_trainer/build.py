"""Build a reward-model run: the accelerator, the model, the batches (`rewardlab.rm_trainer.data`), the optimiser and
schedule, a resumed state.

`build_run` returns the run's `TrainingRun` (`rewardlab.rm_trainer.state`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from transformers import get_scheduler

from rewardlab.choices import PRM
from rewardlab.config import BatchingSpec, LoraSpec, OptimisationSpec, RewardTrainingFields
from rewardlab.modeling.reward_model import KernelSettings, LoraSettings, RewardModel, build_reward_model, choose_kernels
from rewardlab.rm_trainer.checkpoints import resume_from_latest
from rewardlab.rm_trainer.data import pair_loader, step_loader
from rewardlab.rm_trainer.outputs import write_run_config
from rewardlab.rm_trainer.selection import BestWeights
from rewardlab.rm_trainer.state import TrainingRun, updates_per_epoch
from rewardlab.runtime import resolve_device, resolve_dtype
from rewardlab.tracking import resolve_report_to

if TYPE_CHECKING:
    from rewardlab.data.loading import PreferenceDataset


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
    if cfg.select_best_on is not None:
        run.selection = BestWeights(cfg.select_best_on, accelerator.unwrap_model(model), cfg.select_metric)
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
    dtype = model.compute_dtype()
    chosen = choose_kernels(model, accelerator.device, dtype, packed=cfg.padding_free, logprobs=cfg.reg != "none")
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


def schedule(
    cfg: OptimisationSpec, optimizer: torch.optim.Optimizer, batches_per_epoch: int
) -> tuple[int, torch.optim.lr_scheduler.LRScheduler]:
    """The number of optimiser updates and the learning-rate schedule over them."""
    per_epoch = updates_per_epoch(batches_per_epoch, cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * per_epoch)
    # Stepped by hand once per optimiser update (not prepared: accelerate would step it once per process).
    scheduler = get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return total_steps, scheduler
