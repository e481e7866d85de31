"""The training loop: one `training_step` per batch (stopped before an update with a non-finite loss or gradient
norm); after every optimiser update, logging, evaluation (with model selection and early stopping) and checkpoints as
configured. Then the final evaluation, on the best validation weights with model selection."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from rewardlab.choices import PRM
from rewardlab.config import RewardTrainingFields
from rewardlab.evaluation import evaluate_preferences, score_rows
from rewardlab.objective import compute_loss, compute_step_loss
from rewardlab.progress import progress, write
from rewardlab.rm_trainer.checkpoints import latest_checkpoint, save_checkpoint
from rewardlab.rm_trainer.selection import BestWeights
from rewardlab.rm_trainer.state import TrainingRun
from rewardlab.runtime import NonFiniteError, first_non_finite, write_jsonl
from rewardlab.step_evaluation import evaluate_steps, step_score_rows
from rewardlab.tracking import tracker_scalars

Stats = dict[str, torch.Tensor]


def training_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    cfg: RewardTrainingFields,
    accelerator: Accelerator,
    optimizer: torch.optim.Optimizer,
    before_update: Callable[[Stats], None] | None = None,
    measure: bool = False,
) -> Stats:
    """Forward and backward on one batch (the objective `compute_loss` with the run's objective settings, packed as
    `cfg.padding_free` says); on the batch that completes a gradient accumulation, the gradients are clipped to
    `cfg.max_grad_norm` (`grad_norm` added to the stats), `before_update` sees the stats, and the optimiser steps. Returns
    the objective's stats (`loss` still carries its graph). `measure`: the objective also measures each loss term's
    gradient norm at the last hidden layer (`reward_grad_norm`, `reg_grad_norm`; the loop asks on the batches of logging
    steps only)."""
    with accelerator.accumulate(model):
        if cfg.objective == PRM:  # step labels: binary cross-entropy at each labelled step's end
            stats = compute_step_loss(model, batch, cfg, cfg.padding_free, measure_gradients=measure)
        else:
            stats = compute_loss(model, batch, cfg, cfg.padding_free, measure_gradients=measure)
        accelerator.backward(stats["loss"])
        if accelerator.sync_gradients:
            # inf max_norm measures without clipping; the norm is the same on every process (after all-reduce)
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
            stats["grad_norm"] = accelerator.clip_grad_norm_(model.parameters(), max_norm)
            if before_update is not None:
                before_update(stats)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return stats


def stop_if_non_finite(run: TrainingRun, stats: dict[str, torch.Tensor]) -> None:
    """Stop at the first non-finite loss or gradient norm, before the optimiser steps with it: the log so far is written,
    no model or metrics.json (nothing claims success), and the error names the step, the value and the last checkpoint."""
    values = {"loss": stats["loss"]}
    if stats.get("grad_norm") is not None:  # DeepSpeed's clipping returns no norm
        values["grad norm"] = stats["grad_norm"]
    problem = first_non_finite(values)
    accelerator = run.accelerator
    flag = torch.tensor(float(problem is not None), device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, "sum")  # every process stops together
    if not flag.item():
        return
    problem = problem or "loss or grad norm non-finite on another process"
    if accelerator.is_main_process:
        write_jsonl(run.output_dir / "log.jsonl", run.log)
    last = latest_checkpoint(run.output_dir)
    kept = f"the last good checkpoint is {last} (--resume)" if last else "no checkpoint was saved (--save-steps N keeps some)"
    raise NonFiniteError(
        f"step {run.global_step + 1}: {problem}; training stopped before the update, nothing saved as finished; {kept}. "
        "Try a lower --lr or a smaller --max-grad-norm."
    )


@dataclass
class LoopResult:
    """What the loop hands the final evaluation: the validation history (with --select-best-on) and the throughput."""

    selection: BestWeights | None
    seconds: float  # first batch to last update
    pairs_seen: int  # over all processes


def train_loop(run: TrainingRun) -> LoopResult:
    """Train from where `run` stands to `total_steps`, or to an early stop."""
    cfg, selection = run.cfg, run.selection
    run.model.train()
    bar = progress(total=run.total_steps, initial=run.global_step, desc="train-rm", enabled=run.show)
    running: dict[str, list[torch.Tensor]] = {}
    start_time, pairs_seen = time.perf_counter(), 0
    window = Throughput(run.accelerator)
    batches = epoch_batches(run)
    for epoch, batch in batches:
        stats = training_step(
            run.model, batch, cfg, run.accelerator, run.optimizer,
            before_update=lambda stats: stop_if_non_finite(run, stats), measure=is_logging_step(run, run.global_step + 1),
        )  # fmt: skip
        for k, v in stats.items():
            if v is not None:
                running.setdefault(k, []).append(v.detach().float())
        pairs_seen += batch["index"].shape[0] * run.accelerator.num_processes  # pairs, or a PRM's examples
        window.add(batch["attention_mask"])
        if not run.accelerator.sync_gradients:
            continue
        run.scheduler.step()
        run.global_step += 1
        bar.update(1)
        if is_logging_step(run, run.global_step):
            means = log_training(run, epoch, running, window.tokens_per_second())
            running = {}
            bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}")
        if after_update(run, selection):
            break
    batches.close()
    bar.close()
    return LoopResult(selection, time.perf_counter() - start_time, pairs_seen)


def epoch_batches(run: TrainingRun) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(epoch, batch) from where the run stands (after a resume: past the batches already trained on) to the last epoch."""
    if run.global_step >= run.total_steps:
        return
    skip = run.skip_batches
    for epoch in range(run.start_epoch, run.num_epochs):
        run.loader.set_epoch(epoch)
        batches = rest_of_epoch(run.accelerator.skip_first_batches(run.loader, skip)) if skip else run.loader
        skip = 0
        for batch in batches:
            yield epoch, batch


