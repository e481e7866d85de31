"""Settings declared once: a config dataclass field carries its default, its help and (where it differs from the field's
name) its command-line flag. The commands (`rewardlab.commands.common.config_command`) and `--config` YAML files are
generated from those fields, and the parts several configs share are mixins declared here.

Light on purpose (no transformers, no accelerate; torch only for a default): the command line imports it to build every
command, and must not pay for a trainer's imports to print --help.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from rewardlab.choices import (
    AGGREGATES,
    DTYPE_NAMES,
    HEAD_CHOICES,
    LOGPROB_KERNELS,
    OBJECTIVES,
    PACKED_ATTENTION_KINDS,
    PAIR_MODES,
    REGULARIZERS,
    REWARD_LOSSES,
    SELECT_METRICS,
    TRUNCATION_CHOICES,
    WORLD_VERSIONS,
    Aggregate,
    Dtype,
    Head,
    LogprobBackend,
    Objective,
    PackedAttention,
    PairMode,
    Regularizer,
    RewardLoss,
    SelectMetric,
    Truncation,
    WorldVersion,
    listed,
)
from rewardlab.errors import UserError
from rewardlab.modeling.logprobs import DEFAULT_LOGPROB_CHUNK_TOKENS
from rewardlab.paired_stats import LEVEL, RESAMPLES
from rewardlab.tracking import ALL, NONE, TRACKERS

DEVICE_HELP = "torch device: cuda, cuda:1, cpu (default: cuda when available, else cpu)."
DTYPE_HELP = f"Model dtype: auto (bf16 on a capable GPU, fp32 on CPU) | {' | '.join(DTYPE_NAMES)}."


def setting(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    help: str | None = None,
    flags: tuple[str, ...] = (),
    cli_type: Any = None,
    required: bool = False,
    min: float | None = None,
    max: float | None = None,
    show_default: bool | None = None,
    positional: bool = False,
    envvar: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A config field with what its command-line option needs.

    flags: the option's declarations when they differ from `--field-name` (`--x/--no-x` for booleans), e.g. ("--lr",);
    cli_type: the option's type when the field's differs (a Path for a str field, list[str] for a NAME=SPEC dict);
    required: the command refuses to run without the option (the field keeps its default for Python callers);
    min / max: the value's range (inclusive), checked on every resolved config (`check_ranges`: flags, YAML and Python);
    a field typed with a Literal (rewardlab.choices) takes only its values (`check_choices`, run by `check_ranges`), and
    its help lists them from the same Literal;
    show_default: True: --help shows the default even in commands whose options otherwise leave it to the help text;
    False: never (a default that depends on other settings, or costs an import); None: as the command does;
    positional: a command-line argument instead of an option; envvar: the option also reads this environment variable;
    metavar: how --help names the value.
    """
    metadata = {"help": help, "flags": flags, "cli_type": cli_type, "required": required, "min": min, "max": max}
    metadata |= {"show_default": show_default, "positional": positional, "envvar": envvar, "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def restate(mixin: type, name: str, default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **changes: Any) -> Any:
    """A mixin's setting with another default (or help, flags): for a subclass whose setting means the same thing but
    starts elsewhere (`seed` is 42 for reward models, 0 for PPO). Everything not changed is the mixin's."""
    original = {f.name: f for f in fields(mixin)}[name]
    metadata = dict(original.metadata) | changes
    if factory is None and default is MISSING:
        default, factory = original.default, None if original.default_factory is MISSING else original.default_factory
    return setting(default, factory=factory, **metadata)


DEFAULT_ALPHA = 0.01  # GRM's regulariser weight, train-rm's default (the demo's alpha where no curve is run)
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the attention projections, as GRM's official code


def lora_target_modules() -> list[str]:
    return list(DEFAULT_LORA_TARGETS)


@dataclass
class RunSpec:
    """Where a run writes, its seed and where it computes."""

    help_panel: ClassVar[str] = "Run"

    output_dir: str = setting("runs/run", help="Where config.json, metrics.json and outputs go.")
    seed: int = setting(0, help="Seed of the run (default 0).")
    bf16: bool | None = setting(None, help="bf16 autocast (default: on with a capable GPU).")  # None: on when supported
    device: str | None = setting(None, help="cpu or cuda (default: cuda when available); more: accelerate.")
    progress: bool = setting(True, flags=("--progress/--no-progress",), show_default=True, help="Progress bars.")
    overwrite: bool = setting(
        False, flags=("--overwrite",), help="Replace an earlier rewardlab output at --output-dir (never anything else)."
    )


@dataclass
class LoraSpec:
    """LoRA adapters on a model (reward model, policy); off by default (full fine-tuning)."""

    help_panel: ClassVar[str] = "Model"

    lora: bool = setting(False, help="LoRA on q/k/v/o (r 32, alpha 64) instead of full fine-tuning.")
    lora_r: int = setting(32, min=1, help="LoRA rank (default 32).")
    lora_alpha: int = setting(64, min=1, help="LoRA scaling alpha (default 64).")
    lora_dropout: float = setting(0.05, min=0.0, max=1.0, help="Dropout on the LoRA path (default 0.05).")
    lora_target_modules: list[str] = setting(
        factory=lora_target_modules, help="Modules that get adapters; repeat for several (default q/k/v/o projections)."
    )


# ----------------------------------------------------------------------------------------------------------------------
# reward-model training (rewardlab.train_rm.RewardTrainingConfig): its settings by group; names follow TRL's RewardConfig /
# TrainingArguments where they exist. Declared here, not beside the trainer, so the command line can build `train-rm`
# without importing the trainer (accelerate, transformers).


@dataclass
class RewardDataSpec:
    """Which model, which preference data."""

    help_panel: ClassVar[str] = "Data"

    model: str = setting(
        "tiny-llama", help="Base model: hub id, local path, .gguf file, or built-in tiny-llama (default) | smollm2-135m."
    )
    train_data: str | None = setting(None, help="Training preferences: file (.jsonl/.jsonl.gz/.json/.parquet/.csv) or hub id.")
    eval_data: list[str] = setting(factory=list, help="Named eval set NAME=SPEC; repeat for several.")
    format: str | None = setting(  # auto-detected when None
        None, help="trl | hh | unified-feedback | hhh | mt-bench-human | rewardbench | ultrafeedback | listwise (auto)."
    )
    pairs: PairMode = setting(  # rated listwise data (ultrafeedback, listwise) -> pairs
        "all", help=f"Rated listwise data -> pairs: {listed(PAIR_MODES, 'all')} (drawn with --seed)."
    )
    skip_invalid: bool = setting(False, flags=("--skip-invalid",), help="Skip and count invalid records instead of failing.")

    def input_paths(self) -> list[str | None]:
        """What a run reads (model, data): its output directory must lie apart from each of them."""
        from rewardlab.data.io import parse_named_spec

        return [self.model, self.train_data, *(parse_named_spec(spec)[1] for spec in self.eval_data)]

    # the reward statistics recorded at the end of training (rewardlab.modeling.normalization; `--normalize` reads them)
    norm_data: str | None = setting(
        None,
        help="Prompt/completion data whose reward mean and std the model records for --normalize (default: the training "
        "pairs' chosen and rejected responses).",
    )
    norm_samples: int = setting(
        4096, min=0, help="At most this many responses for the reward statistics, drawn with --seed (default 4096; 0: all)."
    )


@dataclass
class RewardObjectiveSpec:
    """The reward loss and GRM's regulariser: loss = (1 - alpha) * L_reward + alpha * L_reg."""

    help_panel: ClassVar[str] = "Objective"

    objective: Objective = setting(
        "preference",
        help=f"{listed(OBJECTIVES, 'preference')}: preference pairs (--loss, the reward model of RLHF), or a process reward "
        "model on step-labelled data (TRL stepwise or ProcessBench files): a score at each step's end, binary "
        "cross-entropy on the step labels.",
    )
    loss: RewardLoss = setting("bt", help=f"{listed(REWARD_LOSSES, 'bt')}.")
    reg: Regularizer = setting("none", help=f"GRM regulariser: {listed(REGULARIZERS, 'none')}.")
    alpha: float = setting(
        DEFAULT_ALPHA, min=0.0, max=1.0, help="Regulariser weight: (1-alpha)*L_reward + alpha*L_reg (default 0.01)."
    )
    beta: float = setting(0.1, min=0.0, help="Regulariser temperature (default 0.1).")
    label_smoothing: float = setting(0.1, min=0.0, max=1.0, help="eps for --loss label-smooth (default 0.1).")
    center_rewards_coefficient: float = setting(0.0, help="Reward centring coefficient (default 0).")


@dataclass
class RewardModelSpec(LoraSpec):
    """The reward head on the backbone (LoRA or full fine-tuning), or an ensemble of reward models."""

    help_panel: ClassVar[str] = "Model"

    head: Head = setting("linear", help=f"Reward head: {listed(HEAD_CHOICES, 'linear')}.")
    head_hidden: int = setting(1024, min=1, help="Hidden width of the mlp head (default 1024).")
    head_dropout: float = setting(0.1, min=0.0, max=1.0, help="Dropout on the hidden state before the head (default 0.1).")
    freeze_backbone: bool = setting(False, flags=("--freeze-backbone",), help="Baseline: train the reward head only.")
    ensemble_size: int = setting(1, min=1, help="Train K members with seeds seed..seed+K-1 (baseline).")
    ensemble_aggregate: Aggregate = setting("mean", help=f"Ensemble score: {listed(AGGREGATES, 'mean')}.")


@dataclass
class BatchingSpec:
    """How pairs become batches, and the kernels that run them."""

    help_panel: ClassVar[str] = "Batching"

    max_length: int = setting(1024, min=2, help="Max tokens per sequence (default 1024).")
    truncation: Truncation = setting("keep_end", help=f"Over-long pairs: {listed(TRUNCATION_CHOICES, 'keep_end')}.")
    group_by_length: bool = setting(True, help="Length-bucketed batches (default on: less padding).")
    padding_free: bool = setting(  # packed forward (rewardlab.packing); models without support fall back to padded batches
        True, help="Packed batches: no compute on padding, same results (default on; padded where a model lacks support)."
    )
    logprob_chunk_size: int = setting(
        DEFAULT_LOGPROB_CHUNK_TOKENS,
        min=0,
        help="GRM regularisers: LM-head logits for at most this many response tokens at a time, recomputed in the backward "
        "(default 2048; 0 = all at once). Caps memory with large vocabularies.",
    )
    attention: PackedAttention = setting(
        "auto",
        help="Packed attention kernel: auto (default: varlen or flex on CUDA, segments on CPU) | "
        f"{' | '.join(PACKED_ATTENTION_KINDS)}.",
    )
    logprob_backend: LogprobBackend = setting(
        "auto",
        help=f"GRM regularisers' log-probs: auto (default: liger on CUDA when installed) | {' | '.join(LOGPROB_KERNELS)}.",
    )
    gradient_checkpointing: bool = setting(
        False,
        help="Recompute decoder activations in the backward: less memory, about a third more compute (default off).",
    )


@dataclass
class OptimisationSpec:
    """Optimiser, schedule and batch sizes."""

    help_panel: ClassVar[str] = "Optimisation"

    learning_rate: float = setting(1e-5, flags=("--lr",), min=0.0, help="Learning rate (default 1e-5).")
    weight_decay: float = setting(0.0, min=0.0, help="AdamW weight decay (default 0).")
    lr_scheduler_type: str = setting("cosine", help="transformers scheduler name (default cosine).")
    warmup_ratio: float = setting(0.03, min=0.0, max=1.0, help="Fraction of the steps spent warming up (default 0.03).")
    max_grad_norm: float = setting(1.0, min=0.0, help="Gradient clipping norm (default 1.0).")
    per_device_train_batch_size: int = setting(8, flags=("--batch-size",), min=1, help="Pairs per device per step (default 8).")
    per_device_eval_batch_size: int = setting(16, min=1, help="Pairs per device per evaluation batch (default 16).")
    gradient_accumulation_steps: int = setting(1, flags=("--grad-accum",), min=1, help="Batches per optimiser step (default 1).")
    num_train_epochs: float = setting(2.0, flags=("--epochs",), min=0.0, help="Epochs (default 2).")
    max_steps: int = setting(-1, help="Optimiser steps; overrides --epochs when > 0.")


@dataclass
class EvaluationSpec:
    """Logging, evaluation during training, model selection, checkpoints."""

    help_panel: ClassVar[str] = "Evaluation"

    logging_steps: int = setting(10, min=1, help="Log every N steps (default 10).")
    eval_steps: int = setting(0, min=0, help="Evaluate every N steps (default: at the end only).")
    # Model selection: the name of an eval set (a validation set) evaluated every eval_steps; training ends on the weights
    # with its best `select_metric` (earliest on ties), and the other eval sets are evaluated on those weights only, at
    # the end.
    select_best_on: str | None = setting(
        None,
        help="An --eval-data NAME (a validation set) scored every --eval-steps; training ends on the weights with its best "
        "accuracy (or lowest loss: --select-metric), and the other eval sets are scored on those only.",
    )
    # what selection keeps: the best accuracy, or the lowest loss (`evaluation.preference_metrics`' and
    # `step_evaluation.step_metrics`' `loss`), which moves while a PRM's thresholded step accuracy still sits at the
    # share of correct steps
    select_metric: SelectMetric = setting(
        "accuracy",
        help=f"What --select-best-on keeps: {listed(SELECT_METRICS, 'accuracy')}: the best accuracy, or the lowest loss "
        "(pairs: -log sigmoid(chosen - rejected); a PRM: its labelled steps' cross-entropy).",
    )
    early_stopping_patience: int = setting(  # 0: never
        0, min=0, help="With --select-best-on: stop after N evaluations without a gain."
    )
    save_steps: int = setting(0, min=0, help="Checkpoint every N steps (for --resume).")  # 0: no intermediate checkpoints
    save_total_limit: int = setting(2, min=1, help="Checkpoints kept (default 2).")
    resume: bool = setting(
        False,
        flags=("--resume",),
        help="Resume from the newest checkpoint in --output-dir (at the --lr and --weight-decay given).",
    )


@dataclass
class TrackingSpec:
    """The experiment trackers a run reports to (`rewardlab.tracking`): reward-model training, PPO, the demo."""

    help_panel: ClassVar[str] = "Run"

    report_to: list[str] = setting(
        factory=list,
        show_default=False,
        help=f"Experiment trackers: {' | '.join(TRACKERS)}, repeated or comma-separated; {ALL} (every installed one) | "
        f"{NONE} (default). A named tracker that is not installed is an error.",
    )


@dataclass
class RewardRunSpec(RunSpec):
    output_dir: str = restate(RunSpec, "output_dir", "runs/reward-model", help="Where config.json, metrics.json and model/ go.")
    seed: int = restate(RunSpec, "seed", 42, help="Seed of the run (default 42).")


@dataclass
class RewardTrainingFields(
    RewardRunSpec,
    TrackingSpec,
    EvaluationSpec,
    OptimisationSpec,
    BatchingSpec,
    RewardModelSpec,
    RewardObjectiveSpec,
    RewardDataSpec,
):
    """Every reward-model training setting (the fields of RewardTrainingConfig, which adds their validation)."""

    def check_output(self) -> None:
        """The output directory may be written (see runtime.check_output_dir); cheap, so commands run it first."""
        from rewardlab.runtime import check_output_dir

        check_output_dir(self.output_dir, overwrite=self.overwrite, resume=self.resume, inputs=self.input_paths())


# ----------------------------------------------------------------------------------------------------------------------
# the study (rewardlab.study.run_study): a grid of reward-model runs. The settings every cell shares are train-rm's own
# fields (the groups inherited below, and single fields restated from the groups whose other fields vary per cell), so
# each is declared once; what varies per cell (loss, reg, alpha, freeze_backbone, ensemble_size, seed, output_dir) is
# set by the study from its variant, alpha, size and seed.

# The reward-model variants the study and the demo compare, each as the train-rm settings that make it (declared once).
VARIANT_SETTINGS: dict[str, dict[str, Any]] = {
    "vanilla": {"loss": "bt", "reg": "none"},
    "margin": {"loss": "margin", "reg": "none"},
    "label-smooth": {"loss": "label-smooth", "reg": "none"},
    "grm-sft": {"loss": "bt", "reg": "sft"},
    "grm-dpo": {"loss": "bt", "reg": "dpo"},
    "grm-dpo-noref": {"loss": "bt", "reg": "dpo-noref"},
    "frozen-backbone": {"loss": "bt", "reg": "none", "freeze_backbone": True},
    "ensemble": {"loss": "bt", "reg": "none"},  # ensemble_size: the study's --ensemble-members
}
STUDY_VARIANTS = tuple(VARIANT_SETTINGS)
STUDY_ALPHAS = (0.001, 0.01, 0.1, 0.3, 1.0)


@dataclass
class StudySpec:
    """The grid: variants x alphas (GRM variants only) x seeds x training sizes, and how its comparisons are judged."""

    help_panel: ClassVar[str] = "Study"

    variants: list[str] = setting(
        factory=lambda: ["vanilla", "grm-sft", "grm-dpo", "grm-dpo-noref"],
        help=f"Variants, comma-separated or repeated: {' | '.join(STUDY_VARIANTS)} (default vanilla, grm-sft, grm-dpo, "
        "grm-dpo-noref; vanilla is always run: every comparison is against it).",
    )
    alphas: list[float] = setting(
        factory=lambda: list(STUDY_ALPHAS),
        cli_type=list[str],
        help="Regulariser weights of the GRM variants, comma-separated or repeated (default 0.001,0.01,0.1,0.3,1.0).",
    )
    seeds: int = setting(3, min=1, help="Seeds per cell: --seed, --seed+1, ... (default 3); variants are paired by seed.")
    sizes: list[int] = setting(
        factory=list,
        cli_type=list[str],
        help="Training sizes in pairs, comma-separated or repeated (default: all the training data). A size N trains on "
        "the first N pairs of one fixed shuffle of the data (--subset-seed): nested subsets, the same for every cell.",
    )
    subset_seed: int = setting(0, help="Seed of the shuffle the training sizes are cut from (default 0).")
    ensemble_members: int = setting(3, min=2, help="Members of the ensemble variant (default 3).")
    level: float = setting(LEVEL, min=0.5, max=0.999, help=f"Confidence level of the comparisons (default {LEVEL:g}).")
    resamples: int = setting(RESAMPLES, min=200, help=f"Bootstrap resamples over pairs per comparison (default {RESAMPLES}).")
    workers: int = setting(1, min=1, help="Cells trained at once, in separate processes (default 1).")
    # train-rm settings that are the same in every cell (the rest of their groups varies per cell)
    beta: float = restate(RewardObjectiveSpec, "beta")
    label_smoothing: float = restate(RewardObjectiveSpec, "label_smoothing")
    center_rewards_coefficient: float = restate(RewardObjectiveSpec, "center_rewards_coefficient")
    head: Head = restate(RewardModelSpec, "head")
    head_hidden: int = restate(RewardModelSpec, "head_hidden")
    head_dropout: float = restate(RewardModelSpec, "head_dropout")
    ensemble_aggregate: Aggregate = restate(RewardModelSpec, "ensemble_aggregate")
    logging_steps: int = restate(EvaluationSpec, "logging_steps")
    eval_steps: int = restate(EvaluationSpec, "eval_steps", 50, help="Evaluate the --select-on set every N steps (default 50).")
    select_best_on: str | None = restate(
        EvaluationSpec,
        "select_best_on",
        flags=("--select-on", "--select-best-on"),
        help="The --eval-data NAME of the ID validation set: each cell keeps its weights with the best accuracy there "
        "(model selection on it alone); the other sets are scored on those weights and compared (required).",
    )
    early_stopping_patience: int = restate(EvaluationSpec, "early_stopping_patience")


@dataclass
class StudyRunSpec(RunSpec):
    output_dir: str = restate(
        RunSpec, "output_dir", "runs/study", help="Where study.json, results.json, table.md, the figures and cells/ go."
    )
    seed: int = restate(RunSpec, "seed", help="First seed: the cells use seed, seed+1, ..., seed+seeds-1 (default 0).")
    overwrite: bool = restate(
        RunSpec,
        "overwrite",
        help="Replace an earlier rewardlab output at --output-dir (never anything else). Rerunning the same study there "
        "resumes it without this flag.",
    )


@dataclass
class StudyFields(StudyRunSpec, TrackingSpec, OptimisationSpec, BatchingSpec, LoraSpec, StudySpec, RewardDataSpec):
    """Every setting of `rewardlab study`; a cell's RewardTrainingConfig takes the fields it shares with these."""

    def check_output(self) -> None:
        """The study directory may be written: new, empty, or a rewardlab output (a study there is resumed or refused by
        its config, see rewardlab.study)."""
        from rewardlab.runtime import check_output_dir

        check_output_dir(self.output_dir, overwrite=self.overwrite, resume=True, inputs=self.input_paths())


# ----------------------------------------------------------------------------------------------------------------------
# the settings the commands that score, evaluate, inspect and export share (score, serve, eval-rm, diagnose, export,
# data); each command's own config lives beside it (rewardlab.commands.<name>), made of these and its own fields.


@dataclass
class PlacementSpec:
    """Where a command that scores puts the model: device and dtype."""

    device: str | None = restate(RunSpec, "device", help=DEVICE_HELP)
    dtype: Dtype = setting("auto", help=DTYPE_HELP)


@dataclass
class AggregateSpec:
    """How an ensemble's members' rewards combine when it is loaded for scoring."""

    aggregate: Aggregate | None = setting(  # None: the aggregate saved with the ensemble
        None, help=f"For ensembles: {listed(AGGREGATES)} (default: as saved)."
    )


@dataclass
class NormalizeSpec:
    """Rewards normalised with the statistics recorded at training."""

    normalize: bool = setting(
        False,
        flags=("--normalize",),
        help="Rewards (r - mean) / std with the mean and std recorded at training (OpenRLHF's normalize_reward); every "
        "position reward, so token rewards follow. A model without them is an error.",
    )


@dataclass
class EvalBatchingSpec:
    """How preference pairs are batched for scoring (eval-rm, diagnose): train-rm's evaluation batches."""

    batch_size: int = restate(OptimisationSpec, "per_device_eval_batch_size", help="Pairs per forward pass.")
    max_length: int = restate(BatchingSpec, "max_length")
    truncation: Truncation = restate(BatchingSpec, "truncation")


@dataclass
class OutputSpec:
    """Progress bars, and replacing an earlier output: the commands that write one."""

    progress: bool = restate(RunSpec, "progress")
    overwrite: bool = restate(RunSpec, "overwrite", help="Replace an earlier rewardlab output there (never anything else).")


# ----------------------------------------------------------------------------------------------------------------------
# the demo's options (rewardlab.demo.config.DemoConfig restates them beside the sizes it picks, full or quick): declared
# here so that building `rewardlab demo` imports nothing of the demo's pipeline (transformers, accelerate)


def default_world_version() -> int:
    from rewardlab.tasks.world import WORLD_VERSION  # imported when a demo is configured, never for --help

    return WORLD_VERSION


@dataclass
class DemoSpec(TrackingSpec):
    """`rewardlab demo`'s options (the command is generated from them and builds a DemoConfig)."""

    help_panel: ClassVar[str | None] = None  # under typer's "Options"; report_to under TrackingSpec's panel

    output_dir: str = setting(
        "runs/demo", flags=("--output",), cli_type=Path, help="Directory for report.md, results.json and figures."
    )
    quick: bool = setting(False, flags=("--quick",), help="A smaller run (about 5 minutes on 2 CPU cores).")
    seeds: int = setting(3, min=1, show_default=False, help="Seeds per reward-model variant (default: 1 quick, 3 full).")
    world_version: WorldVersion = setting(
        factory=default_world_version,
        flags=("--world",),
        show_default=False,
        help=f"World version: {' or '.join(map(str, sorted(WORLD_VERSIONS, reverse=True)))} (default: the latest: "
        "rating feedback after every answer, an ID-only shortcut).",
    )
    workers: int = setting(
        2, min=1, help="Independent runs (reward models, PPO runs) trained at once, in processes of one thread each."
    )
    progress: bool = restate(OutputSpec, "progress")
    overwrite: bool = restate(OutputSpec, "overwrite")


# ----------------------------------------------------------------------------------------------------------------------
# reading settings back


def help_panel(cls: type, name: str) -> str | None:
    """The --help panel of the field `name` of `cls`: the config's own `help_panels` (panel -> field names) when it lists
    the field, else the `help_panel` of the class that declares the field (or of the nearest base class that declares one:
    a subclass restating a mixin's field keeps the mixin's panel); None (typer's "Options") when neither says."""
    for klass in cls.__mro__:
        for panel, names in klass.__dict__.get("help_panels", {}).items():
            if name in names:
                return panel
    declaring = next((klass for klass in cls.__mro__ if name in klass.__dict__.get("__annotations__", {})), None)
    for klass in declaring.__mro__ if declaring is not None else ():
        if "help_panel" in klass.__dict__:
            return klass.__dict__["help_panel"]
    return None


def option_flags(f: dataclasses.Field, boolean: bool) -> tuple[str, ...]:
    """The option declarations of a field: declared flags, else `--field-name` (`--x/--no-x` for a boolean)."""
    if f.metadata.get("flags"):
        return tuple(f.metadata["flags"])
    name = "--" + f.name.replace("_", "-")
    return (f"{name}/--no-{name[2:]}",) if boolean else (name,)


def is_setting(f: dataclasses.Field) -> bool:
    """Declared with `setting` (a command-line option); a plain field is a config's internal setting (the demo's sizes)."""
    return "help" in f.metadata


def without_none(hint: Any) -> Any:
    """`T | None` -> T; any other hint as it is."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        return args[0]
    return hint


def choices_of(hint: Any) -> tuple | None:
    """The values a field typed `Literal[...]` (or `Literal[...] | None`) takes; None for any other type."""
    hint = without_none(hint)
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def option_type(f: dataclasses.Field, hint: Any) -> Any:
    """The type an option parses into: declared cli_type, else the field's type hint without `| None` (a Literal's
    values' type: `check_choices` refuses other values in rewardlab's words, whichever way the value came)."""
    if f.metadata.get("cli_type") is not None:
        return f.metadata["cli_type"]
    hint = without_none(hint)
    choices = choices_of(hint)
    return type(choices[0]) if choices else hint


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(
    cls: type, values: dict, source: str | None = None, name: str | None = None, make: Callable[..., Any] | None = None
) -> Any:
    """`cls(**values)` (or `make(**values)`), refusing keys that are not fields (a typo would otherwise be silently
    ignored), values outside a field's declared range and values a Literal field does not take."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        where = f"{source}: " if source else ""
        raise UserError(f"{where}unknown config keys: {', '.join(unknown)} (not {name or cls.__name__} fields)")
    cfg = (make or cls)(**values)
    check_ranges(cfg)
    return cfg


