"""`rewardlab train-rm`: flags and/or a YAML config file; flags given on the command line win over the file."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from rewardlab.commands.common import UserError, quiet_libraries, user_errors


def train_rm(
    config: Path | None = typer.Option(None, "--config", help="YAML file with RewardTrainingConfig fields."),
    model: str | None = typer.Option(None, help="Hub id, local path, or 'tiny-llama' (default)."),
    train_data: str | None = typer.Option(
        None, help="Training preferences: file (.jsonl/.jsonl.gz/.json/.parquet/.csv) or hub id."
    ),
    eval_data: list[str] | None = typer.Option(None, help="Named eval set NAME=SPEC; repeat for several."),
    format: str | None = typer.Option(
        None, help="trl | hh | unified-feedback | hhh | mt-bench-human | rewardbench | ultrafeedback | listwise (auto)."
    ),
    pairs: str | None = typer.Option(
        None, help="Rated listwise data -> pairs: all (default) | best-worst | best-random (drawn with --seed)."
    ),
    skip_invalid: bool | None = typer.Option(None, "--skip-invalid", help="Skip and count invalid records instead of failing."),
    output_dir: str | None = typer.Option(None, help="Where config.json, metrics.json and model/ go."),
    loss: str | None = typer.Option(None, help="bt (default) | margin | label-smooth."),
    reg: str | None = typer.Option(None, help="GRM regulariser: none (default) | sft | sft-nll | dpo | dpo-noref."),
    alpha: float | None = typer.Option(None, help="Regulariser weight: (1-alpha)*L_reward + alpha*L_reg (default 0.01)."),
    beta: float | None = typer.Option(None, help="Regulariser temperature (default 0.1)."),
    label_smoothing: float | None = typer.Option(None, help="eps for --loss label-smooth (default 0.1)."),
    center_rewards_coefficient: float | None = typer.Option(None, help="Reward centring coefficient (default 0)."),
    head: str | None = typer.Option(None, help="Reward head: linear (default) | mlp."),
    head_dropout: float | None = typer.Option(None, help="Dropout on the hidden state before the head (default 0.1)."),
    lora: bool | None = typer.Option(
        None, "--lora/--no-lora", help="LoRA on q/k/v/o (r 32, alpha 64) instead of full fine-tuning."
    ),
    lora_r: int | None = typer.Option(None),
    lora_alpha: int | None = typer.Option(None),
    lora_dropout: float | None = typer.Option(None),
    freeze_backbone: bool | None = typer.Option(None, "--freeze-backbone", help="Baseline: train the reward head only."),
    ensemble_size: int | None = typer.Option(None, help="Train K members with seeds seed..seed+K-1 (baseline)."),
    ensemble_aggregate: str | None = typer.Option(None, help="Ensemble score: mean (default) | min."),
    max_length: int | None = typer.Option(None, help="Max tokens per sequence (default 1024)."),
    truncation: str | None = typer.Option(None, help="Over-long pairs: keep_end (default) | drop."),
    group_by_length: bool | None = typer.Option(
        None, "--group-by-length/--no-group-by-length", help="Length-bucketed batches (default on: less padding)."
    ),
    padding_free: bool | None = typer.Option(
        None,
        "--padding-free/--no-padding-free",
        help="Packed batches: no compute on padding, same results (default on; padded where a model lacks support).",
    ),
    logprob_chunk_size: int | None = typer.Option(
        None,
        "--logprob-chunk-size",
        help="GRM regularisers: LM-head logits for at most this many response tokens at a time, recomputed in the backward "
        "(default 2048; 0 = all at once). Caps memory with large vocabularies.",
    ),
    attention: str | None = typer.Option(
        None,
        "--attention",
        help="Packed attention kernel: auto (default: varlen or flex on CUDA, segments on CPU) | segments | varlen | flex.",
    ),
    logprob_backend: str | None = typer.Option(
        None,
        "--logprob-backend",
        help="GRM regularisers' log-probs: auto (default: liger on CUDA when installed) | chunked | liger.",
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute decoder activations in the backward: less memory, about a third more compute (default off).",
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default 1e-5)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per device per step (default 8)."),
    gradient_accumulation_steps: int | None = typer.Option(None, "--grad-accum"),
    epochs: float | None = typer.Option(None, "--epochs", help="Epochs (default 2)."),
    max_steps: int | None = typer.Option(None, help="Optimiser steps; overrides --epochs when > 0."),
    warmup_ratio: float | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on with a capable GPU)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available); more: accelerate."),
    logging_steps: int | None = typer.Option(None),
    eval_steps: int | None = typer.Option(None, help="Evaluate every N steps (default: at the end only)."),
    select_best_on: str | None = typer.Option(
        None,
        "--select-best-on",
        help="An --eval-data NAME (a validation set) scored every --eval-steps; training ends on the weights with its best "
        "accuracy, and the other eval sets are scored on those only.",
    ),
    early_stopping_patience: int | None = typer.Option(
        None, "--early-stopping-patience", help="With --select-best-on: stop after N evaluations without a gain."
    ),
    save_steps: int | None = typer.Option(None, help="Checkpoint every N steps (for --resume)."),
    resume: bool | None = typer.Option(None, "--resume", help="Resume from the latest checkpoint in --output-dir."),
    report_to: list[str] | None = typer.Option(None, help="tensorboard and/or wandb (when installed)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a reward model (Bradley-Terry and baselines, with GRM's text-generation regularisers)."""
    from rewardlab.train_rm import RewardTrainingConfig, train_reward_model

    flags = {
        "model": model, "train_data": train_data, "eval_data": eval_data or None, "format": format, "pairs": pairs,
        "skip_invalid": skip_invalid, "output_dir": output_dir, "loss": loss, "reg": reg, "alpha": alpha, "beta": beta,
        "label_smoothing": label_smoothing, "center_rewards_coefficient": center_rewards_coefficient, "head": head,
        "head_dropout": head_dropout, "lora": lora, "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "freeze_backbone": freeze_backbone, "ensemble_size": ensemble_size, "ensemble_aggregate": ensemble_aggregate,
        "max_length": max_length, "truncation": truncation, "group_by_length": group_by_length,
        "padding_free": padding_free, "logprob_chunk_size": logprob_chunk_size, "attention": attention,
        "logprob_backend": logprob_backend, "gradient_checkpointing": gradient_checkpointing, "learning_rate": lr,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps, "num_train_epochs": epochs, "max_steps": max_steps,
        "warmup_ratio": warmup_ratio, "seed": seed, "bf16": bf16, "device": device, "logging_steps": logging_steps,
        "eval_steps": eval_steps,
        "select_best_on": select_best_on, "early_stopping_patience": early_stopping_patience,
        "save_steps": save_steps, "resume": resume, "report_to": report_to or None,
    }  # fmt: skip
    with user_errors():
        values: dict = {}
        if config is not None:
            if not config.exists():
                raise UserError(f"{config}: no such config file")
            try:
                values = yaml.safe_load(config.read_text()) or {}
            except yaml.YAMLError as err:
                raise UserError(f"{config}: not valid YAML ({str(err).splitlines()[0]})") from None
            if not isinstance(values, dict):
                raise UserError(f"{config}: expected a mapping of config fields")
        values |= {k: v for k, v in flags.items() if v is not None}
        values["progress"] = progress
        cfg = RewardTrainingConfig.from_dict(values)
        quiet_libraries()
        metrics = train_reward_model(cfg)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    for name, m in metrics["eval"].items():
        print(f"{name}: accuracy {m['accuracy']:.4f}  mean margin {m['mean_margin']:.3f}  (n={m['n']})")
    print(f"wrote {cfg.output_dir}/config.json, metrics.json, model/")
