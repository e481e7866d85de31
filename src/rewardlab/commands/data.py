"""`rewardlab data ...`: make built-in preference sets and look at any data file the way rewardlab reads it."""

from __future__ import annotations

from pathlib import Path

import typer

from rewardlab.commands.common import check_at_least, overwrite_option, user_errors
from rewardlab.commands.help import HelpCommand
from rewardlab.progress import quiet_libraries

data_app = typer.Typer(help="Make built-in data sets; inspect preference and step-labelled files.", no_args_is_help=True)


@data_app.command("easy", cls=HelpCommand)
def easy(
    output_dir: Path = typer.Option(..., help="Writes train.jsonl and test.jsonl here (TRL conversational format)."),
    n_train: int = typer.Option(2000, help="Training pairs."),
    n_test: int = typer.Option(500, help="Held-out pairs (a different seed)."),
    seed: int = typer.Option(0),
    overwrite: bool = overwrite_option(),
) -> None:
    """The easy task: chosen = the correct answer to copy/reverse/sort, rejected = a corrupted one."""
    from rewardlab.data.loading import preference_to_dict
    from rewardlab.runtime import claim_output_dir, seal_output_dir, write_jsonl
    from rewardlab.tasks.easy import easy_preferences

    with user_errors():
        check_at_least("--n-train", n_train, 1)
        check_at_least("--n-test", n_test, 0)
        claim_output_dir(output_dir, "data easy", overwrite=overwrite)
        write_jsonl(output_dir / "train.jsonl", (preference_to_dict(e) for e in easy_preferences(n_train, seed)))
        write_jsonl(output_dir / "test.jsonl", (preference_to_dict(e) for e in easy_preferences(n_test, seed + 1_000_003)))
        seal_output_dir(output_dir)
    print(f"wrote {output_dir}/train.jsonl ({n_train} pairs) and test.jsonl ({n_test} pairs)")


@data_app.command("inspect", cls=HelpCommand)
def inspect(
    spec: str = typer.Argument(..., help="A preference file or hub id."),
    format: str | None = typer.Option(None, help="Force a format instead of detecting it."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid"),
    model: str = typer.Option("tiny-llama", help="Tokenizer for lengths: any model name (smollm2-135m, a dir, a hub id)."),
    max_length: int = typer.Option(1024),
    show: int = typer.Option(1, help="Print this many examples."),
    pairs_mode: str = typer.Option(
        "all", "--pairs", help="Rated listwise data (ultrafeedback, listwise): all | best-worst | best-random."
    ),
    seed: int = typer.Option(0, help="Seed of --pairs best-random."),
) -> None:
    """Detected format, counts (loaded / ties excluded / invalid), token lengths and truncation, a sample.

    Listwise data: rated lists report the pairs they give as `loaded N`; RewardBench 2 / RM-Bench sets their prompts.
    Step-labelled data (TRL stepwise, ProcessBench): how the steps and labels are read, label counts, per subset."""
    import json

    from rewardlab.data.listwise import ListwiseDataset
    from rewardlab.data.loading import load_dataset, preference_to_dict
    from rewardlab.data.pairs import encode_pairs
    from rewardlab.data.steps import StepDataset, describe_steps
    from rewardlab.listwise_eval import describe_listwise
    from rewardlab.modeling.sources import load_tokenizer

    with user_errors():
        quiet_libraries()
        ds = load_dataset(
            spec, format=format, skip_invalid=skip_invalid, pairs=pairs_mode, seed=seed, listwise_eval=True, steps=True
        )
        tokenizer = load_tokenizer(model)
        if isinstance(ds, StepDataset):
            print("\n".join(describe_steps(spec, ds, tokenizer, max_length, show)))
            return
        if isinstance(ds, ListwiseDataset):  # RewardBench 2, RM-Bench: prompts with their completions
            print("\n".join(describe_listwise(spec, ds, tokenizer, max_length, show)))
            return
        pairs, counts = encode_pairs(tokenizer, ds.examples, max_length)
    lengths = sorted(p.length for p in pairs)
    print(f"{spec}: format {ds.format}; " + ", ".join(f"{k} {v}" for k, v in ds.stats.items()))
    if lengths:
        print(
            f"tokens per sequence (max of chosen/rejected): min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
            f"max {lengths[-1]}; truncated {counts['truncated']}, dropped {counts['dropped']} at max_length {max_length}"
        )
    for err in ds.skipped:
        print(f"skipped: {err}")
    for ex in ds.examples[:show]:
        print(json.dumps(preference_to_dict(ex), ensure_ascii=False)[:2000])
