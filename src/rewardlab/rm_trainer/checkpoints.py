"""Checkpoints: save, keep the newest few, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rewardlab.errors import UserError
from rewardlab.rm_trainer.state import TrainingRun
from rewardlab.runtime import follow_umask, write_json

STATE_NAME = "trainer_state.json"  # beside accelerate's state in every checkpoint: the step, the log, model selection


def checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(run: TrainingRun) -> None:
    """accelerate's state (model, optimiser, schedule, RNGs) and the trainer's, with model selection's history and best
    weights; only the newest `save_total_limit` stay."""
    ckpt = run.output_dir / "checkpoints" / f"step-{run.global_step}"
    run.accelerator.save_state(str(ckpt))
    selection = run.selection
    if selection is not None:
        selection.save_weights(ckpt, run.accelerator.process_index)
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        state = {"global_step": run.global_step, "log": run.log}
        write_json(ckpt / STATE_NAME, state | ({} if selection is None else {"selection": selection.checkpoint_state()}))
        follow_umask(ckpt)
        old = checkpoints(run.output_dir)
        for stale in old[: max(0, len(old) - run.cfg.save_total_limit)]:
            shutil.rmtree(stale, ignore_errors=True)


def resume_from_latest(run: TrainingRun) -> None:
    """Load the newest checkpoint into `run`: its step and log, model selection's history and best weights, and where in
    which epoch the data continues."""
    ckpt = latest_checkpoint(run.output_dir)
    if ckpt is None:
        raise UserError(f"--resume: no checkpoint under {run.output_dir / 'checkpoints'}")
    run.accelerator.load_state(str(ckpt))
    take_configured_optimisation(run)
    state = json.loads((ckpt / STATE_NAME).read_text())
    run.global_step, run.log = state["global_step"], state["log"]
    # Updates before the epoch's last are whole accumulations; the last may take fewer batches (the epoch's end updates)
    run.start_epoch, updates_done = divmod(run.global_step, run.updates_per_epoch)
    run.skip_batches = updates_done * run.cfg.gradient_accumulation_steps
    selection = run.selection
    taken = selection is not None and selection.load(state.get("selection"), ckpt, run.accelerator.process_index)
    if run.show:
        print(f"resumed from {ckpt} at step {run.global_step}")
        if selection is not None and not taken:
            print(f"model selection on {selection.name}'s {selection.metric} starts afresh: the checkpoint did not select on it")


def take_configured_optimisation(run: TrainingRun) -> None:
    """The run's own learning rate and weight decay, at the step the checkpoint stands at. accelerate's state brings back
    the checkpoint's (the optimiser's groups, the schedule's base rates), so a resume with a lower --lr (what the
    non-finite stop suggests) would go on at the old one while config.json recorded the new. Unchanged settings give
    the same numbers as the checkpoint's, bit for bit. The schedule (`transformers.get_scheduler`: a LambdaLR) was built
    for this run's total steps; its rate at step n is base * lr_lambda(n)."""
    schedule, lr = run.scheduler, run.cfg.learning_rate
    schedule.base_lrs = [lr] * len(schedule.base_lrs)
    for group, factor in zip(run.optimizer.param_groups, schedule.lr_lambdas, strict=True):
        group["initial_lr"], group["weight_decay"] = lr, run.cfg.weight_decay
        group["lr"] = lr * factor(schedule.last_epoch)
