"""`rewardlab compare`: is reward model A really better than B on these pairs? Paired statistics over pairs and seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import device_option, dtype_option, progress_option, user_errors
from rewardlab.config import BatchingSpec, OptimisationSpec
from rewardlab.errors import UserError
from rewardlab.paired_stats import LEVEL, RESAMPLES
from rewardlab.progress import quiet_libraries


def compare(
    sides: list[str] = typer.Argument(
        ...,
        metavar="NAME=SOURCE[,SOURCE...] NAME=SOURCE[,SOURCE...]",
        help="Two sides, NAME=SOURCE[,SOURCE...]: eval-rm --scores files (or models, with --data), one per seed, seeds "
        "paired by their order. The difference is the first side minus the second.",
    ),
    output: Path = typer.Option(..., help="Comparison JSON to write (the forest plot goes beside it, .png)."),
    dataset: str | None = typer.Option(None, help="Compare this dataset only (default: every dataset the files score)."),
    level: float = typer.Option(LEVEL, min=0.5, max=0.999, help="Confidence level of the intervals and the verdict."),
    resamples: int = typer.Option(RESAMPLES, min=200, help="Bootstrap resamples over pairs."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    data: list[str] = typer.Option([], help="NAME=SPEC evaluation set, to score model sources with eval-rm's code; repeat."),
    format: str | None = typer.Option(None, help="Data format of --data (auto-detected when omitted)."),
    batch_size: int = typer.Option(OptimisationSpec.per_device_eval_batch_size),
    max_length: int = typer.Option(BatchingSpec.max_length),
    truncation: str = typer.Option(BatchingSpec.truncation, help="keep_end | drop"),
    device: str | None = device_option(),
    dtype: str = dtype_option(),
    progress: bool = progress_option(),
) -> None:
    """Compare two reward models on the same pairs: accuracies, the paired difference with a bootstrap interval, McNemar's
    exact p, with several seeds a t-interval over seeds, and a verdict (better / worse / not distinguishable at this size)."""
    from rewardlab.comparison import compare_sides, load_side, parse_sides, plot_forest, report, summary_line
    from rewardlab.runtime import write_json

    with user_errors():
        a, b = parse_sides(sides)
        if output.suffix == ".png":
            raise UserError(f"--output {output}: the JSON's path (the forest plot is written beside it, as .png)")
        scoring = {"format": format, "max_length": max_length, "truncation": truncation, "batch_size": batch_size,
                   "device": device, "dtype": dtype, "progress": progress}  # fmt: skip
        if data:
            quiet_libraries()
        tables_a, tables_b = load_side(a, data, dataset, **scoring), load_side(b, data, dataset, **scoring)
        results = compare_sides(a, tables_a, b, tables_b, dataset=dataset, level=level, resamples=resamples, seed=seed)
        write_json(output, report(a, b, results, resamples=resamples, seed=seed))
        figure = output.with_suffix(".png")
        plot_forest(a.name, b.name, results, figure)
    for name, c in results:
        print(summary_line(a.name, b.name, c, name if len(results) > 1 else None))
    print(f"wrote {output} and {figure}")
