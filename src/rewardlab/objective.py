"""The reward-model objective on one batch of pairs: the model's forward passes, then the math of `rewardlab.losses`.

For a batch of B pairs (rows 0..B-1 chosen, B..2B-1 rejected, see `rewardlab.data.pairs`):
    1. chosen and rejected go through the model as ONE (2B, T) batch: rewards r_c, r_r at each sequence's last real token,
       and, when the regulariser needs them, summed response log-probs from the kept LM head (only the chosen responses'
       unless it also reads the rejected ones); `padding_free` runs the batch's real tokens as one packed row;
    2. a regulariser that needs the reference (dpo) gets its log-probs from a pass without gradients: LoRA adapters
       disabled, or the frozen copy under full fine-tuning;
    3. L_reward and L_reg by name from `REWARD_LOSS_TABLE` / `REGULARIZER_TABLE`, and
       loss = (1 - alpha) * L_reward + alpha * L_reg (GRM); the two terms are reported apart (`reward_term`, `reg_term`);
    4. on request (the trainer asks on logging steps only), the regulariser's strength: the norm of each term's gradient
       with respect to the last hidden layer, the hidden states both heads read (`gradient_norms`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from rewardlab.losses import (
    REGULARIZER_TABLE,
    PairLogprobs,
    Regularizer,
    grm_terms,
    pairwise_accuracy,
    regularizer_loss,
    reward_loss,
)


@dataclass(frozen=True)
class Objective:
    """The objective's settings, named as in `RewardTrainingConfig` (so `from_config` reads them from any run config)."""

    loss: str = "bt"
    reg: str = "none"
    alpha: float = 0.01
    beta: float = 0.1
    label_smoothing: float = 0.1
    center_rewards_coefficient: float = 0.0
    padding_free: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> Objective:
        """The objective of a run config (any object with these fields, e.g. `RewardTrainingConfig`)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    @property
    def regularizer(self) -> Regularizer | None:
        return REGULARIZER_TABLE[self.reg]

    def __call__(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], measure_gradients: bool = False
    ) -> dict[str, torch.Tensor]:
        """loss (with gradients) and detached statistics: reward_loss, accuracy, margin, the mean and (population) std of
        the batch's 2B rewards, reg_loss with a regulariser, and the loss's two terms, reward_term = (1 - alpha) *
        L_reward and reg_term = alpha * L_reg (0 without a regulariser; they sum to loss). `measure_gradients` adds
        reward_grad_norm and reg_grad_norm (`gradient_norms`): two more backward passes through the heads only, so the
        trainer asks on logging steps alone."""
        n_pairs = batch["margin"].shape[0]
        response_mask = self.response_mask(batch, n_pairs)
        reference = self.reference_logprobs(model, batch, response_mask)
        out = model(batch["input_ids"], batch["attention_mask"], response_mask, packed=self.padding_free)
        chosen, rejected = out.sequence_rewards[:n_pairs], out.sequence_rewards[n_pairs:]
        l_reward = reward_loss(
            self.loss, chosen, rejected, batch["margin"], self.label_smoothing, self.center_rewards_coefficient
        )
        l_reg = None
        if self.regularizer is not None:
            l_reg = regularizer_loss(self.reg, split_pairs(out.logprobs, reference, n_pairs), self.beta)
        reward_term, reg_term = grm_terms(l_reward, l_reg, self.alpha)
        stats = {
            "loss": reward_term if reg_term is None else reward_term + reg_term,
            "reward_loss": l_reward.detach(),
            "accuracy": pairwise_accuracy(chosen.detach(), rejected.detach()),
            "margin": (chosen - rejected).detach().mean(),
            "reward_mean": out.sequence_rewards.detach().mean(),
            "reward_std": out.sequence_rewards.detach().std(correction=0),
            "reward_term": reward_term.detach(),
            "reg_term": torch.zeros_like(reward_term.detach()) if reg_term is None else reg_term.detach(),
        }
        if l_reg is not None:
            stats["reg_loss"] = l_reg.detach()
        if measure_gradients:
            stats |= gradient_norms(out.head_input, {"reward_grad_norm": reward_term, "reg_grad_norm": reg_term})
        return stats

    def response_mask(self, batch: dict[str, torch.Tensor], n_pairs: int) -> torch.Tensor | None:
        """The response tokens whose log-probs the regulariser reads: none, the chosen rows', or every row's."""
        if self.regularizer is None:
            return None
        if self.regularizer.needs_rejected:
            return batch["response_mask"]
        chosen_only = batch["response_mask"].clone()
        chosen_only[n_pairs:] = False  # the LM head is not run for the rejected responses
        return chosen_only

    def reference_logprobs(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], response_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        if self.regularizer is None or not self.regularizer.needs_reference:
            return None
        with torch.no_grad():
            return model(
                batch["input_ids"], batch["attention_mask"], response_mask, reference=True, packed=self.padding_free
            ).logprobs


def gradient_norms(hidden: torch.Tensor, terms: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """name -> ||d term / d hidden||, the Frobenius norm over every token of the batch (float32, detached), for the terms of
    one loss; 0 for a term that is None or does not reach `hidden`. One `torch.autograd.grad` per term, keeping the graph
    for the training backward; no parameter's gradient is touched. {} when `hidden` carries no gradient (a frozen
    backbone: nothing below the heads trains).

    `hidden` is the tensor the heads read (`RewardOutput.head_input`); packed or padded, the norm is the same, since
    neither term reads a padding position."""
    if not hidden.requires_grad:
        return {}
    norms = {}
    for name, term in terms.items():
        grad = None
        if term is not None and term.requires_grad:
            (grad,) = torch.autograd.grad(term, hidden, retain_graph=True, allow_unused=True)
        norms[name] = torch.zeros((), device=hidden.device) if grad is None else grad.detach().float().norm()
    return norms


def split_pairs(logprobs: torch.Tensor, reference: torch.Tensor | None, n_pairs: int) -> PairLogprobs:
    """(2B,) stacked log-probs (chosen rows first) -> the chosen and rejected halves, the reference's likewise."""
    ref_chosen = ref_rejected = None
    if reference is not None:
        ref_chosen, ref_rejected = reference[:n_pairs], reference[n_pairs:]
    return PairLogprobs(logprobs[:n_pairs], logprobs[n_pairs:], ref_chosen, ref_rejected)


def compute_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], cfg: Any) -> dict[str, torch.Tensor]:
    """The objective of `cfg` (an `Objective`, or a run config holding its fields) on one batch of pairs."""
    objective = cfg if isinstance(cfg, Objective) else Objective.from_config(cfg)
    return objective(model, batch)
