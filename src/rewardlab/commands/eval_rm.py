"""`rewardlab eval-rm`: pairwise accuracy, margins, per-subset and RewardBench section scores; ProcessBench's first-error
identification on step data (`--format processbench`, `rewardlab.processbench_eval`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from rewardlab.choices import StepView
from rewardlab.commands.common import call_with_fields, config_command, named_inputs, user_errors
from rewardlab.config import AggregateSpec, EvalBatchingSpec, OutputSpec, PlacementSpec, RewardDataSpec, restate, setting
from rewardlab.data.steps import separator_from_flag
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR
from rewardlab.progress import quiet_libraries


@dataclass(kw_only=True)
class EvalRmConfig(OutputSpec, PlacementSpec, AggregateSpec, EvalBatchingSpec):
    """`rewardlab eval-rm`'s settings (the command is generated from them)."""

    model: str = setting(required=True, help="A reward model directory (or a train-rm output directory).")
    data: list[str] = setting(factory=list, required=True, help="NAME=SPEC evaluation set; repeat for several.")
    output: Path = setting(required=True, help="results.json to write.")
    scores: Path | None = setting(
        None, help="Also write each pair's chosen_reward and rejected_reward (JSONL); listwise: chosen_rewards, rejected_rewards."
    )
    format: str | None = setting(
        None, help="Data format (auto-detected when omitted); also rewardbench2 | rm-bench | processbench (step data)."
    )
    skip_invalid: bool = restate(RewardDataSpec, "skip_invalid")
    step_rewards: StepView | None = setting(
        None,
        show_default=False,
        help="processbench: the step scores, prm (a PRM's P(step correct)) | r3hf (a sequence RM's step rewards); "
        "default: prm for a model trained with --objective prm, else r3hf.",
    )
    threshold: float | None = setting(
        None, help="processbench: a step scored below it is an error (default: 0.5 for prm, a probability; 0 for r3hf)."
    )
    step_separator: str = setting(
        DEFAULT_STEP_SEPARATOR,
        show_default=False,
        help="processbench: the text between steps (default a newline; \\n, \\t typed in a shell are read as such).",
    )


def run(
    *,
    model: str,
    data: list[str],
    output: Path,
    scores: Path | None,
    format: str | None,
    skip_invalid: bool,
    step_rewards: str | None,
    threshold: float | None,
    step_separator: str,
    batch_size: int,
    max_length: int,
    truncation: str,
    aggregate: str | None,
    device: str | None,
    dtype: str,
    progress: bool,
    overwrite: bool,
) -> None:
    """`rewardlab eval-rm` on its resolved settings (EvalRmConfig's fields)."""
    from rewardlab.runtime import check_output_file, dtype_name, version, write_json, write_jsonl

    with user_errors():  # settings and output paths first: they fail in a second, before anything loads
        step_separator = separator_from_flag(step_separator)
        check_step_options(format, step_rewards, threshold, step_separator)
        inputs = named_inputs(model, data)
        check_output_file(output, overwrite=overwrite, inputs=inputs)
        if scores is not None:
            check_output_file(scores, overwrite=overwrite, inputs=[*inputs, output], flag="--scores")

    if format == "processbench":
        run_processbench(
            model=model, data=data, output=output, scores=scores, skip_invalid=skip_invalid, step_rewards=step_rewards,
            threshold=threshold, step_separator=step_separator, batch_size=batch_size, max_length=max_length,
            aggregate=aggregate, device=device, dtype=dtype, progress=progress,
        )  # fmt: skip
        return

    from rewardlab.data.listwise import ListwiseDataset
    from rewardlab.evaluation import evaluate_preferences, score_rows
    from rewardlab.listwise_eval import evaluate_listwise, load_eval_sets, summary_line
    from rewardlab.modeling.loader import load_for_scoring, scoring_placement

    with user_errors():
        quiet_libraries()
        datasets = load_eval_sets(data, format=format, skip_invalid=skip_invalid)  # listwise sets load as such
        placed_on, placed_as = scoring_placement(device, dtype)
        rm = load_for_scoring(model, placed_on, placed_as, aggregate=aggregate)
        results, rows = {}, []
        for name, ds in datasets.items():
            if isinstance(ds, ListwiseDataset):  # RewardBench 2 / RM-Bench: every completion scored alone
                results[name], listwise_rows = evaluate_listwise(rm, ds, max_length, truncation, batch_size, progress)
                rows += listwise_rows
                continue
            metrics, raw = evaluate_preferences(rm, ds.examples, max_length, truncation, batch_size, progress=progress, desc=name)
            metrics["data"] = ds.stats
            results[name] = metrics
            rows += score_rows(name, ds.examples, raw)
        config = {
            "model": model, "data": data, "format": format, "skip_invalid": skip_invalid, "batch_size": batch_size,
            "max_length": max_length, "truncation": truncation, "aggregate": aggregate, "device": str(placed_on),
            "dtype": dtype_name(placed_as), "rewardlab_version": version(),
        }  # fmt: skip
        write_json(output, {"config": config, "results": results})
        if scores is not None:
            write_jsonl(scores, rows)
    for name, m in results.items():
        if (listwise_line := summary_line(name, m)) is not None:
            print(listwise_line)
            continue
        line = f"{name}: accuracy {m['accuracy']:.4f}  mean margin {m['mean_margin']:.3f}  (n={m['n']})"
        if "rewardbench" in m:
            line += "  " + "  ".join(f"{k} {v:.3f}" for k, v in m["rewardbench"].items())
        print(line)
    print(f"wrote {output}")


