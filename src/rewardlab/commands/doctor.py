"""`rewardlab doctor`: contract checks for a reward checkpoint (rewardlab's, or a transformers sequence classifier)."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import device_option, user_errors
from rewardlab.progress import quiet_libraries


def doctor(
    model: str = typer.Argument(
        ...,
        help="A rewardlab reward model (or train-rm run) directory, a transformers "
        "*ForSequenceClassification directory with one label, or tiny-llama.",
    ),
    data: str | None = typer.Option(None, "--data", help="Preference pairs (file or hub id): length baseline and correlation."),
    format: str | None = typer.Option(None, "--format", help="Data format (auto-detected when omitted)."),
    limit: int = typer.Option(256, "--limit", min=1, help="Read at most this many pairs of --data."),
    max_length: int = typer.Option(1024, "--max-length", min=2, help="Truncate longer --data sequences, keeping their end."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per forward pass on --data."),
    output: Path | None = typer.Option(None, "--output", help="Also write the checks as JSON (e.g. doctor.json)."),
    device: str | None = device_option(),
) -> None:
    """Check a reward checkpoint's contract: the head loaded and trained, the reward read at the text's last token (pad,
    EOS, chat-template closing), padding side, packed vs padded, fp32 vs bf16, export and server round-trips; with
    --data, the length-only baseline and the reward-length correlation. Exit 1 when a check fails."""
    from rewardlab.doctor import FAILED, examine, format_table
    from rewardlab.runtime import version, write_json

    with user_errors():
        quiet_libraries()
        report = examine(model, data, format=format, limit=limit, max_length=max_length, batch_size=batch_size, device=device)
    print(format_table(report["checks"]))
    if output is not None:
        write_json(output, report | {"rewardlab_version": version()})
    failed = [row["name"] for row in report["checks"] if row["status"] == FAILED]
    if failed:
        print(f"FAILED: {', '.join(failed)} ({len(failed)} of {len(report['checks'])} checks; {report['seconds']:.1f} s)")
        raise typer.Exit(1)
    print(f"ok: no check failed ({len(report['checks'])} checks; {report['seconds']:.1f} s)")
