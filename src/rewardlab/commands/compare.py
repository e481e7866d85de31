"""`rewardlab compare`: is reward model A really better than B on these pairs? Paired statistics over pairs and seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewardlab.commands.common import call_with_fields, config_command, user_errors
from rewardlab.config import EvalBatchingSpec, PlacementSpec, RunSpec, StudySpec, restate, setting
from rewardlab.errors import UserError
from rewardlab.progress import quiet_libraries


@dataclass(kw_only=True)
class CompareConfig(PlacementSpec, EvalBatchingSpec):
    """`rewardlab compare`'s settings (the command is generated from them); model sources are scored as eval-rm scores."""

    sides: list[str] = setting(
        factory=list,
        required=True,
        positional=True,
        metavar="NAME=SOURCE[,SOURCE...] NAME=SOURCE[,SOURCE...]",
        help="Two sides, NAME=SOURCE[,SOURCE...]: eval-rm --scores files (or models, with --data), one per seed, seeds "
        "paired by their order. The difference is the first side minus the second.",
    )
    output: Path = setting(required=True, help="Comparison JSON to write (the forest plot goes beside it, .png).")
    dataset: str | None = setting(None, help="Compare this dataset only (default: every dataset the files score).")
    level: float = restate(StudySpec, "level", help="Confidence level of the intervals and the verdict.")
    resamples: int = restate(StudySpec, "resamples", help="Bootstrap resamples over pairs.")
    seed: int = setting(0, help="Seed of the bootstrap.")
    data: list[str] = setting(factory=list, help="NAME=SPEC evaluation set, to score model sources with eval-rm's code; repeat.")
    format: str | None = setting(None, help="Data format of --data (auto-detected when omitted).")
    progress: bool = restate(RunSpec, "progress")


def run(
    *,
    sides: list[str],
    output: Path,
    dataset: str | None,
    level: float,
    resamples: int,
    seed: int,
    data: list[str],
    format: str | None,
    batch_size: int,
    max_length: int,
    truncation: str,
    device: str | None,
    dtype: str,
    progress: bool,
) -> None:
    """`rewardlab compare` on its resolved settings (CompareConfig's fields)."""
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


compare = config_command(
    CompareConfig,
    call_with_fields(run),
    doc="Compare two reward models on the same pairs: accuracies, the paired difference with a bootstrap interval, "
    "McNemar's exact p, with several seeds a t-interval over seeds, and a verdict (better / worse / not distinguishable "
    "at this size).",
    config_file=False,
    show_defaults=True,
    name="compare",
)
