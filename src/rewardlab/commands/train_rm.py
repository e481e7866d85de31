"""`rewardlab train-rm`: one option per RewardTrainingConfig field, and/or a YAML config file; flags given on the command
line win over the file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardlab.commands.common import config_command, quiet_libraries, user_errors
from rewardlab.config import RewardTrainingFields

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
        print(f"{name}: accuracy {m['accuracy']:.4f}  mean margin {m['mean_margin']:.3f}  (n={m['n']})")
    strength = metrics["train"].get("regulariser_strength")
    if cfg.reg != "none" and strength is not None and strength["reg_grad_norm"] is not None:
        print(strength_line(cfg.alpha, strength))
    print(f"wrote {cfg.output_dir}/config.json, metrics.json, model/")


def strength_line(alpha: float, strength: dict) -> str:
    """The summary line of metrics.json's `train.regulariser_strength` (ratios are n/a without a reward term: alpha 1)."""

    def g(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    return (
        f"regulariser strength at alpha {alpha:g}: gradient at the last hidden layer {g(strength['grad_norm_ratio'])} x the "
        f"reward loss's ({g(strength['final_grad_norm_ratio'])} at the end), loss term {g(strength['loss_ratio'])} x; "
        f"mean of {strength['n_records']} logging steps"
    )


train_rm = config_command(
    RewardTrainingFields,
    run,
    build="rewardlab.train_rm:RewardTrainingConfig",
    doc="Train a reward model (Bradley-Terry and baselines, with GRM's text-generation regularisers).",
)
