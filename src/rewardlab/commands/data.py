"""`rewardlab data ...`: make built-in preference sets and look at any data file the way rewardlab reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from rewardlab.choices import PAIR_MODES, PairMode
from rewardlab.commands.common import call_with_fields, config_command, user_errors
from rewardlab.commands.help import HelpCommand
from rewardlab.config import BatchingSpec, OutputSpec, RewardDataSpec, restate, setting
from rewardlab.progress import quiet_libraries

data_app = typer.Typer(help="Make built-in data sets; inspect preference and step-labelled files.", no_args_is_help=True)


@dataclass(kw_only=True)
class EasyDataConfig:
    """`rewardlab data easy`'s settings (the command is generated from them)."""

    output_dir: Path = setting(required=True, help="Writes train.jsonl and test.jsonl here (TRL conversational format).")
    n_train: int = setting(2000, min=1, help="Training pairs.")
    n_test: int = setting(500, min=0, help="Held-out pairs (a different seed).")
    seed: int = setting(0, help="Seed of the training pairs (the held-out pairs use another, derived from it).")
    overwrite: bool = restate(OutputSpec, "overwrite")


@dataclass(kw_only=True)
class InspectDataConfig:
    """`rewardlab data inspect`'s settings (the command is generated from them)."""

    spec: str = setting(required=True, positional=True, help="A preference or step-labelled file, or a hub id.")
    format: str | None = setting(None, help="Force a format instead of detecting it.")
    skip_invalid: bool = restate(RewardDataSpec, "skip_invalid")
    model: str = restate(RewardDataSpec, "model", help="Tokenizer for lengths: any model name (smollm2-135m, a dir, a hub id).")
    max_length: int = restate(BatchingSpec, "max_length")
    show: int = setting(1, help="Print this many examples.")
    pairs_mode: PairMode = restate(
        RewardDataSpec,
        "pairs",
        flags=("--pairs",),
        help=f"Rated listwise data (ultrafeedback, listwise): {' | '.join(PAIR_MODES)}.",
    )
    seed: int = setting(0, help="Seed of --pairs best-random.")


def make_easy(*, output_dir: Path, n_train: int, n_test: int, seed: int, overwrite: bool) -> None:
    """`rewardlab data easy` on its resolved settings (EasyDataConfig's fields)."""
    from rewardlab.data.loading import preference_to_dict
    from rewardlab.runtime import claim_output_dir, seal_output_dir, write_jsonl
    from rewardlab.tasks.easy import easy_preferences

    with user_errors():
        claim_output_dir(output_dir, "data easy", overwrite=overwrite)
        write_jsonl(output_dir / "train.jsonl", (preference_to_dict(e) for e in easy_preferences(n_train, seed)))
        write_jsonl(output_dir / "test.jsonl", (preference_to_dict(e) for e in easy_preferences(n_test, seed + 1_000_003)))
        seal_output_dir(output_dir)
    print(f"wrote {output_dir}/train.jsonl ({n_train} pairs) and test.jsonl ({n_test} pairs)")


def inspect_data(
    *, spec: str, format: str | None, skip_invalid: bool, model: str, max_length: int, show: int, pairs_mode: str, seed: int
) -> None:
    """`rewardlab data inspect` on its resolved settings (InspectDataConfig's fields)."""
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


easy = config_command(
    EasyDataConfig,
    call_with_fields(make_easy),
    name="easy",
    doc="The easy task: chosen = the correct answer to copy/reverse/sort, rejected = a corrupted one.",
    config_file=False,
    show_defaults=True,
)
inspect = config_command(
    InspectDataConfig,
    call_with_fields(inspect_data),
    name="inspect",
    doc="Detected format, counts (loaded / ties excluded / invalid), token lengths and truncation, a sample.\n\n"
    "Listwise data: rated lists report the pairs they give as `loaded N`; RewardBench 2 / RM-Bench sets their prompts. "
    "Step-labelled data (TRL stepwise, ProcessBench): how the steps and labels are read, label counts, per subset.",
    config_file=False,
    show_defaults=True,
)
data_app.command("easy", cls=HelpCommand)(easy)
data_app.command("inspect", cls=HelpCommand)(inspect)
