"""Reward-model objectives: pure functions on tensors, and the one table the trainer dispatches through.

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
`grm_stats` forms that total from the two losses, with the statistics every objective reports, and on request each
term's gradient norm at the last hidden layer (`gradient_norms`: the regulariser's strength).

`REWARD_LOSS_TABLE` and `REGULARIZER_TABLE` (bottom of this file) map every name the CLI accepts to its function; the
trainer's objective (`rewardlab.objective`) reads nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rewardlab.choices import REGULARIZERS, REWARD_LOSSES
from rewardlab.errors import UserError

Stats = dict[str, torch.Tensor]


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: -log sigmoid(r_c - r_r)."""
    return -F.logsigmoid(chosen - rejected).mean()


def margin_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Margin (Llama 2): -log sigmoid(r_c - r_r - m), m the rating difference."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


def label_smoothing_loss(chosen: torch.Tensor, rejected: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """-(1 - eps) log sigmoid(d) - eps log sigmoid(-d): BT with smoothed labels (its minimiser is d = log((1-eps)/eps))."""
    d = chosen - rejected
    return (-(1.0 - eps) * F.logsigmoid(d) - eps * F.logsigmoid(-d)).mean()


def centering_penalty(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Pulls rewards towards zero mean (Eisenstein et al. 2023; TRL's center_rewards_coefficient multiplies this)."""
    return ((chosen + rejected) ** 2).mean()


def sft_regularizer(logp_chosen: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """GRM's SFT regulariser: -log sigmoid(beta * log pi(y_c|x))."""
    return -F.logsigmoid(beta * logp_chosen).mean()


def sft_nll_regularizer(logp_chosen: torch.Tensor) -> torch.Tensor:
    """The plain variant: negative log-likelihood of the chosen response, -log pi(y_c|x)."""
    return -logp_chosen.mean()


def dpo_regularizer(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None = None,
    ref_rejected: torch.Tensor | None = None,
    beta: float = 0.1,
) -> torch.Tensor:
    """GRM's DPO regulariser: -log sigmoid(beta * ((log pi(y_c) - log pi(y_r)) - (log pi_ref(y_c) - log
    pi_ref(y_r)))); with no reference (dpo-noref) the reference log-ratio is 0."""
    ref_log_ratio = 0.0 if ref_chosen is None else ref_chosen - ref_rejected
    return -F.logsigmoid(beta * ((logp_chosen - logp_rejected) - ref_log_ratio)).mean()


def grm_terms(reward: torch.Tensor, regularizer: torch.Tensor | None, alpha: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GRM's two weighted terms, ((1 - alpha) * L_reward, alpha * L_reg); without a regulariser (a plain reward model)
    alpha is ignored: (L_reward, None)."""
    if regularizer is None:
        return reward, None
    return (1.0 - alpha) * reward, alpha * regularizer


def grm_stats(
    l_reward: torch.Tensor,
    l_reg: torch.Tensor | None,
    alpha: float,
    batch_stats: Stats,
    head_input: torch.Tensor | None = None,
) -> Stats:
    """GRM's loss = (1 - alpha) * L_reward + alpha * L_reg (with its graph) and the detached statistics every objective
    reports: reward_loss, the objective's own `batch_stats`, the two weighted terms (reg_term 0 without a regulariser),
    reg_loss with one, and with `head_input` (the tensor the heads read) each term's gradient norm there."""
    reward_term, reg_term = grm_terms(l_reward, l_reg, alpha)
    stats = {
        "loss": reward_term if reg_term is None else reward_term + reg_term,
        "reward_loss": l_reward.detach(),
        **batch_stats,
        "reward_term": reward_term.detach(),
        "reg_term": torch.zeros_like(reward_term.detach()) if reg_term is None else reg_term.detach(),
    }
    if l_reg is not None:
        stats["reg_loss"] = l_reg.detach()
    if head_input is not None:
        stats |= gradient_norms(head_input, {"reward_grad_norm": reward_term, "reg_grad_norm": reg_term})
    return stats


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


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """mean(r_c > r_r), a tie counting one half. Reported accuracies use float64, so 2 of 3 reads 0.6666666666666666."""
    return ((chosen > rejected).to(dtype) + 0.5 * (chosen == rejected).to(dtype)).mean()


# ----------------------------------------------------------------------------------------------------------------------
# the table: every reward loss and regulariser by the name the CLI accepts


@dataclass(frozen=True)
class PairLogprobs:
    """Summed response log-probs of a batch of pairs: the model's, and the reference's when the regulariser needs them."""

    chosen: torch.Tensor
    rejected: torch.Tensor | None = None
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


@dataclass(frozen=True)
class Regularizer:
    """A GRM regulariser: which responses' log-probs it reads (the rejected ones too, or not), whether it needs the
    reference model's, and its loss given those log-probs and beta."""

    needs_rejected: bool
    needs_reference: bool
    loss: Callable[[PairLogprobs, float], torch.Tensor]


def _needs_margin(margin: torch.Tensor | None) -> torch.Tensor:
    if margin is None:
        raise UserError("the margin loss needs a margin for every pair")
    return margin


# name -> loss(r_c, r_r, margin, label_smoothing)
REWARD_LOSS_TABLE: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]] = {
    "bt": lambda chosen, rejected, margin, eps: bradley_terry_loss(chosen, rejected),
    "margin": lambda chosen, rejected, margin, eps: margin_loss(chosen, rejected, _needs_margin(margin)),
    "label-smooth": lambda chosen, rejected, margin, eps: label_smoothing_loss(chosen, rejected, eps),
}

# name -> Regularizer; "none" trains a plain reward model
REGULARIZER_TABLE: dict[str, Regularizer | None] = {
    "none": None,
    "sft": Regularizer(False, False, lambda lp, beta: sft_regularizer(lp.chosen, beta)),
    "sft-nll": Regularizer(False, False, lambda lp, beta: sft_nll_regularizer(lp.chosen)),
    "dpo": Regularizer(
        True, True, lambda lp, beta: dpo_regularizer(lp.chosen, lp.rejected, lp.ref_chosen, lp.ref_rejected, beta)
    ),
    "dpo-noref": Regularizer(True, False, lambda lp, beta: dpo_regularizer(lp.chosen, lp.rejected, beta=beta)),
}


def reward_loss(
    kind: str,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    label_smoothing: float = 0.1,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """The reward loss named `kind` (see the table), plus `center_coef` times the centring penalty."""
    if kind not in REWARD_LOSS_TABLE:
        raise UserError(f"unknown reward loss '{kind}' (choose from {', '.join(REWARD_LOSSES)})")
    loss = REWARD_LOSS_TABLE[kind](chosen, rejected, margin, label_smoothing)
    if center_coef:
        loss = loss + center_coef * centering_penalty(chosen, rejected)
    return loss


def regularizer_loss(kind: str, logprobs: PairLogprobs, beta: float = 0.1) -> torch.Tensor | None:
    """The regulariser named `kind` (see the table) on the given log-probs; None for "none"."""
    if kind not in REGULARIZER_TABLE:
        raise UserError(f"unknown regulariser '{kind}' (choose from {', '.join(REGULARIZERS)})")
    regularizer = REGULARIZER_TABLE[kind]
    return None if regularizer is None else regularizer.loss(logprobs, beta)


# ----------------------------------------------------------------------------------------------------------------------
# process reward models: a score at each step's end
#
# A PRM reads the reward head at the last token of every step (rewardlab.data.steps); its logit s_k is the log-odds that
# step k is correct. The loss is binary cross-entropy on the labelled steps:
#     L_prm = -mean_k [ y_k log sigmoid(s_k) + (1 - y_k) log sigmoid(-s_k) ]
# over every step of the batch with a label (ProcessBench's steps after the first error have none). TRL's PRM trainer
# writes the same model as two-class token classification, with logits (0, s_k): softmax gives the same sigmoid(s_k).


def gather_steps(position_rewards: torch.Tensor, step_ends: torch.Tensor) -> torch.Tensor:
    """(B, T) position rewards and (B, S) token indices of each step's last token (-1 past a row's steps) -> (B, S)
    step logits (0 where there is no step)."""
    index = step_ends.clamp(min=0)
    return torch.gather(position_rewards, 1, index) * (step_ends >= 0)


def step_bce_loss(step_logits: torch.Tensor, step_labels: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the labelled steps' logits against their labels (1 correct, 0 wrong), averaged over the
    labelled steps of the batch; 0 (with a gradient) when none is labelled."""
    per_step = F.binary_cross_entropy_with_logits(step_logits.float(), step_labels.float(), reduction="none")
    weights = labelled.float()
    return (per_step * weights).sum() / weights.sum().clamp(min=1.0)