def check_step_options(format: str | None, step_rewards: str | None, threshold: float | None, step_separator: str) -> None:
    """The step options belong to --format processbench; its separator must be something."""
    from rewardlab.errors import UserError

    if format == "processbench":
        if not step_separator:
            raise UserError("--step-separator must not be empty: the steps are told apart by it")
        return
    given = [flag for flag, value in (("--step-rewards", step_rewards), ("--threshold", threshold)) if value is not None]
    if given:
        raise UserError(f"{', '.join(given)}: only with --format processbench (step data)")


def run_processbench(
    *,
    model: str,
    data: list[str],
    output: Path,
    scores: Path | None,
    skip_invalid: bool,
    step_rewards: str | None,
    threshold: float | None,
    step_separator: str,
    batch_size: int,
    max_length: int,
    aggregate: str | None,
    device: str | None,
    dtype: str,
    progress: bool,
) -> None:
    """eval-rm --format processbench: ProcessBench's figures per subset of every set, and the rows they come from."""
    from rewardlab.modeling.loader import saved_objective, scoring_placement
    from rewardlab.modeling.service import ScoringService
    from rewardlab.processbench_eval import default_threshold, evaluate_processbench, load_step_sets, summary_lines
    from rewardlab.runtime import dtype_name, version, write_json, write_jsonl
    from rewardlab.step_scoring import default_view, view_note

    with user_errors():
        objective = saved_objective(model)
        view = step_rewards or default_view(objective)
        if (note := view_note(view, objective, model)) is not None:
            typer.echo(note, err=True)
        quiet_libraries()
        datasets = load_step_sets(data, skip_invalid=skip_invalid)
        placed_on, placed_as = scoring_placement(device, dtype)
        service = ScoringService.load(
            model, placed_on, placed_as, aggregate=aggregate, batch_size=batch_size, max_length=max_length
        )
        results, rows = {}, []
        for name, ds in datasets.items():
            results[name], set_rows = evaluate_processbench(
                service, ds, view, threshold=threshold, separator=step_separator, progress=progress
            )
            rows += set_rows
        config = {
            "model": model, "data": data, "format": "processbench", "skip_invalid": skip_invalid,
            "step_rewards": view, "threshold": default_threshold(view, threshold), "step_separator": step_separator,
            "batch_size": batch_size, "max_length": max_length, "aggregate": aggregate, "device": str(placed_on),
            "dtype": dtype_name(placed_as), "rewardlab_version": version(),
        }  # fmt: skip
        write_json(output, {"config": config, "results": results})
        if scores is not None:
            write_jsonl(scores, rows)
    for name, figures in results.items():
        print("\n".join(summary_lines(name, figures)))
    print(f"wrote {output}")


eval_rm = config_command(
    EvalRmConfig,
    call_with_fields(run),
    doc="Evaluate a reward model on named preference sets (pairwise, or listwise: rewardbench2, rm-bench).",
    config_file=False,
    show_defaults=True,
    name="eval_rm",
)
