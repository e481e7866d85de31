"""`rewardlab score`: sequence, prompt and token rewards for prompt/completion data, as JSONL (and an HTML view); with
`--step-rewards prm | r3hf`, one reward per step of step data (`rewardlab.step_scoring`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from rewardlab.choices import StepView
from rewardlab.commands.common import call_with_fields, config_command
from rewardlab.config import AggregateSpec, NormalizeSpec, OutputSpec, PlacementSpec, setting
from rewardlab.data.steps import separator_from_flag
from rewardlab.data.types import DEFAULT_STEP_SEPARATOR
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C, METHODS, TOKEN_REWARD_METHODS, token_reward_method


@dataclass(kw_only=True)
class ScoreConfig(OutputSpec, PlacementSpec, NormalizeSpec, AggregateSpec):
    """`rewardlab score`'s settings (the command is generated from them)."""

    model: str = setting(
        required=True, help="Reward model directory (or a train-rm output directory, or an ensemble), or 'tiny-llama'."
    )
    data: str = setting(required=True, help="Prompt/completion data: a .jsonl/.json/.parquet/.csv file or hub id.")
    output: Path = setting(required=True, help="JSONL file to write, one scored row per input row.")
    token_rewards: str | None = setting(None, help=f"Token-level rewards to add: one of {', '.join(METHODS)}.")
    html: Path | None = setting(None, help="Also write an HTML page colouring tokens by reward.")
    batch_size: int = setting(8, min=1, help="Sequences per forward pass.")
    max_length: int | None = setting(None, min=2, help="Truncate longer sequences, keeping their end.")
    beta_c: float = setting(DEFAULT_BETA_C, help="mix: weight of r3hf vs the sparse reward (R3HF Eq. 7).")
    abc_beta: float = setting(DEFAULT_ABC_BETA, help="abc: weight of the attention-distributed part.")
    limit: int | None = setting(None, min=1, help="Score only the first N rows.")
    skip_invalid: bool = setting(False, flags=("--skip-invalid",), help="Skip bad rows instead of stopping.")
    step_rewards: StepView | None = setting(
        None,
        help="One reward per step instead: prm (a PRM's score at each step's end) | r3hf (a sequence RM's token rewards "
        "summed within each step); --data is step data, or prompt/completion rows split on --step-separator.",
    )
    step_separator: str = setting(
        DEFAULT_STEP_SEPARATOR,
        show_default=False,
        help="With --step-rewards: the text between steps (default a newline; \\n, \\t typed in a shell are read as such).",
    )


def config_path(output: Path) -> Path:
    """`scores.jsonl` -> `scores.config.json` (next to the output; `.jsonl.gz` handled too)."""
    name = output.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(name + ".config.json")


def check_settings(token_rewards: str | None) -> None:
    """What the config's fields do not check (their ranges and choices): the token-reward method's name."""
    if token_rewards is not None:
        token_reward_method(token_rewards, "--token-rewards")


def check_step_settings(step_rewards: str | None, step_separator: str, token_rewards: str | None, html: Path | None) -> None:
    """--step-rewards writes step rows: not with the token-level outputs; the separator must be something."""
    from rewardlab.errors import UserError

    if step_rewards is None:
        return
    if token_rewards is not None or html is not None:
        flag = "--token-rewards" if token_rewards is not None else "--html"
        raise UserError(f"{flag} does not combine with --step-rewards (its rows hold one reward per step, not per token)")
    if not step_separator:
        raise UserError("--step-separator must not be empty: the steps are told apart by it")


def check_outputs(output: Path, html: Path | None, overwrite: bool, inputs: list[str]) -> None:
    """The scores file, its config beside it and the HTML page may be written (nothing a user made is replaced)."""
    from rewardlab.runtime import check_output_file

    check_output_file(output, overwrite=overwrite, inputs=inputs)
    check_output_file(config_path(output), overwrite=overwrite, inputs=inputs, flag="--output (its config)")
    if html is not None:
        check_output_file(html, overwrite=overwrite, inputs=[*inputs, output], flag="--html")


