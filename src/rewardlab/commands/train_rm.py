"""`rewardlab train-rm`: one option per RewardTrainingConfig field, and/or a YAML config file; flags given on the command
line win over the file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardlab.commands.common import config_command, user_errors
from rewardlab.config import RewardTrainingFields
from rewardlab.progress import quiet_libraries

if TYPE_CHECKING:
    from rewardlab.train_rm import RewardTrainingConfig


def run(cfg: RewardTrainingConfig) -> None:
    from accelerate import PartialState

    from rewardlab.train_rm import train_reward_model

    with user_errors():
        quiet_libraries()
        metrics = train_reward_model(cfg)
    if not PartialState().is_main_process:
        return
    for name, m in metrics["eval"].items():
        print(eval_line(name, m))
    strength = metrics["train"].get("regulariser_strength")
    if cfg.reg != "none" and strength is not None and strength["reg_grad_norm"] is not None:
        print(strength_line(cfg.alpha, strength))
    print(f"wrote {cfg.output_dir}/config.json, metrics.json, model/")


def eval_line(name: str, m: dict) -> str:
    """One eval set's final figures: a reward model's pairwise accuracy, or a process reward model's step accuracy and
    ProcessBench F1 (averaged over the set's subsets)."""
    if "processbench" in m:
        f1 = m["processbench"]["average_f1"]
        return (f"{name}: step accuracy {m['accuracy']:.4f}  first-error F1 {'n/a' if f1 is None else f'{f1:.4f}'}  "
                f"(n={m['n']}, {m['steps']} labelled steps)")  # fmt: skip
    return f"{name}: accuracy {m['accuracy']:.4f}  mean margin {m['mean_margin']:.3f}  (n={m['n']})"


def strength_line(alpha: float, strength: dict) -> str:
    """The summary line of metrics.json's `train.regulariser_strength`."""
    if strength["grad_norm_ratio"] is None:  # alpha 1: no reward term
        return f"regulariser strength at alpha {alpha:g}: no reward loss term, only the regulariser trains"
    first, last, mean, loss = (
        "n/a" if strength[k] is None else f"{strength[k]:.3g}"
        for k in ("first_grad_norm_ratio", "final_grad_norm_ratio", "grad_norm_ratio", "loss_ratio")
    )
    return (
        f"regulariser strength at alpha {alpha:g}: its gradient at the last hidden layer is {first} x the reward loss's "
        f"at the first logging step, {last} x at the last (mean {mean}; loss terms {loss} x)"
    )


train_rm = config_command(
    RewardTrainingFields,
    run,
    build="rewardlab.train_rm:RewardTrainingConfig",
    precheck=RewardTrainingFields.check_output,
    doc="Train a reward model (Bradley-Terry and baselines, with GRM's text-generation regularisers).",
    name="train_rm",
)
