"""`rewardlab ppo`: PPO / RLOO / REINFORCE against a reward model, with sparse or redistributed (R3HF) token rewards.

One option per PPOConfig field, and/or a YAML file of them (`--config`); flags given on the command line win over the file.
"""

from __future__ import annotations

from rewardlab.commands.common import config_command, echo, user_errors
from rewardlab.errors import UserError
from rewardlab.progress import quiet_libraries
from rewardlab.rl.ppo_config import PPOConfig


def run(cfg: PPOConfig) -> None:
    from accelerate import PartialState

    from rewardlab.rl.ppo import train_ppo

    with user_errors():
        cfg.validate()
        if cfg.reward_model is None:
            raise UserError("no reward model: pass --reward-model PATH")
        quiet_libraries()
        try:
            summary = train_ppo(cfg)
        except OSError as err:
            raise UserError(str(err).splitlines()[0]) from None
    if not PartialState().is_main_process:
        return
    first, last = summary["initial"], summary["final"]
    line = f"proxy reward {first['proxy_reward']:.4f} -> {last['proxy_reward']:.4f}, KL {last['kl']:.3f}"
    if "gold_reward" in last:
        line += f", gold reward {first['gold_reward']:.4f} -> {last['gold_reward']:.4f}"
    echo(f"{cfg.algo} ({cfg.reward_shaping}), {summary['steps']} steps: {line}")
    echo(f"wrote {cfg.output_dir}/metrics.jsonl, metrics.json, config.json, samples.jsonl, plots, policy/")


ppo = config_command(
    PPOConfig,
    run,
    doc="Optimise a policy against a reward model with PPO (or RLOO / REINFORCE), sparse or dense token rewards.",
    name="ppo",
)