def rest_of_epoch(loader: Iterable) -> Iterator:
    """The batches of an epoch that a checkpoint stopped in. Starting an epoch draws a seed from torch's RNG (the
    DataLoader's); the uninterrupted run drew it at the epoch's start, before the checkpoint whose RNG state the resume
    restored, so the state is put back after the draw and dropout goes on as it would have."""
    state = torch.get_rng_state()
    batches = iter(loader)
    first = next(batches)  # accelerate's loader starts the DataLoader's iterator at the first batch
    torch.set_rng_state(state)
    return itertools.chain([first], batches)


class Throughput:
    """Tokens trained on (real tokens, every process) per second of wall time, since the last reading."""

    def __init__(self, accelerator: Accelerator):
        self.accelerator = accelerator
        self.tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
        self.start = time.perf_counter()

    def add(self, attention_mask: torch.Tensor) -> None:
        self.tokens += attention_mask.sum().to(self.tokens.device)

    def tokens_per_second(self) -> float:
        """The rate since the last reading (or the start); restarts the count."""
        tokens = self.accelerator.reduce(self.tokens, "sum").item()
        now = time.perf_counter()
        rate = tokens / (now - self.start) if now > self.start else 0.0
        self.tokens.zero_()
        self.start = now
        return rate


def is_logging_step(run: TrainingRun, step: int) -> bool:
    """Whether optimiser step `step` writes a train record: every `logging_steps`, and the last."""
    return step % run.cfg.logging_steps == 0 or step == run.total_steps


