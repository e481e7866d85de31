"""`rewardlab demo`: the whole RLHF loop on the built-in world, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import (
    check_at_least,
    overwrite_option,
    progress_option,
    setting_option,
    user_errors,
)
from rewardlab.config import TrackingSpec
from rewardlab.errors import UserError
from rewardlab.progress import quiet_libraries


def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", help="Directory for report.md, results.json and figures."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (about 5 minutes on 2 CPU cores)."),
    seeds: int | None = typer.Option(None, help="Seeds per reward-model variant (default: 1 quick, 3 full)."),
    world: int | None = typer.Option(
        None, "--world", help="World version: 4 (default: rating feedback after every answer, an ID-only shortcut) or 3."
    ),
    workers: int = typer.Option(
        2, "--workers", help="Independent runs (reward models, PPO runs) trained at once, in processes of one thread each."
    ),
    progress: bool = progress_option(),
    overwrite: bool = overwrite_option(),
    report_to: list[str] | None = setting_option(TrackingSpec, "report_to"),
) -> None:
    """Base policy -> preference data -> reward models (vanilla, margin, label smoothing, GRM) -> best-of-N -> PPO."""
    from rewardlab.demo import DemoConfig, run_demo

    with user_errors():
        check_at_least("--seeds", seeds, 1)
        check_at_least("--workers", workers, 1)
        if world not in (None, 3, 4):
            raise UserError(f"--world {world}: expected 3 or 4")
        quiet_libraries()
        extra = {} if world is None else {"world_version": world}
        if report_to:
            extra["report_to"] = list(report_to)
        results = run_demo(
            DemoConfig.make(
                quick, seeds, output_dir=str(output), progress=progress, overwrite=overwrite, workers=workers, **extra
            )
        )
    for line in results["findings"]:
        print(f"- {line}")
    print(f"wrote {output}/report.md, results.json and figures")
