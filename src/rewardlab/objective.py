"""The reward-model objective on one batch of pairs: the model's forward passes, then the math of `rewardlab.losses`.
`compute_loss` reads the objective's own settings group, `rewardlab.config.RewardObjectiveSpec` (a run's
`RewardTrainingConfig` is one).

For a batch of B pairs (rows 0..B-1 chosen, B..2B-1 rejected, see `rewardlab.data.pairs`):
    1. chosen and rejected go through the model as ONE (2B, T) batch: rewards r_c, r_r at each sequence's last real token,
       and, when the regulariser needs them, summed response log-probs from the kept LM head (only the chosen responses'
       unless it also reads the rejected ones); `padding_free` runs the batch's real tokens as one packed row;
    2. a regulariser that needs the reference (dpo) gets its log-probs from a pass without gradients: LoRA adapters
       disabled, or the frozen copy under full fine-tuning;
    3. L_reward and L_reg by name from `REWARD_LOSS_TABLE` / `REGULARIZER_TABLE`, and
       loss = (1 - alpha) * L_reward + alpha * L_reg (GRM, `losses.grm_stats`); the two terms are reported apart
       (`reward_term`, `reg_term`);
    4. on request (the trainer asks on logging steps only), the regulariser's strength: the norm of each term's gradient
       with respect to the last hidden layer, the hidden states both heads read (`losses.gradient_norms`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rewardlab.losses import (
    REGULARIZER_TABLE,
    PairLogprobs,
    Regularizer,
    Stats,
    gather_steps,
    grm_stats,
    pairwise_accuracy,
    regularizer_loss,
    reward_loss,
    step_bce_loss,
)

if TYPE_CHECKING:
    from rewardlab.config import RewardObjectiveSpec


def compute_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    objective: RewardObjectiveSpec,
    padding_free: bool,
    measure_gradients: bool = False,
) -> Stats:
    """The objective's settings (`RewardObjectiveSpec`, of which a run's `RewardTrainingConfig` is one) on one batch of
    pairs, run packed when `padding_free`: the loss (with gradients) and detached statistics: reward_loss, accuracy,
    margin, the mean and (population) std of the batch's 2B rewards, reg_loss with a regulariser, and the loss's two
    terms, reward_term = (1 - alpha) * L_reward and reg_term = alpha * L_reg (0 without a regulariser; they sum to loss).
    `measure_gradients` adds reward_grad_norm and reg_grad_norm (`losses.gradient_norms`): two more backward passes through the
    heads only, so the trainer asks on logging steps alone."""
    regularizer = REGULARIZER_TABLE[objective.reg]
    n_pairs = batch["margin"].shape[0]
    response_mask = regularised_responses(batch, n_pairs, regularizer)
    reference = reference_logprobs(model, batch, response_mask, regularizer, padding_free)
    out = model(batch["input_ids"], batch["attention_mask"], response_mask, packed=padding_free)
    chosen, rejected = out.sequence_rewards[:n_pairs], out.sequence_rewards[n_pairs:]
    logprobs = None if regularizer is None else split_pairs(out.logprobs, reference, n_pairs)
    l_reward = reward_loss(
        objective.loss, chosen, rejected, batch["margin"], objective.label_smoothing, objective.center_rewards_coefficient
    )
    l_reg = None if logprobs is None else regularizer_loss(objective.reg, logprobs, objective.beta)
    batch_stats = {
        "accuracy": pairwise_accuracy(chosen.detach(), rejected.detach()),
        "margin": (chosen - rejected).detach().mean(),
        "reward_mean": out.sequence_rewards.detach().mean(),
        "reward_std": out.sequence_rewards.detach().std(correction=0),
    }
    return grm_stats(l_reward, l_reg, objective.alpha, batch_stats, out.head_input if measure_gradients else None)


def compute_step_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    objective: RewardObjectiveSpec,
    padding_free: bool,
    measure_gradients: bool = False,
) -> Stats:
    """A process reward model's objective on one batch of step-labelled rows (`rewardlab.data.step_batches`): the
    reward head's logit at each step's end is the log-odds that the step is correct, L_prm = binary cross-entropy on the
    labelled steps (`losses.step_bce_loss`), and GRM's loss = (1 - alpha) * L_prm + alpha * L_reg with an SFT regulariser
    on the responses whose every step is correct (the rows of `response_mask`; none in the batch: L_reg = 0 there, so the
    reward term keeps its (1 - alpha) weight on every batch).
    Stats as `compute_loss`'s, with `accuracy` the share of labelled steps on the right side of P = 1/2."""
    regularizer = REGULARIZER_TABLE[objective.reg]
    imitated = batch["response_mask"].any(dim=1)
    response_mask = batch["response_mask"] if regularizer is not None and bool(imitated.any()) else None
    out = model(batch["input_ids"], batch["attention_mask"], response_mask, packed=padding_free)
    logits = gather_steps(out.position_rewards, batch["step_ends"])
    labelled = batch["labelled"]
    l_prm = step_bce_loss(logits, batch["step_labels"], labelled)
    l_reg = None
    if response_mask is not None:
        l_reg = regularizer_loss(objective.reg, PairLogprobs(out.logprobs[imitated]), objective.beta)
    elif regularizer is not None:
        l_reg = torch.zeros((), device=l_prm.device)
    scores = logits.detach()[labelled]
    right = ((scores > 0).float() == batch["step_labels"][labelled]).float()
    zero = torch.zeros((), device=logits.device)
    batch_stats = {
        "accuracy": right.mean() if right.numel() else zero,
        "reward_mean": scores.mean() if scores.numel() else zero,
        "reward_std": scores.std(correction=0) if scores.numel() else zero,
    }
    return grm_stats(l_prm, l_reg, objective.alpha, batch_stats, out.head_input if measure_gradients else None)


def regularised_responses(batch: dict[str, torch.Tensor], n_pairs: int, regularizer: Regularizer | None) -> torch.Tensor | None:
    """The response tokens whose log-probs the regulariser reads: none, the chosen rows', or every row's."""
    if regularizer is None:
        return None
    if regularizer.needs_rejected:
        return batch["response_mask"]
    chosen_only = batch["response_mask"].clone()
    chosen_only[n_pairs:] = False  # the LM head is not run for the rejected responses
    return chosen_only


def reference_logprobs(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    response_mask: torch.Tensor | None,
    regularizer: Regularizer | None,
    padding_free: bool,
) -> torch.Tensor | None:
    """The reference's summed response log-probs, without gradients, when the regulariser needs them (dpo)."""
    if regularizer is None or not regularizer.needs_reference:
        return None
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], response_mask, reference=True, packed=padding_free).logprobs


def split_pairs(logprobs: torch.Tensor, reference: torch.Tensor | None, n_pairs: int) -> PairLogprobs:
    """(2B,) stacked log-probs (chosen rows first) -> the chosen and rejected halves, the reference's likewise."""
    ref_chosen = ref_rejected = None
    if reference is not None:
        ref_chosen, ref_rejected = reference[:n_pairs], reference[n_pairs:]
    return PairLogprobs(logprobs[:n_pairs], logprobs[n_pairs:], ref_chosen, ref_rejected)
