"""`rewardlab score`: sequence, prompt and token rewards for prompt/completion data, as JSONL (and an HTML view)."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import (
    aggregate_option,
    device_option,
    dtype_option,
    normalize_option,
    overwrite_option,
    progress_option,
)
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C, METHODS, TOKEN_REWARD_METHODS, token_reward_method


def config_path(output: Path) -> Path:
    """`scores.jsonl` -> `scores.config.json` (next to the output; `.jsonl.gz` handled too)."""
    name = output.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(name + ".config.json")


def check_settings(token_rewards: str | None, batch_size: int, max_length: int | None, limit: int | None) -> None:
    from rewardlab.commands.common import check_at_least

    if token_rewards is not None:
        token_reward_method(token_rewards, "--token-rewards")
    check_at_least("--batch-size", batch_size, 1)
    check_at_least("--max-length", max_length, 2)
    check_at_least("--limit", limit, 1)


def check_outputs(output: Path, html: Path | None, overwrite: bool, inputs: list[str]) -> None:
    """The scores file, its config beside it and the HTML page may be written (nothing a user made is replaced)."""
    from rewardlab.runtime import check_output_file

    check_output_file(output, overwrite=overwrite, inputs=inputs)
    check_output_file(config_path(output), overwrite=overwrite, inputs=inputs, flag="--output (its config)")
    if html is not None:
        check_output_file(html, overwrite=overwrite, inputs=[*inputs, output], flag="--html")


def score(
    model: str = typer.Option(
        ..., "--model", help="Reward model directory (or a train-rm output directory, or an ensemble), or 'tiny-llama'."
    ),
    data: str = typer.Option(..., "--data", help="Prompt/completion data: a .jsonl/.json/.parquet/.csv file or hub id."),
    output: Path = typer.Option(..., "--output", help="JSONL file to write, one scored row per input row."),
    token_rewards: str | None = typer.Option(
        None, "--token-rewards", help=f"Token-level rewards to add: one of {', '.join(METHODS)}."
    ),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML page colouring tokens by reward."),
    batch_size: int = typer.Option(8, "--batch-size", help="Sequences per forward pass."),
    max_length: int | None = typer.Option(None, "--max-length", help="Truncate longer sequences, keeping their end."),
    beta_c: float = typer.Option(DEFAULT_BETA_C, "--beta-c", help="mix: weight of r3hf vs the sparse reward (R3HF Eq. 7)."),
    abc_beta: float = typer.Option(DEFAULT_ABC_BETA, "--abc-beta", help="abc: weight of the attention-distributed part."),
    aggregate: str | None = aggregate_option(),
    normalize: bool = normalize_option(),
    device: str | None = device_option(),
    dtype: str = dtype_option(),
    limit: int | None = typer.Option(None, "--limit", help="Score only the first N rows."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad rows instead of stopping."),
    progress: bool = progress_option(),
    overwrite: bool = overwrite_option(),
) -> None:
    """Score prompt/completion rows: reward R(x, y), prompt reward R(x), and optionally per-token rewards."""
    from rewardlab.commands.common import normalization_record, user_errors
    from rewardlab.progress import quiet_libraries
    from rewardlab.runtime import dtype_name, version, write_json, write_jsonl

    with user_errors():  # settings and output paths first: they fail in a second, before anything loads
        check_settings(token_rewards, batch_size, max_length, limit)
        check_outputs(output, html, overwrite, inputs=[model, data])

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