def check_choices(cfg: Any) -> None:
    """Every Literal-typed field holds one of its values (None where the field allows it); else one line naming the
    setting and its choices."""
    hints = type_hints(type(cfg))
    for f in fields(cfg):
        choices = choices_of(hints[f.name])
        value = getattr(cfg, f.name)
        if choices is None or value is None or value in choices:
            continue
        flag = option_flags(f, False)[0].split("/")[0]
        named = "" if flag == "--" + f.name.replace("_", "-") else f" ({flag})"
        raise UserError(f"{f.name} = {value!r} is not one of {', '.join(map(str, choices))}{named}")


def check_ranges(cfg: Any) -> None:
    """Every numeric field within its declared min / max (inclusive), else one line naming the flag and the range; and
    every choice among its Literal's (`check_choices`)."""
    check_choices(cfg)
    for f in fields(cfg):
        low, high = f.metadata.get("min"), f.metadata.get("max")
        value = getattr(cfg, f.name)
        if (low is None and high is None) or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if (low is not None and not value >= low) or (high is not None and not value <= high):  # `not >=`: NaN fails too
            flag = option_flags(f, False)[0].split("/")[0]
            bounds = " and ".join([f">= {low}"] * (low is not None) + [f"<= {high}"] * (high is not None))
            raise UserError(f"{flag} {value}: must be {bounds}")


def read_yaml_config(path: Path, cls: type, name: str | None = None) -> dict:
    """The mapping in a `--config` YAML file; a missing file, bad YAML or an unknown key is a one-line error that names
    the file (and the line of the first unknown key)."""
    import yaml

    if not path.exists():
        raise UserError(f"{path}: no such config file")
    text = path.read_text()
    try:
        values = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of {name or cls.__name__} fields")
    known = {f.name for f in fields(cls)}
    for key_node, _ in root.value if root is not None else ():  # an empty file: no keys
        if key_node.value not in known:
            unknown = ", ".join(sorted(str(k) for k in set(values) - known))
            line = key_node.start_mark.line + 1
            raise UserError(f"{path}:{line}: unknown config keys: {unknown} (not {name or cls.__name__} fields)")
    return values


def resolve_config(
    cls: type, config_file: Path | None, given: dict, name: str | None = None, make: Callable[..., Any] | None = None
) -> Any:
    """Defaults, then the YAML file, then the flags given on the command line: each later one wins."""
    values = read_yaml_config(config_file, cls, name) if config_file is not None else {}
    return from_dict(cls, values | given, source=str(config_file) if config_file else None, name=name, make=make)