def log_training(
    run: TrainingRun, epoch: int, running: dict[str, list[torch.Tensor]], tokens_per_second: float
) -> dict[str, float]:
    """A train record in the log and, as the same numbers, the trackers (`train/KEY`): the mean of every statistic since
    the last record, over processes, with the learning rate and the throughput.

    The loss terms (`reward_term`, `reg_term`) are such means like the loss they sum to; the gradient norms
    (`reward_grad_norm`, `reg_grad_norm`) are measured on the logging step's own batches only (the mean over its
    micro-batches and processes, each the norm for that process's batch)."""
    means = {k: run.accelerator.reduce(torch.stack(v).mean(), "mean").item() for k, v in running.items()}
    lr = run.scheduler.get_last_lr()[0]
    record = {"kind": "train", "step": run.global_step, "epoch": epoch, "lr": lr, **means, "tokens_per_second": tokens_per_second}
    run.log.append(record)
    run.accelerator.log(tracker_scalars(record, "train/"), step=run.global_step)
    return means


def after_update(run: TrainingRun, selection: BestWeights | None) -> bool:
    """Evaluation and checkpoint at their intervals (not at the last step: the end of the run does its own); True when
    training is over (the last step, or early stopping)."""
    cfg, step = run.cfg, run.global_step
    stop = step >= run.total_steps
    if cfg.eval_steps > 0 and step % cfg.eval_steps == 0 and not stop:
        if selection is None:
            evaluate(run)
        else:
            selection.offer(step, evaluate(run, [selection.name])[selection.name])
            stop = bool(cfg.early_stopping_patience) and selection.stale_evaluations >= cfg.early_stopping_patience
    if cfg.save_steps > 0 and step % cfg.save_steps == 0 and step < run.total_steps:
        save_checkpoint(run)
    return stop


def evaluate(run: TrainingRun, names: list[str] | None = None, scores: list[dict] | None = None) -> dict[str, dict]:
    """Metrics of every eval set (or those named) at the current step; an eval record goes to the log and the trackers.
    Each pair's scores are appended to `scores` as eval-rm's `--scores` rows, when it is given."""
    results, rows = evaluate_sets(unwrapped(run), run.eval_sets, run.cfg, run.accelerator, names, run.eval_encodings)
    if scores is not None:
        scores += rows
    if results:
        by_metric = {metric: {k: v[metric] for k, v in results.items()} for metric in ("accuracy", "loss")}
        run.log.append({"kind": "eval", "step": run.global_step, **by_metric})
        scalars = {f"eval/{k}/{metric}": v for metric, values in by_metric.items() for k, v in values.items()}
        run.accelerator.log(scalars, step=run.global_step)
        if run.show:
            write(f"eval step {run.global_step}: " + ", ".join(f"{k} {v:.3f}" for k, v in by_metric["accuracy"].items()))
    return results


def evaluate_sets(
    model: torch.nn.Module,
    eval_sets: dict,
    cfg: RewardTrainingFields,
    accelerator: Accelerator | None = None,
    names: list[str] | None = None,
    encodings: dict[int, tuple] | None = None,
) -> tuple[dict[str, dict], list[dict]]:
    """Metrics of every eval set (or those named) for one run's model, and every example's score rows (scores.jsonl):
    step-labelled sets for a process reward model, preference pairs otherwise. `encodings` keeps each set's encoding
    from one call to the next (a run encodes its eval sets once, not at every evaluation)."""
    chosen = {name: dataset for name, dataset in eval_sets.items() if names is None or name in names}
    if cfg.objective == PRM:
        return evaluate_step_sets(model, chosen, cfg, accelerator, encodings)
    return evaluate_preference_sets(model, chosen, cfg, accelerator, encodings)


def evaluate_preference_sets(
    model: torch.nn.Module,
    eval_sets: dict,
    cfg: RewardTrainingFields,
    accelerator: Accelerator | None = None,
    encodings: dict[int, tuple] | None = None,
) -> tuple[dict[str, dict], list[dict]]:
    """Pairwise metrics of every preference set for `model` (a run's model, or an ensemble), and each pair's score rows;
    each set's encoding is read from `encodings` (`evaluate_preferences`), or made and kept there."""
    results, rows = {}, []
    for name, dataset in eval_sets.items():
        results[name], raw = evaluate_preferences(
            model=model,
            examples=dataset.examples,
            encodings=encodings,
            max_length=cfg.max_length,
            truncation=cfg.truncation,
            batch_size=cfg.per_device_eval_batch_size,
            accelerator=accelerator,
            desc=f"eval {name}",
        )
        rows += score_rows(name, dataset.examples, raw)
    return results, rows