def run(
    *,
    model: str,
    data: str,
    output: Path,
    token_rewards: str | None,
    html: Path | None,
    batch_size: int,
    max_length: int | None,
    beta_c: float,
    abc_beta: float,
    aggregate: str | None,
    normalize: bool,
    device: str | None,
    dtype: str,
    limit: int | None,
    skip_invalid: bool,
    step_rewards: str | None,
    step_separator: str,
    progress: bool,
    overwrite: bool,
) -> None:
    """`rewardlab score` on its resolved settings (ScoreConfig's fields)."""
    from rewardlab.commands.common import normalization_record, user_errors
    from rewardlab.progress import quiet_libraries
    from rewardlab.runtime import dtype_name, version, write_json, write_jsonl

    with user_errors():  # settings and output paths first: they fail in a second, before anything loads
        check_settings(token_rewards)
        step_separator = separator_from_flag(step_separator)
        check_step_settings(step_rewards, step_separator, token_rewards, html)
        check_outputs(output, html, overwrite, inputs=[model, data])
    if step_rewards is not None:
        run_steps(
            model=model, data=data, output=output, step_rewards=step_rewards, step_separator=step_separator,
            batch_size=batch_size, max_length=max_length, aggregate=aggregate, normalize=normalize, device=device,
            dtype=dtype, limit=limit, skip_invalid=skip_invalid, progress=progress,
        )  # fmt: skip
        return

    from rewardlab.data.loading import load_completions
    from rewardlab.modeling.loader import load_for_scoring, scoring_placement
    from rewardlab.scoring import render_html, results_summary, score_completions

    with user_errors():
        quiet_libraries()
        placed_on, placed_as = scoring_placement(device, dtype)
        items = load_completions(data, skip_invalid=skip_invalid, limit=limit)
        rm = load_for_scoring(model, placed_on, placed_as, aggregate=aggregate, normalize=normalize)
        results = score_completions(
            rm,
            items,
            token_rewards=token_rewards,
            batch_size=batch_size,
            max_length=max_length,
            beta_c=beta_c,
            abc_beta=abc_beta,
            progress=progress,
        )
        rows = []
        for item, result in zip(items, results, strict=True):
            row = result.to_row()
            if item.metadata:
                row["metadata"] = item.metadata
            rows.append(row)
        write_jsonl(output, rows)

        summary = results_summary(results)
        # sum(token rewards) = reward - prompt_reward holds only where the method declares it (r3hf; mix at beta_c = 1)
        telescopes = token_rewards is not None and TOKEN_REWARD_METHODS[token_rewards].telescopes_with(beta_c, abc_beta)
        if not telescopes:
            summary["max_abs_sum_gap"] = None
        config = {
            "command": "score", "model": model, "data": data, "output": str(output),
            "html": str(html) if html else None, "token_rewards": token_rewards, "beta_c": beta_c,
            "abc_beta": abc_beta, "aggregate": aggregate, "batch_size": batch_size, "max_length": max_length,
            "device": str(placed_on), "dtype": dtype_name(placed_as), "limit": limit, "skip_invalid": skip_invalid,
            "normalize": normalize, "reward_statistics": normalization_record(rm), "rewardlab_version": version(),
        }  # fmt: skip
        write_json(config_path(output), {"config": config, "summary": summary})
        if html is not None:
            render_html(results, html)

    line = f"scored {summary['rows']} rows, mean reward {summary['mean_reward']:+.4f} -> {output}"
    if rm.normalization is not None:
        line += f" (normalised: mean {rm.normalization.mean:+.4f} subtracted, divided by std {rm.normalization.std:.4f})"
    if telescopes:
        line += f" (max |sum(token rewards) - (reward - prompt reward)| = {summary['max_abs_sum_gap']:.2e})"
    typer.echo(line)


def run_steps(
    *,
    model: str,
    data: str,
    output: Path,
    step_rewards: str,
    step_separator: str,
    batch_size: int,
    max_length: int | None,
    aggregate: str | None,
    normalize: bool,
    device: str | None,
    dtype: str,
    limit: int | None,
    skip_invalid: bool,
    progress: bool,
) -> None:
    """`score --step-rewards`: one row per input with its step rewards and their aggregations; the config beside it."""
    from rewardlab.commands.common import normalization_record, user_errors
    from rewardlab.modeling.loader import saved_objective, scoring_placement
    from rewardlab.modeling.service import ScoringService
    from rewardlab.progress import quiet_libraries
    from rewardlab.runtime import dtype_name, version, write_json, write_jsonl
    from rewardlab.step_scoring import load_step_inputs, score_steps, step_rows, step_summary, view_note

    with user_errors():
        if (note := view_note(step_rewards, saved_objective(model), model)) is not None:
            typer.echo(note, err=True)
        quiet_libraries()
        placed_on, placed_as = scoring_placement(device, dtype)
        inputs, data_format = load_step_inputs(
            data, step_rewards, separator=step_separator, skip_invalid=skip_invalid, limit=limit
        )
        service = ScoringService.load(
            model, placed_on, placed_as, aggregate=aggregate, normalize=normalize, batch_size=batch_size, max_length=max_length
        )
        pairs = [(item.prompt, item.steps) for item in inputs]
        scores = score_steps(service, pairs, step_rewards, separator=step_separator, progress=progress)
        write_jsonl(output, step_rows(inputs, scores))
        summary = step_summary(scores, step_rewards, data_format, step_separator)
        config = {
            "command": "score", "model": model, "data": data, "output": str(output), "step_rewards": step_rewards,
            "step_separator": step_separator, "aggregate": aggregate, "batch_size": batch_size, "max_length": max_length,
            "device": str(placed_on), "dtype": dtype_name(placed_as), "limit": limit, "skip_invalid": skip_invalid,
            "normalize": normalize, "reward_statistics": normalization_record(service.rm), "rewardlab_version": version(),
        }  # fmt: skip
        write_json(config_path(output), {"config": config, "summary": summary})
    line = f"scored {summary['rows']} rows, {summary['scored_steps']} steps ({step_rewards} step rewards) -> {output}"
    if summary["max_abs_sum_gap"] is not None:
        line += f" (max |sum(step rewards) - (reward - prompt reward)| = {summary['max_abs_sum_gap']:.2e})"
    typer.echo(line)


score = config_command(
    ScoreConfig,
    call_with_fields(run),
    doc="Score prompt/completion rows: reward R(x, y), prompt reward R(x), and optionally per-token rewards.",
    config_file=False,
    show_defaults=True,
    name="score",
)
