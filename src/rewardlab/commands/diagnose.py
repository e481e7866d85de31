"""`rewardlab diagnose`: how much signal a reward model's per-position scores carry (prefix accuracy, correlation with the
final score, spread of R3HF token rewards). Writes OUTPUT/diagnose.json (keyed by set name), config.json and a PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewardlab.choices import DTYPE_CHOICES, PAIR_MODES, Dtype, PairMode
from rewardlab.commands.common import call_with_fields, config_command, named_inputs, user_errors
from rewardlab.config import AggregateSpec, EvalBatchingSpec, OutputSpec, RewardDataSpec, restate, setting
from rewardlab.progress import quiet_libraries

RESULTS_NAME = "diagnose.json"
FIGURE_NAME = "prefix_signal.png"


@dataclass(kw_only=True)
class DiagnoseConfig(OutputSpec, AggregateSpec, EvalBatchingSpec):
    """`rewardlab diagnose`'s settings (the command is generated from them); the model loads as eval-rm loads it unless
    --device or --dtype says otherwise."""

    model: str = setting(
        required=True, help="A reward model directory (or a train-rm output directory, an ensemble, tiny-llama)."
    )
    data: list[str] = setting(factory=list, required=True, help="NAME=SPEC preference set; repeat for several.")
    output: Path = setting(required=True, help=f"Directory for {RESULTS_NAME}, config.json and {FIGURE_NAME}.")
    format: str | None = setting(None, help="Data format (auto-detected when omitted).")
    pairs: PairMode = restate(
        RewardDataSpec, "pairs", help=f"Rated listwise data (ultrafeedback, listwise): {' | '.join(PAIR_MODES)}."
    )
    seed: int = setting(0, help="Seed of --pairs best-random.")
    skip_invalid: bool = restate(RewardDataSpec, "skip_invalid")
    batch_size: int = restate(
        EvalBatchingSpec, "batch_size", help="Pairs per forward pass (eval-rm's default, so the batches are eval-rm's)."
    )
    device: str | None = setting(None, help="torch device, e.g. cuda or cpu (default: where eval-rm loads it).")
    dtype: Dtype | None = setting(None, help=f"{' | '.join(DTYPE_CHOICES)} (default: as eval-rm loads it).")


def run(
    *,
    model: str,
    data: list[str],
    output: Path,
    format: str | None,
    pairs: str,
    seed: int,
    skip_invalid: bool,
    batch_size: int,
    max_length: int,
    truncation: str,
    aggregate: str | None,
    device: str | None,
    dtype: str | None,
    progress: bool,
    overwrite: bool,
) -> None:
    """`rewardlab diagnose` on its resolved settings (DiagnoseConfig's fields)."""
    from rewardlab.runtime import (
        check_output_dir,
        claim_output_dir,
        resolve_device,
        resolve_dtype,
        seal_output_dir,
        version,
        write_json,
    )

    with user_errors():  # the output path first: it fails in a second, before anything loads
        inputs = named_inputs(model, data)
        check_output_dir(output, overwrite=overwrite, inputs=inputs, flag="--output")

    from rewardlab.data.loading import load_named_preferences
    from rewardlab.diagnose import diagnose_set, plot_prefix_signal
    from rewardlab.modeling.loader import load_reward_model

    with user_errors():
        quiet_libraries()
        datasets = load_named_preferences(data, format=format, skip_invalid=skip_invalid, pairs=pairs, seed=seed)
        # Defaults load the model as eval-rm does, so the full-length point can equal eval-rm's accuracy exactly.
        resolved_device = resolve_device(device) if device is not None else None
        resolved_dtype = resolve_dtype(dtype, resolved_device) if dtype is not None else None
        rm = load_reward_model(model, device=resolved_device, dtype=resolved_dtype, aggregate=aggregate)
        results = {}
        for name, ds in datasets.items():
            metrics = diagnose_set(
                rm,
                ds.examples,
                max_length=max_length,
                truncation=truncation,
                batch_size=batch_size,
                progress=progress,
                desc=name,
            )
            results[name] = metrics | {"data": ds.stats}
        config = {
            "command": "diagnose", "model": model, "data": data, "output": str(output), "format": format, "pairs": pairs,
            "seed": seed, "skip_invalid": skip_invalid, "batch_size": batch_size, "max_length": max_length,
            "truncation": truncation, "aggregate": aggregate, "device": str(rm.device),
            "dtype": str(next(rm.parameters()).dtype).removeprefix("torch."), "rewardlab_version": version(),
        }  # fmt: skip
        claim_output_dir(output, "diagnose", overwrite=overwrite, inputs=inputs, flag="--output")
        write_json(output / "config.json", config)
        write_json(output / RESULTS_NAME, results)
        plot_prefix_signal(results, output / FIGURE_NAME, title=f"prefix signal: {model}")
        seal_output_dir(output)
    for name, m in results.items():
        curve = "  ".join(f"{p['fraction']:.1f}:{p['accuracy']:.3f}" for p in m["prefix_accuracy"])
        spread = m["r3hf_token_rewards"]
        print(
            f"{name}: accuracy {m['accuracy']:.4f} (n={m['n']}); prefix accuracy {curve}; "
            f"r3hf token reward std {spread['std']:.3f} (sequence reward std {spread['sequence_reward_std']:.3f})"
        )
    print(f"wrote {output / RESULTS_NAME}, {output / FIGURE_NAME}")


diagnose = config_command(
    DiagnoseConfig,
    call_with_fields(run),
    doc="Prefix-signal diagnostic: pairwise accuracy of chosen vs rejected prefixes at 10%, 20%, ..., 100% of each "
    "response, correlation of prefix scores with the final score, and the spread of R3HF token rewards; one forward "
    "pass per sequence. The 100% point equals eval-rm's accuracy on the same set.",
    config_file=False,
    show_defaults=True,
    name="diagnose",
)