def evaluate_step_sets(
    model: torch.nn.Module,
    eval_sets: dict,
    cfg: RewardTrainingFields,
    accelerator: Accelerator | None = None,
    encodings: dict[int, tuple] | None = None,
) -> tuple[dict[str, dict], list[dict]]:
    """A process reward model's step metrics of every step-labelled set, and each example's score rows; each set's
    encoding is read from `encodings` (`evaluate_steps`), or made and kept there."""
    results, rows = {}, []
    for name, dataset in eval_sets.items():
        results[name], logits = evaluate_steps(
            model, dataset.examples, cfg.max_length, cfg.per_device_eval_batch_size, accelerator, desc=f"eval {name}",
            encodings=encodings,
        )  # fmt: skip
        rows += step_score_rows(name, dataset.examples, logits)
    return results, rows


def final_evaluation(run: TrainingRun, loop: LoopResult) -> dict:
    """metrics.json's data: with model selection, the best validation weights are restored first; then every eval set is
    evaluated (each pair's scores kept in `run.final_scores`, for scores.jsonl)."""
    selection, seconds = loop.selection, loop.seconds
    if selection is not None:
        if not selection.history or selection.history[-1][0] != run.global_step:  # early stopping has just evaluated it
            selection.offer(run.global_step, evaluate(run, [selection.name])[selection.name])
        selection.restore()
    run.final_scores = []
    eval_results = evaluate(run, scores=run.final_scores)
    train = {
        "steps": run.global_step,
        "seconds": seconds,
        "pairs_per_second": loop.pairs_seen / seconds if seconds > 0 else None,
        "final": next((r for r in reversed(run.log) if r["kind"] == "train"), None),
    }
    if selection is not None:
        train["selection"] = selection.summary()
    strength = regulariser_strength([r for r in run.log if r["kind"] == "train"])
    if strength is not None:
        train["regulariser_strength"] = strength
    return {"eval": eval_results, "train": train, "data": {"train": run.train_stats}}


def regulariser_strength(records: list[dict]) -> dict | None:
    """How hard the regulariser pulls against the reward loss, from the train records: per record, the ratio of the
    gradient norms at the last hidden layer (reg_grad_norm / reward_grad_norm) and of the loss terms (reg_term /
    reward_term); their means over the records and their values in the first and the last, and the mean norms. None
    without loss terms in the log (a log written before they were). A ratio is None where no record has it: a frozen
    backbone (no gradient norms), alpha = 1 (no reward term to divide by)."""
    with_terms = [r for r in records if "reward_term" in r]
    if not with_terms:
        return None
    measured = [r for r in with_terms if "reward_grad_norm" in r]
    grad = [r["reg_grad_norm"] / r["reward_grad_norm"] for r in measured if r["reward_grad_norm"] > 0]
    loss = [r["reg_term"] / r["reward_term"] for r in with_terms if r["reward_term"] > 0]
    return {
        "grad_norm_ratio": mean_or_none(grad),
        "loss_ratio": mean_or_none(loss),
        "first_grad_norm_ratio": grad[0] if grad else None,
        "final_grad_norm_ratio": grad[-1] if grad else None,
        "first_loss_ratio": loss[0] if loss else None,
        "final_loss_ratio": loss[-1] if loss else None,
        "reward_grad_norm": mean_or_none([r["reward_grad_norm"] for r in measured]),
        "reg_grad_norm": mean_or_none([r["reg_grad_norm"] for r in measured]),
        "n_records": len(with_terms),
    }


def mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def unwrapped(run: TrainingRun) -> torch.nn.Module:
    return run.accelerator.unwrap_model(run.model)
