"""The models PPO trains: the policy (LoRA, or full fine-tuning beside a frozen reference) and the value model (a
trainable copy of the reward model, started as `--critic-init` says), held in one module so accelerate / DeepSpeed see a
single model."""

from __future__ import annotations

import copy

import torch
from torch import nn

from rewardlab.choices import CRITIC_INITS
from rewardlab.errors import UserError
from rewardlab.modeling.reward_model import LoraSettings, RewardModel
from rewardlab.rl.ppo_config import FRESH_HEAD_SCALE, PPOConfig
from rewardlab.rl.rollout import ResponseBatch, response_logits, response_values


def trainable_policy(model: nn.Module, cfg: PPOConfig) -> tuple[nn.Module, nn.Module | None]:
    """(policy to train, frozen reference or None). LoRA: adapters injected, and the reference is this model with its
    adapters disabled (no copy); otherwise a frozen copy of the model is the reference."""
    reference = None
    if cfg.lora:
        from peft import get_peft_model

        settings = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, list(cfg.lora_target_modules))
        model = get_peft_model(model, settings.peft_config(task_type="CAUSAL_LM"))
    else:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        model.requires_grad_(True)
    return model.eval(), reference  # no dropout (Huang et al.); gradients flow in eval mode


class PolicyAndCritic(nn.Module):
    """Policy and (optional) critic as one module: one optimiser, one backward, one accelerate/DeepSpeed model."""

    def __init__(self, policy: nn.Module, critic: RewardModel | None):
        super().__init__()
        self.policy = policy
        self.critic = critic

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_ids: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits / temperature (B, R, V), values (B, R) or None); plain tensor arguments so DDP / DeepSpeed can
        move them. `input_ids` = left-padded prompt + right-padded `response_ids`."""
        context_width = input_ids.shape[1] - response_ids.shape[1]
        batch = ResponseBatch(input_ids, attention_mask, response_ids, attention_mask[:, context_width:], context_width)
        logits = response_logits(self.policy, batch, temperature)
        values = response_values(self.critic, batch) if self.critic is not None else None
        return logits, values


def make_critic(reward_model: nn.Module, init: str = "reward-model", seed: int = 0) -> RewardModel:
    """A trainable copy of the reward model (first member of an ensemble) to serve as the value model, started as
    `init` (CRITIC_INITS): `reward-model` and `potential-offset` keep the head (the offset is applied by the trainer),
    `zero-head` zeroes the head's output layer, `fresh` redraws it small and random (seeded by `seed`). The backbone is
    the reward model's in every case."""
    if init not in CRITIC_INITS:
        raise UserError(f"critic_init = '{init}' is not one of {', '.join(CRITIC_INITS)}")
    critic = copy.deepcopy(reward_model.primary())
    if init == "zero-head":
        critic.head.zero_output_()
    elif init == "fresh":
        # Not zero: with a zero output layer dV/dh = 0, so the backbone gets no gradient until the head has moved.
        critic.head.reinit_output_(FRESH_HEAD_SCALE, torch.Generator().manual_seed(seed))
    critic.reference = None
    if critic.uses_lora:
        for name, param in critic.lm.named_parameters():
            param.requires_grad_("lora_" in name)
    else:
        critic.lm.requires_grad_(True)
    critic.lm_head.requires_grad_(False)  # values come from the reward head; the LM head is unused
    critic.head.requires_grad_(True)
    return critic.eval()
