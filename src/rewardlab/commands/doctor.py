"""`rewardlab doctor`: contract checks for a reward checkpoint (rewardlab's, or a transformers sequence classifier)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from rewardlab.commands.common import call_with_fields, config_command, user_errors
from rewardlab.config import EvalBatchingSpec, PlacementSpec, restate, setting
from rewardlab.progress import quiet_libraries


@dataclass(kw_only=True)
class DoctorConfig:
    """`rewardlab doctor`'s settings (the command is generated from them)."""

    model: str = setting(
        required=True,
        positional=True,
        help="A rewardlab reward model (or train-rm run) directory, a transformers "
        "*ForSequenceClassification directory with one label, or tiny-llama.",
    )
    data: str | None = setting(None, help="Preference pairs (file or hub id): length baseline and correlation.")
    format: str | None = setting(None, help="Data format (auto-detected when omitted).")
    limit: int = setting(256, min=1, help="Read at most this many pairs of --data.")
    max_length: int = restate(EvalBatchingSpec, "max_length", help="Truncate longer --data sequences, keeping their end.")
    batch_size: int = setting(16, min=1, help="Sequences per forward pass on --data.")
    output: Path | None = setting(None, help="Also write the checks as JSON (e.g. doctor.json).")
    device: str | None = restate(PlacementSpec, "device")


def run(
    *,
    model: str,
    data: str | None,
    format: str | None,
    limit: int,
    max_length: int,
    batch_size: int,
    output: Path | None,
    device: str | None,
) -> None:
    """`rewardlab doctor` on its resolved settings (DoctorConfig's fields)."""
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


doctor = config_command(
    DoctorConfig,
    call_with_fields(run),
    doc="Check a reward checkpoint's contract: the head loaded and trained, the reward read at the text's last token "
    "(pad, EOS, chat-template closing), padding side, packed vs padded, fp32 vs bf16, export and server round-trips; "
    "with --data, the length-only baseline and the reward-length correlation. Exit 1 when a check fails.",
    config_file=False,
    show_defaults=True,
    name="doctor",
)
