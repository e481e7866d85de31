"""`rewardlab ppo`: PPO / RLOO / REINFORCE against a reward model, with sparse or redistributed (R3HF) token rewards.

Flags and/or a YAML file of PPOConfig fields (`--config`); flags given on the command line win over the file.
"""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from rewardlab.commands.common import UserError, echo, quiet_libraries, user_errors


def ppo(
    config: Path | None = typer.Option(None, "--config", help="YAML file with PPOConfig fields."),
    policy: str | None = typer.Option(None, "--policy", help="'builtin' (default; the world's base policy), hub id or dir."),
    reward_model: str | None = typer.Option(None, "--reward-model", help="Reward model directory (or training run)."),
    reward_shaping: str | None = typer.Option(
        None, "--reward-shaping", help="sparse (default) | r3hf | r3hf-paper | mix | uniform | abc."
    ),
    gold: str | None = typer.Option(None, "--gold", help="Gold scorer to log: 'builtin' or a reward model dir."),
    prompts: str | None = typer.Option(None, "--prompts", help="Prompt data (file or hub id), or builtin[:SPLIT]."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Prompts to load (builtin: 1024)."),
    output: str | None = typer.Option(None, "--output", help="Output directory (default runs/ppo)."),
    algo: str | None = typer.Option(None, "--algo", help="ppo (default) | rloo | reinforce."),
    steps: int | None = typer.Option(None, "--steps", min=0, help="Rollout + update iterations (default 100)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Responses per rollout (default 64)."),
    minibatch_size: int | None = typer.Option(None, "--minibatch-size", min=1, help="Per optimiser step (16)."),
    ppo_epochs: int | None = typer.Option(None, "--ppo-epochs", min=1, help="Passes over each rollout (4)."),
    rloo_k: int | None = typer.Option(None, "--rloo-k", min=2, help="rloo: samples per prompt (4)."),
    reinforce_baseline: str | None = typer.Option(None, "--reinforce-baseline", help="batch | ema (default)."),
    lr: float | None = typer.Option(None, "--lr", help="Policy learning rate (default 1e-5)."),
    critic_lr: float | None = typer.Option(None, "--critic-lr", help="Critic learning rate (default 5e-6)."),
    critic_init: str | None = typer.Option(
        None,
        "--critic-init",
        help="reward-model (default: V = the RM's prefix score) | potential-offset (RM minus the shaping's potential: r3hf "
        "then reproduces sparse) | fresh (RM backbone, small random output layer) | zero-head (output layer zeroed).",
    ),
    kl_coef: float | None = typer.Option(None, "--kl-coef", help="KL coefficient beta (default 0.05; R3HF: 0.02)."),
    kl_estimator: str | None = typer.Option(None, "--kl-estimator", help="k1 (default) | k3."),
    adaptive_kl: bool | None = typer.Option(None, "--adaptive-kl/--fixed-kl", help="Adaptive KL coefficient."),
    kl_target: float | None = typer.Option(None, "--kl-target", help="Adaptive KL target per response (6.0)."),
    missing_eos_penalty: float | None = typer.Option(
        None, "--missing-eos-penalty", help="Subtracted from the reward of responses without EOS."
    ),
    normalize_reward: bool | None = typer.Option(
        None, "--normalize-reward/--no-normalize-reward", help="Divide token scores by the running reward std."
    ),
    beta_c: float | None = typer.Option(None, "--beta-c", help="mix: weight of r3hf vs sparse (default 1)."),
    vf_coef: float | None = typer.Option(
        None, "--vf-coef", help="Value loss coefficient (0.1); the critic is separate, so Adam undoes it: use --critic-lr."
    ),
    whiten_advantages: bool | None = typer.Option(
        None, "--whiten-advantages/--no-whiten-advantages", help="Centre and scale advantages over the batch (on)."
    ),
    gamma: float | None = typer.Option(None, "--gamma", help="Discount (default 1)."),
    lam: float | None = typer.Option(None, "--lam", help="GAE lambda (default 0.95)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Default 32."),
    temperature: float | None = typer.Option(None, "--temperature", help="Sampling temperature (default 0.7)."),
    top_p: float | None = typer.Option(None, "--top-p", help="Default 1.0 (no nucleus truncation)."),
    lora: bool | None = typer.Option(None, "--lora/--no-lora", help="LoRA on the policy; reference = adapters off."),
    lora_r: int | None = typer.Option(None, "--lora-r"),
    lora_alpha: int | None = typer.Option(None, "--lora-alpha"),
    seed: int | None = typer.Option(None, "--seed"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on with a capable GPU)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available); more: accelerate."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Optimise a policy against a reward model with PPO (or RLOO / REINFORCE), sparse or dense token rewards."""
    from rewardlab.rl.ppo import PPOConfig, train_ppo

    flags = {
        "policy": policy, "reward_model": reward_model, "reward_shaping": reward_shaping, "gold": gold,
        "prompts": prompts, "limit": limit, "output_dir": output, "algo": algo, "steps": steps,
        "batch_size": batch_size, "minibatch_size": minibatch_size, "ppo_epochs": ppo_epochs, "rloo_k": rloo_k,
        "reinforce_baseline": reinforce_baseline, "lr": lr, "critic_lr": critic_lr, "critic_init": critic_init,
        "kl_coef": kl_coef,
        "kl_estimator": kl_estimator, "adaptive_kl": adaptive_kl, "kl_target": kl_target,
        "missing_eos_penalty": missing_eos_penalty, "normalize_reward": normalize_reward, "beta_c": beta_c,
        "vf_coef": vf_coef, "whiten_advantages": whiten_advantages, "gamma": gamma, "lam": lam,
        "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "lora": lora, "lora_r": lora_r,
        "lora_alpha": lora_alpha, "seed": seed, "bf16": bf16, "device": device,
    }  # fmt: skip
    with user_errors():
        values: dict = {}
        if config is not None:
            if not config.exists():
                raise UserError(f"{config}: no such config file")
            try:
                values = yaml.safe_load(config.read_text()) or {}
            except yaml.YAMLError as err:
                raise UserError(f"{config}: not valid YAML ({str(err).splitlines()[0]})") from None
            if not isinstance(values, dict):
                raise UserError(f"{config}: expected a mapping of PPOConfig fields")
        values |= {k: v for k, v in flags.items() if v is not None}
        values["progress"] = progress
        cfg = PPOConfig.from_dict(values)
        cfg.validate()
        if cfg.reward_model is None:
            raise UserError("no reward model: pass --reward-model PATH")
        quiet_libraries()
        try:
            summary = train_ppo(cfg)
        except OSError as err:
            raise UserError(str(err).splitlines()[0]) from None
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    first, last = summary["initial"], summary["final"]
    line = f"proxy reward {first['proxy_reward']:.4f} -> {last['proxy_reward']:.4f}, KL {last['kl']:.3f}"
    if "gold_reward" in last:
        line += f", gold reward {first['gold_reward']:.4f} -> {last['gold_reward']:.4f}"
    echo(f"{cfg.algo} ({cfg.reward_shaping}), {summary['steps']} steps: {line}")
    echo(f"wrote {cfg.output_dir}/metrics.jsonl, metrics.json, config.json, samples.jsonl, plots, policy/")
