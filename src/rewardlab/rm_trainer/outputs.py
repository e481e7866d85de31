"""What a reward-model run leaves in its output directory: config.json (resolved, before training), then metrics.json,
log.jsonl, scores.jsonl (the final evaluation's per-pair scores, eval-rm's `--scores` rows), training_curves.png and
model/ (the reward model, with its reward statistics) at the end; and the trackers it reports to as it goes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rewardlab.config import RewardTrainingFields
from rewardlab.errors import UserError
from rewardlab.modeling.normalization import RewardStatistics
from rewardlab.modeling.reward_model import MODEL_SUBDIR, RewardModel
from rewardlab.rm_trainer.state import TrainingRun
from rewardlab.runtime import is_main_process, version, write_json, write_jsonl
from rewardlab.tracking import finish_tracking, start_tracking

if TYPE_CHECKING:
    from rewardlab.modeling.ensemble import EnsembleRewardModel

SCORES_NAME = "scores.jsonl"


def write_run_config(run: TrainingRun) -> dict:
    """config.json: the settings as resolved for this run (processes, precision, steps, data, kernels, version); the
    trackers get its scalar entries."""
    cfg, accelerator = run.cfg, run.accelerator
    resolved = asdict(cfg) | {
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "total_steps": run.total_steps,
        "global_batch_pairs": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes,
        "train_data_stats": run.train_stats,
        "kernels": run.kernels,
        "rewardlab_version": version(),
    }
    if accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(run.output_dir / "config.json", resolved)
    if run.show:
        kernels = run.kernels
        print(f"attention: {kernels['attention']}" + (f"; log-probs: {kernels['logprobs']}" if "logprobs" in kernels else ""))
    if run.trackers:
        start_tracking(accelerator, resolved, run.output_dir)
    return resolved


def save_outputs(run: TrainingRun, metrics: dict) -> None:
    """The trained model, metrics.json, log.jsonl, scores.jsonl and the training curves (main process)."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    # Sharded weights (FSDP, ZeRO-3) are gathered first; every process takes part in the gather.
    full_state = accelerator.get_state_dict(run.model) if run.sharded else None
    if accelerator.is_main_process:
        accelerator.unwrap_model(run.model).save_pretrained(run.output_dir / MODEL_SUBDIR, state_dict=full_state)
        write_results(run.output_dir, metrics, run.final_scores, run.log)
    accelerator.wait_for_everyone()


def save_ensemble_outputs(cfg: RewardTrainingFields, ensemble: EnsembleRewardModel, metrics: dict, scores: list[dict]) -> None:
    """An ensemble's run (main process): its manifest beside the members' models, config.json, metrics.json and
    scores.jsonl."""
    if not is_main_process():
        return
    output_dir = Path(cfg.output_dir)
    ensemble.save_manifest(output_dir / MODEL_SUBDIR)
    write_json(output_dir / "config.json", asdict(cfg) | {"rewardlab_version": version()})
    write_results(output_dir, metrics, scores)


def write_results(output_dir: Path, metrics: dict, scores: list[dict], log: list[dict] | None = None) -> None:
    """metrics.json, scores.jsonl (when there are scores), and a trained model's log.jsonl and training curves."""
    write_json(output_dir / "metrics.json", metrics)
    if log is not None:
        write_jsonl(output_dir / "log.jsonl", log)
    if scores:
        write_jsonl(output_dir / SCORES_NAME, scores)
    if log:
        plot_training(log, output_dir / "training_curves.png")


TRAINING_RESPONSES = "training pairs (chosen and rejected responses)"


def record_reward_statistics(run: TrainingRun) -> RewardStatistics:
    """The trained model's reward statistics (`reward_statistics`), set in its config so that `save_outputs` writes them
    into rewardlab_config.json; printed when the run shows progress."""
    model = run.accelerator.unwrap_model(run.model)
    stats = reward_statistics(model, run.cfg, run.train_examples)
    model.config.reward_statistics = stats
    if run.show:
        print(f"reward statistics on {stats.count} {stats.source}: mean {stats.mean:+.4f}, std {stats.std:.4f}")
    return stats


