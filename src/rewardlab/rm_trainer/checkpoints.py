"""Checkpoints (save, keep the newest few, resume) and the stop at a non-finite loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from rewardlab.errors import UserError
from rewardlab.rm_trainer.state import TrainingRun
from rewardlab.runtime import NonFiniteError, first_non_finite, follow_umask, write_json, write_jsonl

STATE_NAME = "trainer_state.json"  # beside accelerate's state in every checkpoint: the step and the log so far


def checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((output_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(run: TrainingRun) -> None:
    """accelerate's state (model, optimiser, schedule, RNGs) and the trainer's; only the newest `save_total_limit` stay."""
    ckpt = run.output_dir / "checkpoints" / f"step-{run.global_step}"
    run.accelerator.save_state(str(ckpt))
    if run.accelerator.is_main_process:
        write_json(ckpt / STATE_NAME, {"global_step": run.global_step, "log": run.log})
        follow_umask(ckpt)
        old = checkpoints(run.output_dir)
        for stale in old[: max(0, len(old) - run.cfg.save_total_limit)]:
            shutil.rmtree(stale, ignore_errors=True)


def resume_from_latest(run: TrainingRun) -> None:
    """Load the newest checkpoint into `run`: its step and log, and where in which epoch the data continues."""
    ckpt = latest_checkpoint(run.output_dir)
    if ckpt is None:
        raise UserError(f"--resume: no checkpoint under {run.output_dir / 'checkpoints'}")
    run.accelerator.load_state(str(ckpt))
    state = json.loads((ckpt / STATE_NAME).read_text())
    run.global_step, run.log = state["global_step"], state["log"]
    run.start_epoch, run.skip_batches = divmod(run.global_step * run.cfg.gradient_accumulation_steps, len(run.loader))
    if run.show:
        print(f"resumed from {ckpt} at step {run.global_step}")


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
