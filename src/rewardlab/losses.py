"""Reward-model objectives: pure functions on tensors.

Notation: r_c, r_r are the rewards of the chosen and rejected responses, d = r_c - r_r, and log pi(y|x) is the SUM of the
response tokens' log-probabilities under the reward model's own language-model head (prompt tokens masked).

Reward losses (per pair, averaged over the batch):
    bt            -log sigmoid(d)                                   Bradley-Terry
    margin        -log sigmoid(d - m)                               m = rating difference (Llama 2 style)
    label-smooth  -(1 - eps) log sigmoid(d) - eps log sigmoid(-d)   eps = 0.1
  plus an optional centring term  c * mean((r_c + r_r)^2)           (TRL's center_rewards_coefficient)

GRM (Yang et al. 2024, Eq. 5-8): total = (1 - alpha) * L_reward + alpha * L_reg, alpha = 0.01, beta = 0.1, with
    sft        -log sigmoid(beta * log pi(y_c|x))                     (paper); `sft-nll`: -log pi(y_c|x)
    dpo        -log sigmoid(beta * ((log pi(y_c) - log pi(y_r)) - (log pi_ref(y_c) - log pi_ref(y_r))))
    dpo-noref  the same with the reference terms set to 0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REWARD_LOSSES = ("bt", "margin", "label-smooth")
REGULARIZERS = ("none", "sft", "sft-nll", "dpo", "dpo-noref")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected).mean()


def margin_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected - margin).mean()


def label_smoothing_loss(chosen: torch.Tensor, rejected: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    d = chosen - rejected
    return (-(1.0 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d)).mean()


def centering_penalty(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Pulls rewards towards zero mean (Eisenstein et al. 2023; TRL's center_rewards_coefficient multiplies this)."""
    return ((chosen + rejected) ** 2).mean()


def reward_loss(
    kind: str,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    label_smoothing: float = 0.1,
    center_coef: float = 0.0,
) -> torch.Tensor:
    if kind == "bt":
        loss = bradley_terry_loss(chosen, rejected)
    elif kind == "margin":
        if margin is None:
            raise ValueError("the margin loss needs a margin for every pair")
        loss = margin_loss(chosen, rejected, margin)
    elif kind == "label-smooth":
        loss = label_smoothing_loss(chosen, rejected, label_smoothing)
    else:
        raise ValueError(f"unknown reward loss '{kind}' (choose from {', '.join(REWARD_LOSSES)})")
    if center_coef:
        loss = loss + center_coef * centering_penalty(chosen, rejected)
    return loss


def sft_regularizer(logp_chosen: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """GRM's SFT regulariser: -log sigmoid(beta * log pi(y_c|x))."""
    return -F.logsigmoid(beta * logp_chosen).mean()


def sft_nll_regularizer(logp_chosen: torch.Tensor) -> torch.Tensor:
    """The plain variant: negative log-likelihood of the chosen response."""
    return -logp_chosen.mean()


def dpo_regularizer(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None = None,
    ref_rejected: torch.Tensor | None = None,
    beta: float = 0.1,
) -> torch.Tensor:
    """GRM's DPO regulariser; with no reference (dpo-noref) the reference log-ratio is 0."""
    ref_log_ratio = 0.0 if ref_chosen is None else ref_chosen - ref_rejected
    return -F.logsigmoid(beta * ((logp_chosen - logp_rejected) - ref_log_ratio)).mean()


def grm_total(reward: torch.Tensor, regularizer: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """(1 - alpha) * L_reward + alpha * L_reg; alpha is ignored without a regulariser (plain reward model)."""
    if regularizer is None:
        return reward
    return (1.0 - alpha) * reward + alpha * regularizer


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """mean(r_c > r_r), a tie counting one half."""
    return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean()
