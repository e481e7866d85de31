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
    print(f"wrote {cfg.output_dir}/config.json, metrics.json, model/")


train_rm = config_command(
    RewardTrainingFields,
    run,
    build="rewardlab.train_rm:RewardTrainingConfig",
    precheck=RewardTrainingFields.check_output,
    doc="Train a reward model (Bradley-Terry and baselines, with GRM's text-generation regularisers).",
)
