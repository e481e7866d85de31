"""`rewardlab export`: a checkpoint that plain transformers loads: AutoModelForSequenceClassification for a reward model,
AutoModelForTokenClassification (TRL's PRM class) for a process reward model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewardlab.commands.common import call_with_fields, config_command, user_errors
from rewardlab.config import DEVICE_HELP, OutputSpec, restate, setting
from rewardlab.progress import quiet_libraries


@dataclass(kw_only=True)
class ExportConfig:
    """`rewardlab export`'s settings (the command is generated from them)."""

    model: str = setting(required=True, help="A rewardlab reward model (or train-rm output) directory.")
    output: Path = setting(required=True, help="Directory for the exported checkpoint.")
    normalize: bool = setting(
        False,
        flags=("--normalize",),
        help="Bake the recorded reward normalisation into the head: score weight / std. Its bias-free score layer cannot "
        "subtract the mean, so logits = (r - mean) / std + offset (offset = mean / std, in config.json).",
    )
    device: str | None = setting(None, help=DEVICE_HELP)
    overwrite: bool = restate(OutputSpec, "overwrite")


def run(*, model: str, output: Path, normalize: bool, device: str | None, overwrite: bool) -> None:
    """`rewardlab export` on its resolved settings (ExportConfig's fields)."""
    from rewardlab.choices import PRM
    from rewardlab.errors import UserError
    from rewardlab.export import export_sequence_classifier, export_token_classifier
    from rewardlab.modeling.loader import saved_objective

    with user_errors():  # an ExportError (a ValueError) is one line and exit 1, with nothing written
        quiet_libraries()
        if saved_objective(model) == PRM:
            if normalize:
                raise UserError("--normalize: a process reward model's step scores are probabilities, not rewards to normalise")
            report = export_token_classifier(model, output, device=device, overwrite=overwrite)
            checked = ", ".join(f"{kind} {gap:.1e}" for kind, gap in report["max_abs_diff_by_text"].items())
            print(f"wrote {report['architecture']} (labels 0 wrong, 1 correct: P(step correct) = softmax(logits)[..., 1]) "
                  f"to {report['output_dir']}; max |logit difference| vs rewardlab at every token: {checked}")  # fmt: skip
            return
        report = export_sequence_classifier(model, output, device=device, overwrite=overwrite, normalize=normalize)
    checked = ", ".join(f"{kind} {gap:.1e}" for kind, gap in report["max_abs_diff_by_text"].items())
    print(f"wrote {report['architecture']} to {report['output_dir']}; max |reward difference| vs rewardlab: {checked}")
    if report["normalize"]:
        print(
            f"normalised head: logits = (r - mean) / std + offset, offset = mean / std = {report['offset']:+.4f} (the bias-free "
            "score layer cannot subtract it; config.json: rewardlab_normalization.offset, and OpenRLHF's mean/std)"
        )
    if report["pad_token_added"]:
        print(f"the model's pad token is one rewards are read at (EOS); the export pads with its own {report['pad_token']}")


export = config_command(
    ExportConfig,
    call_with_fields(run),
    doc="Export to transformers' AutoModelForSequenceClassification (num_labels=1) for TRL, OpenRLHF, RewardBench; a "
    "process reward model (train-rm --objective prm) to AutoModelForTokenClassification (num_labels=2), TRL's PRM class.",
    config_file=False,
    show_defaults=True,
    name="export",
)
