"""`rewardlab export`: a checkpoint that plain AutoModelForSequenceClassification loads."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import quiet_libraries, user_errors


def export(
    model: str = typer.Option(..., help="A rewardlab reward model (or train-rm output) directory."),
    output: Path = typer.Option(..., help="Directory for the exported checkpoint."),
) -> None:
    """Export to transformers' AutoModelForSequenceClassification (num_labels=1) for TRL, OpenRLHF, RewardBench."""
    from rewardlab.export import ExportError, export_sequence_classifier

    with user_errors():
        quiet_libraries()
        try:
            report = export_sequence_classifier(model, output)
        except ExportError as err:
            raise ValueError(str(err)) from None
    print(
        f"wrote {report['architecture']} to {report['output_dir']}; "
        f"max |reward difference| vs rewardlab: {report['max_abs_diff']:.2e}"
    )
    for w in report["warnings"]:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