def reward_statistics(
    model: RewardModel | EnsembleRewardModel, cfg: RewardTrainingFields, train_examples: Sequence
) -> RewardStatistics:
    """Mean and std of `model`'s sequence rewards (raw, eval mode) on the normalisation sequences (`normalization_sequences`),
    scored as `rewardlab score` scores them (padding-free unless the run turned it off). Every process computes the same
    numbers on the same sample (under FSDP or ZeRO-3 every process must take part in each forward)."""
    from rewardlab.modeling.service import ScoringService

    sequences, source = normalization_sequences(cfg, model.tokenizer, train_examples)
    service = ScoringService(model, batch_size=cfg.per_device_eval_batch_size, packed=cfg.padding_free)
    normalization = model.normalization
    model.normalization = None  # raw rewards
    try:
        with service.evaluating():
            rewards = service.score_encoded(sequences, view=lambda batch: batch.rewards.tolist())
    finally:
        model.normalization = normalization
    in_batches = [rewards[i] for batch in service.batches(sequences) for i in batch]  # the sum's order, longest first
    return RewardStatistics.of(torch.tensor(in_batches, dtype=torch.float64), source)


def normalization_sequences(cfg: RewardTrainingFields, tokenizer, train_examples: Sequence) -> tuple[list, str]:
    """The encoded sequences the statistics are computed on, and what they are: the `--norm-data` prompt/completion rows,
    or every training pair's chosen and rejected response; each encoded as training encodes them (max_length,
    truncation). At most `norm_samples` responses (0: all): rows, or norm_samples // 2 pairs, drawn with the run's seed."""
    from rewardlab.data.pairs import encode_pairs
    from rewardlab.data.templates import encode_prompt_response

    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.norm_data:
        from rewardlab.data.loading import load_completions

        rows = sample(load_completions(cfg.norm_data, skip_invalid=cfg.skip_invalid), cfg.norm_samples, generator)
        encoded = [encode_prompt_response(tokenizer, r.prompt, r.completion, cfg.max_length, cfg.truncation) for r in rows]
        sequences = [e for e in encoded if e is not None]
        if len(sequences) < 2:
            raise UserError(f"{cfg.norm_data}: fewer than 2 rows left for reward statistics (max_length={cfg.max_length})")
        return sequences, str(cfg.norm_data)
    pairs, _ = encode_pairs(
        tokenizer, sample(list(train_examples), cfg.norm_samples // 2, generator), cfg.max_length, cfg.truncation
    )
    return [p.chosen for p in pairs] + [p.rejected for p in pairs], TRAINING_RESPONSES


def sample(items: list[Any], cap: int, generator: torch.Generator) -> list[Any]:
    """`cap` of the items drawn without replacement, in their original order (all of them when cap is 0 or not less)."""
    if cap <= 0 or len(items) <= cap:
        return items
    keep = torch.randperm(len(items), generator=generator)[:cap].sort().values
    return [items[i] for i in keep.tolist()]


def end_run(run: TrainingRun, keep_process_group: bool = False) -> None:
    """The trackers finish; the process group of a launch goes too, unless more runs follow in it (ensemble members:
    accelerate cannot make a second one in the same process)."""
    if keep_process_group:
        finish_tracking(run.accelerator)
    else:
        run.accelerator.end_training()


def plot_training(log: list[dict], path: Path) -> None:
    """Reward loss, regulariser loss (with, on a log scale, its gradient norm at the last hidden layer over the reward
    loss's) and pairwise accuracy (training batches, eval sets) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in log if r.get("kind") == "train"]
    evals = [r for r in log if r.get("kind") == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["reward_loss"] for r in train], label="reward loss")
    axes[0].set_title("reward loss")
    if train and "reg_loss" in train[0]:
        axes[1].plot(steps, [r["reg_loss"] for r in train], color="tab:orange")
    axes[1].set_title("regulariser loss (and its strength)")
    strength = [(r["step"], r["reg_grad_norm"] / r["reward_grad_norm"]) for r in train if r.get("reward_grad_norm")]
    if any(ratio > 0 for _, ratio in strength):
        ratio_axis = axes[1].twinx()
        ratio_axis.plot(*zip(*strength, strict=True), color="tab:green", marker=".")
        ratio_axis.set_yscale("log")
        ratio_axis.set_ylabel("gradient at the last hidden layer: reg / reward", color="tab:green", fontsize=8)
    axes[2].plot(steps, [r["accuracy"] for r in train], label="train (batch)", alpha=0.6)
    for name in sorted({k for r in evals for k in r.get("accuracy", {})}):
        pts = [(r["step"], r["accuracy"][name]) for r in evals if name in r.get("accuracy", {})]
        axes[2].plot(*zip(*pts, strict=True), marker="o", label=f"eval: {name}")
    axes[2].set_title("pairwise accuracy")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
