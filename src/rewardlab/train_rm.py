"""Reward-model training: Bradley-Terry (and baselines) with GRM's text-generation regularisers.

One training step, for a batch of B preference pairs:
    1. chosen and rejected go through the model as ONE (2B, T) batch: rewards r_c, r_r at each sequence's last real token,
       and, when a regulariser needs them, summed response log-probs from the kept LM head (response tokens only);
       with `padding_free` (default) the batch's real tokens run as one packed row, so padding costs no compute
       (`attention`: the packed kernel, chosen per device and dtype unless set; recorded in config.json);
    2. L_reward = bt | margin | label-smooth (+ centring), see `rewardlab.losses`;
    3. L_reg = sft | sft-nll | dpo | dpo-noref on the same hidden states (dpo's reference: LoRA adapters disabled, or a frozen
       copy under full fine-tuning, computed once per batch without gradients);
    4. loss = (1 - alpha) * L_reward + alpha * L_reg, backward, clip, AdamW step, scheduler step.
The loop runs through accelerate, so `accelerate launch` (DDP, DeepSpeed, FSDP configs) works unchanged.

Outputs in `output_dir`: `config.json` (resolved), `metrics.json` (final metrics per eval set), `log.jsonl` (training log),
`training_curves.png`, `model/` (the reward model), `checkpoints/step-N/` (for --resume).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from rewardlab.config import RewardTrainingFields
from rewardlab.config import from_dict as config_from_dict
from rewardlab.data.listwise import PAIR_MODES
from rewardlab.data.pairs import LengthGroupedBatchSampler, PairCollator, encode_pairs
from rewardlab.data.templates import TRUNCATION_CHOICES
from rewardlab.evaluation import evaluate_preferences
from rewardlab.losses import (
    REGULARIZERS,
    REWARD_LOSSES,
    dpo_regularizer,
    grm_total,
    pairwise_accuracy,
    reward_loss,
    sft_nll_regularizer,
    sft_regularizer,
)
from rewardlab.modeling.ensemble import AGGREGATES
from rewardlab.modeling.head import HEAD_CHOICES
from rewardlab.modeling.logprobs import LOGPROB_BACKENDS, liger_unavailable_reason
from rewardlab.modeling.reward_model import MODEL_SUBDIR, LoraSettings, build_reward_model
from rewardlab.packing import PACKED_ATTENTION_CHOICES, packing_unsupported_reason, select_packed_attention
from rewardlab.runtime import (
    NonFiniteError,
    first_non_finite,
    resolve_device,
    resolve_dtype,
    version,
    write_json,
    write_jsonl,
)


@dataclass
class RewardTrainingConfig(RewardTrainingFields):
    """Everything a reward-model run needs: the fields are declared by group in rewardlab.config (each with its default,
    help and flag; `rewardlab train-rm` and `--config` YAML files are generated from them); this class checks them."""

    def validate(self) -> None:
        if self.train_data is None:
            raise ValueError("no training data: pass --train-data (or train_data in --config)")
        for name, value, choices in (
            ("loss", self.loss, REWARD_LOSSES),
            ("reg", self.reg, REGULARIZERS),
            ("head", self.head, HEAD_CHOICES),
            ("truncation", self.truncation, TRUNCATION_CHOICES),
            ("ensemble_aggregate", self.ensemble_aggregate, AGGREGATES),
            ("pairs", self.pairs, PAIR_MODES),
            ("attention", self.attention, PACKED_ATTENTION_CHOICES),
            ("logprob_backend", self.logprob_backend, LOGPROB_BACKENDS),
        ):
            if value not in choices:
                raise ValueError(f"{name} = '{value}' is not one of {', '.join(choices)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha = {self.alpha} must lie in [0, 1]")
        if self.ensemble_size < 1:
            raise ValueError("ensemble_size must be >= 1")
        if self.logprob_chunk_size < 0:
            raise ValueError(f"logprob_chunk_size = {self.logprob_chunk_size} must be >= 0 (0: no chunking)")
        if self.freeze_backbone and self.reg != "none":
            raise ValueError("a frozen backbone cannot be regularised: use --reg none with --freeze-backbone")
        if self.select_best_on is not None and self.eval_steps <= 0:
            raise ValueError("select_best_on needs eval_steps > 0 (how often the validation set is evaluated)")
        if self.early_stopping_patience < 0 or (self.early_stopping_patience and self.select_best_on is None):
            raise ValueError("early_stopping_patience needs select_best_on and must be >= 0")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_dict(cls, d: dict) -> RewardTrainingConfig:
        return config_from_dict(cls, d)


def lora_settings(cfg: RewardTrainingConfig) -> LoraSettings | None:
    if not cfg.lora:
        return None
    return LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=cfg.lora_target_modules)


def freeze_unused_lm_head(model) -> None:
    """Without a regulariser the LM head is unused, and DDP requires every trainable parameter be used, so it is frozen,
    unless its weight is the input embedding (tied, as in SmolLM2 or gemma): that weight is used and must train, or the
    vanilla baseline would train fewer parameters than the GRM variants it is compared with."""
    embedding_ids = {id(p) for p in model.causal_lm.get_input_embeddings().parameters()}
    for parameter in model.lm_head.parameters():
        if id(parameter) not in embedding_ids:
            parameter.requires_grad_(False)


def stop_if_non_finite(accelerator, stats: dict[str, torch.Tensor], step: int, output_dir: Path, log: list[dict]) -> None:
    """Stop at the first non-finite loss or gradient norm, before the optimiser steps with it: the log so far is written,
    no model or metrics.json (nothing claims success), and the error names the step, the value and the last checkpoint."""
    values = {"loss": stats["loss"]}
    if stats.get("grad_norm") is not None:  # DeepSpeed's clipping returns no norm
        values["grad norm"] = stats["grad_norm"]
    problem = first_non_finite(values)
    flag = torch.tensor(float(problem is not None), device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, "sum")  # every process stops together
    if not flag.item():
        return
    problem = problem or "loss or grad norm non-finite on another process"
    if accelerator.is_main_process:
        write_jsonl(output_dir / "log.jsonl", log)
    last = _latest_checkpoint(output_dir)
    kept = f"the last good checkpoint is {last} (--resume)" if last else "no checkpoint was saved (--save-steps N keeps some)"
    raise NonFiniteError(
        f"step {step}: {problem}; training stopped before the update, nothing saved as finished; {kept}. "
        "Try a lower --lr or a smaller --max-grad-norm."
    )


def kernel_choices(model, cfg: RewardTrainingConfig, device: torch.device, bf16: bool, sharded: bool = False) -> dict[str, str]:
    """The attention kernel and log-prob path this run uses, resolved before training (an impossible explicit choice
    fails here, in one line) and recorded in config.json. `sharded` (FSDP, DeepSpeed): Liger reads the LM head's
    weight whole, so the chunked path, which calls the head as a module, is used."""
    dtype = torch.bfloat16 if bf16 else next(model.causal_lm.parameters()).dtype
    unpackable = packing_unsupported_reason(model.causal_lm)
    if not cfg.padding_free or unpackable is not None:
        attention = "padded"
    else:
        attention = select_packed_attention(model.causal_lm.config, device, dtype, cfg.attention, training=True)
    choices = {"attention": attention}
    if cfg.reg != "none":
        reason = "the LM head is sharded (FSDP / DeepSpeed)" if sharded else liger_unavailable_reason(model.lm_head, device)
        if cfg.logprob_backend == "liger" and reason is not None:
            raise ValueError(f"logprob_backend 'liger' cannot run here: {reason}")
        choices["logprobs"] = "chunked" if cfg.logprob_backend == "chunked" or reason is not None else "liger"
    return choices


def compute_loss(model, batch: dict[str, torch.Tensor], cfg: RewardTrainingConfig) -> dict[str, torch.Tensor]:
    """The GRM objective for one batch of pairs (see the module docstring)."""
    n_pairs = batch["margin"].shape[0]
    response_mask = None
    if cfg.reg != "none":
        response_mask = batch["response_mask"]
        if cfg.reg in ("sft", "sft-nll"):  # only the chosen response's log-probs are needed
            response_mask = response_mask.clone()
            response_mask[n_pairs:] = False
    ref_logps = None
    if cfg.reg == "dpo":
        with torch.no_grad():
            ref_logps = model(
                batch["input_ids"], batch["attention_mask"], response_mask, reference=True, packed=cfg.padding_free
            ).logprobs
    out = model(batch["input_ids"], batch["attention_mask"], response_mask, packed=cfg.padding_free)
    chosen, rejected = out.sequence_rewards[:n_pairs], out.sequence_rewards[n_pairs:]
    l_reward = reward_loss(cfg.loss, chosen, rejected, batch["margin"], cfg.label_smoothing, cfg.center_rewards_coefficient)
    l_reg = None
    if cfg.reg == "sft":
        l_reg = sft_regularizer(out.logprobs[:n_pairs], cfg.beta)
    elif cfg.reg == "sft-nll":
        l_reg = sft_nll_regularizer(out.logprobs[:n_pairs])
    elif cfg.reg == "dpo":
        l_reg = dpo_regularizer(
            out.logprobs[:n_pairs], out.logprobs[n_pairs:], ref_logps[:n_pairs], ref_logps[n_pairs:], cfg.beta
        )
    elif cfg.reg == "dpo-noref":
        l_reg = dpo_regularizer(out.logprobs[:n_pairs], out.logprobs[n_pairs:], beta=cfg.beta)
    total = grm_total(l_reward, l_reg, cfg.alpha)
    stats = {
        "loss": total,
        "reward_loss": l_reward.detach(),
        "accuracy": pairwise_accuracy(chosen.detach(), rejected.detach()),
        "margin": (chosen - rejected).detach().mean(),
    }
    if l_reg is not None:
        stats["reg_loss"] = l_reg.detach()
    return stats


class BestWeights:
    """Keeps a CPU copy of the trainable weights with the best validation accuracy seen so far (earliest on ties)."""

    def __init__(self, name: str, model: torch.nn.Module):
        self.name, self.model = name, model
        self.best_step, self.best_accuracy, self.state = -1, -math.inf, None
        self.history: list[tuple[int, float]] = []

    def offer(self, step: int, accuracy: float) -> None:
        self.history.append((step, accuracy))
        if accuracy > self.best_accuracy:
            self.best_step, self.best_accuracy = step, accuracy
            self.state = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def restore(self) -> None:
        if self.state is None:
            return
        for n, p in self.model.named_parameters():
            if n in self.state:
                p.copy_(self.state[n].to(p.device))

    @property
    def stale_evaluations(self) -> int:
        """Evaluations since the best one."""
        return sum(step > self.best_step for step, _ in self.history)

    def summary(self) -> dict:
        return {"on": self.name, "step": self.best_step, "accuracy": self.best_accuracy, "history": self.history}


def _latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


def _trackers(report_to: list[str]) -> list[str]:
    import importlib.util

    available = []
    for name in report_to:
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
        if module is None:
            raise ValueError(f"report_to: unknown tracker '{name}' (tensorboard, wandb)")
        if importlib.util.find_spec(module) is not None:
            available.append(name)
        else:
            print(f"report_to: {name} is not installed; not reporting to it")
    return available


def plot_training(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in log if r.get("kind") == "train"]
    evals = [r for r in log if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["reward_loss"] for r in train], label="reward loss")
    axes[0].set_title("reward loss")
    if train and "reg_loss" in train[0]:
        axes[1].plot(steps, [r["reg_loss"] for r in train], color="tab:orange")
    axes[1].set_title("regulariser loss")
    axes[2].plot(steps, [r["accuracy"] for r in train], label="train (batch)", alpha=0.6)
    for name in sorted({k for r in evals for k in r.get("accuracy", {})}):
        pts = [(r["step"], r["accuracy"][name]) for r in evals if name in r.get("accuracy", {})]
        axes[2].plot(*zip(*pts, strict=True), marker="o", label=f"eval: {name}")
    axes[2].set_title("pairwise accuracy")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def data_options(cfg: RewardTrainingConfig) -> dict:
    """How every data set of a run is read: format, invalid records, and how rated lists become pairs."""
    return {"format": cfg.format, "skip_invalid": cfg.skip_invalid, "pairs": cfg.pairs, "seed": cfg.seed}


def train_reward_model(cfg: RewardTrainingConfig, datasets: dict | None = None) -> dict:
    """Train one reward model (or an ensemble) as configured; returns the final metrics (also in metrics.json).

    `datasets` may pass already-loaded data: {"train": PreferenceDataset, "eval": {name: PreferenceDataset}}.
    """
    cfg.validate()
    if cfg.ensemble_size > 1:
        return train_ensemble(cfg, datasets)
    from rewardlab.data.loading import load_named_preferences, load_preferences

    output_dir = Path(cfg.output_dir)
    trackers = _trackers(cfg.report_to)
    on_cpu = resolve_device(cfg.device).type == "cpu"
    bf16 = cfg.bf16 if cfg.bf16 is not None else resolve_dtype("auto", "cpu" if on_cpu else None) == torch.bfloat16
    accelerator = Accelerator(
        cpu=on_cpu,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision="bf16" if bf16 else "no",
        log_with=trackers or None,
        project_dir=str(output_dir),
    )
    set_seed(cfg.seed)
    is_main = accelerator.is_main_process
    show = cfg.progress and accelerator.is_local_main_process

    # ---- data ----
    if datasets is None:
        train_set = load_preferences(cfg.train_data, **data_options(cfg))
        eval_sets = load_named_preferences(cfg.eval_data, **data_options(cfg))
    else:
        train_set, eval_sets = datasets["train"], datasets.get("eval", {})
    if cfg.select_best_on is not None and cfg.select_best_on not in eval_sets:
        raise ValueError(f"select_best_on = '{cfg.select_best_on}' is not an eval set ({', '.join(eval_sets) or 'none'})")

    # ---- model ----
    model = build_reward_model(
        cfg.model,
        head=cfg.head,
        head_hidden=cfg.head_hidden,
        head_dropout=cfg.head_dropout,
        lora=lora_settings(cfg),
        reference_copy=cfg.reg == "dpo",
        seed=cfg.seed,
    )
    model.logprob_chunk_tokens = cfg.logprob_chunk_size
    model.packed_attention = cfg.attention
    model.compute_dtype_hint = torch.bfloat16 if bf16 else None
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    kernels = kernel_choices(model, cfg, accelerator.device, bf16, sharded)
    model.logprob_backend = kernels.get("logprobs", cfg.logprob_backend)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if cfg.freeze_backbone:
        model.freeze_backbone()
    elif cfg.reg == "none":
        freeze_unused_lm_head(model)
    tokenizer = model.tokenizer

    pairs, data_counts = encode_pairs(tokenizer, train_set.examples, cfg.max_length, cfg.truncation)
    if not pairs:
        raise ValueError(f"{cfg.train_data}: no training pair left after truncation (max_length={cfg.max_length})")
    collate = PairCollator(tokenizer.pad_token_id)
    if cfg.group_by_length:
        sampler = LengthGroupedBatchSampler([p.length for p in pairs], cfg.per_device_train_batch_size, cfg.seed)
        loader = DataLoader(pairs, batch_sampler=sampler, collate_fn=collate)
    else:
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(
            pairs, batch_size=cfg.per_device_train_batch_size, shuffle=True, generator=generator, collate_fn=collate
        )

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    updates_per_epoch = max(1, math.ceil(len(loader) / cfg.gradient_accumulation_steps))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * updates_per_epoch)
    num_epochs = math.ceil(total_steps / updates_per_epoch)
    # Stepped by hand once per optimiser update (not prepared: accelerate would step it once per process).
    scheduler = get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    accelerator.register_for_checkpointing(scheduler)

    # ---- resume ----
    global_step, start_epoch, skip_batches, log = 0, 0, 0, []
    if cfg.resume:
        ckpt = _latest_checkpoint(output_dir)
        if ckpt is None:
            raise ValueError(f"--resume: no checkpoint under {output_dir / 'checkpoints'}")
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        global_step, log = state["global_step"], state["log"]
        start_epoch, skip_batches = divmod(global_step * cfg.gradient_accumulation_steps, len(loader))
        if show:
            print(f"resumed from {ckpt} at step {global_step}")

    resolved = asdict(cfg) | {
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "total_steps": total_steps,
        "global_batch_pairs": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes,
        "train_data_stats": {**train_set.stats, **data_counts},
        "kernels": kernels,
        "rewardlab_version": version(),
    }
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "config.json", resolved)
    if show:
        print(f"attention: {kernels['attention']}" + (f"; log-probs: {kernels['logprobs']}" if "logprobs" in kernels else ""))
    if trackers:
        accelerator.init_trackers(
            "rewardlab", config={k: v for k, v in resolved.items() if isinstance(v, int | float | str | bool)}
        )

    def evaluate(step: int, names: list[str] | None = None) -> dict:
        results = {}
        for name, ds in eval_sets.items():
            if names is not None and name not in names:
                continue
            metrics, _ = evaluate_preferences(
                model=accelerator.unwrap_model(model),
                examples=ds.examples,
                max_length=cfg.max_length,
                truncation=cfg.truncation,
                batch_size=cfg.per_device_eval_batch_size,
                accelerator=accelerator,
                desc=f"eval {name}",
            )
            results[name] = metrics
        if results:
            record = {"kind": "eval", "step": step, "accuracy": {k: v["accuracy"] for k, v in results.items()}}
            log.append(record)
            accelerator.log({f"eval/{k}/accuracy": v for k, v in record["accuracy"].items()}, step=step)
            if show:
                accs = ", ".join(f"{k} {v:.3f}" for k, v in record["accuracy"].items())
                tqdm.write(f"eval step {step}: {accs}")
        return results

    def save_checkpoint(step: int) -> None:
        ckpt = output_dir / "checkpoints" / f"step-{step}"
        accelerator.save_state(str(ckpt))
        if is_main:
            write_json(ckpt / "trainer_state.json", {"global_step": step, "log": log})
            old = sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
            for stale in old[: max(0, len(old) - cfg.save_total_limit)]:
                shutil.rmtree(stale, ignore_errors=True)

    selection = None if cfg.select_best_on is None else BestWeights(cfg.select_best_on, accelerator.unwrap_model(model))

    # ---- train ----
    model.train()
    bar = tqdm(total=total_steps, initial=global_step, desc="train-rm", disable=not show, dynamic_ncols=True)
    running: dict[str, list[torch.Tensor]] = {}
    start_time, pairs_seen = time.perf_counter(), 0
    done = global_step >= total_steps
    for epoch in range(start_epoch, num_epochs):
        if done:
            break
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
        skip_batches = 0
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                stats = compute_loss(model, batch, cfg)
                accelerator.backward(stats["loss"])
                if accelerator.sync_gradients:
                    # inf max_norm measures without clipping; the norm is the same on every process (after all-reduce)
                    stats["grad_norm"] = accelerator.clip_grad_norm_(
                        model.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
                    )
                    stop_if_non_finite(accelerator, stats, global_step + 1, output_dir, log)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in stats.items():
                if v is not None:
                    running.setdefault(k, []).append(v.detach().float())
            pairs_seen += batch["margin"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            bar.update(1)
            if global_step % cfg.logging_steps == 0 or global_step == total_steps:
                means = {k: accelerator.reduce(torch.stack(v).mean(), "mean").item() for k, v in running.items()}
                running = {}
                record = {
                    "kind": "train",
                    "step": global_step,
                    "epoch": epoch,
                    "lr": scheduler.get_last_lr()[0],
                    **means,
                }
                log.append(record)
                accelerator.log({f"train/{k}": v for k, v in means.items()}, step=global_step)
                bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
            if cfg.eval_steps > 0 and global_step % cfg.eval_steps == 0 and global_step < total_steps:
                if selection is None:
                    evaluate(global_step)
                else:
                    selection.offer(global_step, evaluate(global_step, [selection.name])[selection.name]["accuracy"])
                    if cfg.early_stopping_patience and selection.stale_evaluations >= cfg.early_stopping_patience:
                        done = True
            if cfg.save_steps > 0 and global_step % cfg.save_steps == 0 and global_step < total_steps:
                save_checkpoint(global_step)
            if done or global_step >= total_steps:
                done = True
                break
    bar.close()
    train_seconds = time.perf_counter() - start_time

    if selection is not None:
        if not selection.history or selection.history[-1][0] != global_step:  # early stopping has just evaluated it
            selection.offer(global_step, evaluate(global_step, [selection.name])[selection.name]["accuracy"])
        selection.restore()
    eval_results = evaluate(global_step)
    metrics = {
        "eval": eval_results,
        "train": {
            "steps": global_step,
            "seconds": train_seconds,
            "pairs_per_second": pairs_seen / train_seconds if train_seconds > 0 else None,
            "final": next((r for r in reversed(log) if r["kind"] == "train"), None),
            **({"selection": selection.summary()} if selection is not None else {}),
        },
        "data": {"train": {**train_set.stats, **data_counts}},
    }
    accelerator.wait_for_everyone()
    # Sharded weights (FSDP, ZeRO-3) are gathered first; every process takes part in the gather.
    full_state = accelerator.get_state_dict(model) if sharded else None
    if is_main:
        accelerator.unwrap_model(model).save_pretrained(output_dir / MODEL_SUBDIR, state_dict=full_state)
        write_json(output_dir / "metrics.json", metrics)
        write_jsonl(output_dir / "log.jsonl", log)
        if log:
            plot_training(log, output_dir / "training_curves.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics


def train_ensemble(cfg: RewardTrainingConfig, datasets: dict | None = None) -> dict:
    """K members with seeds seed, seed+1, ...; the ensemble is saved under output_dir/model and evaluated as a whole."""
    from rewardlab.data.loading import load_named_preferences, load_preferences
    from rewardlab.modeling.ensemble import ENSEMBLE_NAME
    from rewardlab.modeling.loader import load_reward_model

    output_dir = Path(cfg.output_dir)
    model_dir = output_dir / MODEL_SUBDIR
    if datasets is None:
        datasets = {
            "train": load_preferences(cfg.train_data, **data_options(cfg)),
            "eval": load_named_preferences(cfg.eval_data, **data_options(cfg)),
        }
    members = []
    for k in range(cfg.ensemble_size):
        member_cfg = RewardTrainingConfig(
            **{**asdict(cfg), "ensemble_size": 1, "seed": cfg.seed + k, "output_dir": str(model_dir / f"member-{k}")}
        )
        members.append(train_reward_model(member_cfg, datasets))
    write_json(
        model_dir / ENSEMBLE_NAME,
        {"members": [f"member-{k}" for k in range(cfg.ensemble_size)], "aggregate": cfg.ensemble_aggregate},
    )
    ensemble = load_reward_model(output_dir)
    eval_results = {}
    for name, ds in datasets["eval"].items():
        eval_results[name], _ = evaluate_preferences(
            ensemble, ds.examples, cfg.max_length, cfg.truncation, cfg.per_device_eval_batch_size
        )
    metrics = {
        "eval": eval_results,
        "members": [m["eval"] for m in members],
        "train": {"members": [m["train"] for m in members]},
    }
    write_json(output_dir / "config.json", asdict(cfg) | {"rewardlab_version": version()})
    write_json(output_dir / "metrics.json", metrics)
    return metrics
