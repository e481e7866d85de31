"""Pure tensor math for PPO, REINFORCE and RLOO on language-model responses.

Conventions: every per-token tensor is (B, T) over RESPONSE tokens only, with a float or bool `mask` (B, T) that is 1 on
real response tokens and 0 on the padding after EOS (right padding). Outputs are zero outside the mask.

Sources:
- Huang et al. 2024, "The N+ implementation details of RLHF with PPO: a case study on TL;DR summarization" (Huang N+).
- Schulman et al. 2016, "High-dimensional continuous control using generalized advantage estimation" (GAE).
- Schulman et al. 2017, "Proximal policy optimization algorithms" (PPO).
- Schulman 2020, "Approximating KL divergence" (blog; the k1/k2/k3 estimators).
- Ziegler et al. 2019, "Fine-tuning language models from human preferences" (adaptive KL controller).
- R3HF / RED, arXiv 2411.08302 (token-level rewards; Eq. 8 final reward).
- Ahmadian et al. 2024, "Back to basics: revisiting REINFORCE style optimization for learning from human feedback"
  (RLOO).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from rewardlab.choices import ALGOS
from rewardlab.errors import UserError

KLEstimator = Literal["k1", "k2", "k3"]


# ----------------------------------------------------------------------------------------------------------------------
# Masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * m) / sum(m), over all elements (dim=None) or along `dim`.

    Slices with no real token give 0 (not NaN), so an empty response cannot poison a batch statistic.
    """
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements of x (all of them together); Bessel-corrected when `unbiased`."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    if n < (2 if unbiased else 1):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} unmasked elements, got {int(n.item())}")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked elements (Huang N+: advantages are whitened, rewards are not).

    With shift_mean=False the mean is added back, so only the scale changes. Zero outside the mask.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# KL penalty


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token sample estimate of KL(pi || ref) from tokens sampled from pi (Schulman 2020).

    With log_ratio = logp - ref_logp (log pi/ref):
      k1 = log_ratio                               unbiased, can be negative per token
      k2 = 0.5 * log_ratio^2                       biased, >= 0, low variance when pi ~ ref
      k3 = exp(-log_ratio) - 1 + log_ratio         unbiased, >= 0 (since e^u >= 1 + u)
    """
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise UserError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")


class FixedKLController:
    """Constant KL coefficient beta (Huang N+ use 0.05; R3HF reports 0.02)."""

    def __init__(self, coef: float):
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op; present so both controllers share one interface."""


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, Sec. 2.2).

    e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)
    beta_{t+1} = beta_t * (1 + K_beta * e_t),  K_beta = n_steps / horizon
    """

    def __init__(self, init_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise UserError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


def exact_kl_per_token(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) of the full next-token distributions at each position, sum_v p_v (log p_v - log q_v), from the
    two models' logits (..., vocab): no sampling noise over the vocabulary, never negative."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def shape_rewards(
    token_scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final per-token reward r_t = score_t - beta * kl_t (R3HF Eq. 8; Huang N+ per-token KL penalty in the reward).

    `token_scores` is the reward model's (B, T) reward: dense (R3HF redistribution) or sparse (sequence score on the
    EOS token, zero elsewhere). `logp` is log pi_old of the sampled tokens. Returns (rewards, kl), both zero outside
    the mask.
    """
    mask = mask.to(logp.dtype)
    kl = kl_per_token(logp, ref_logp, estimator) * mask
    rewards = (token_scores - kl_coef * kl) * mask
    return rewards, kl


# ----------------------------------------------------------------------------------------------------------------------
# Advantages and returns


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16), computed backwards over time:

      delta_t = r_t + gamma * V_{t+1} - V_t
      A_t     = delta_t + gamma * lam * A_{t+1}
      returns = A + V   (the value-function target, TD(lambda) return)

    V_{t+1} and A_{t+1} are 0 after the last real token (the episode ends at EOS), which the right-padded mask encodes.
    Defaults gamma=1, lam=0.95 follow Huang N+. Targets only: no gradient flows. Zero outside the mask.
    """
    mask = mask.to(rewards.dtype)
    rewards, values = rewards * mask, values * mask
    num_tokens = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(num_tokens)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        # Padding positions carry V = A = 0, so the step before them bootstraps from 0.
        next_value, next_advantage = values[:, t], advantages[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


@torch.no_grad()
def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Per-token Monte-Carlo return G_t = sum_{k >= t} gamma^(k - t) r_k over real tokens (REINFORCE / RLOO)."""
    mask = mask.to(rewards.dtype)
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns * mask


@torch.no_grad()
def rloo_advantages(token_returns: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024), kept per token.

    The batch is laid out as consecutive groups of `group_size` samples of the same prompt. For sample i of a group
    the baseline is the mean SEQUENCE return G_0 of the other k - 1 samples:

      b_i = (sum_j G_0^j - G_0^i) / (k - 1),      A_t^i = G_t^i - b_i

    Why per token: a sequence-level advantage G_0 - b only sees the sum of the rewards, so any redistribution of the
    same total over the tokens (R3HF is potential-based shaping with gamma = 1) cancels exactly and the dense signal is
    lost. Dense rewards reach the gradient only through the per-token returns G_t used here. For sparse rewards
    (all on EOS) and gamma = 1, G_t = G_0 for every real token and this is plain RLOO.
    """
    batch_size = token_returns.shape[0]
    if group_size < 2:
        raise UserError(f"RLOO needs group_size >= 2, got {group_size}")
    if batch_size % group_size != 0:
        raise UserError(f"batch size {batch_size} is not a multiple of group_size {group_size}")
    mask = mask.to(token_returns.dtype)
    sequence_returns = (token_returns[:, 0] * mask[:, 0]).view(-1, group_size)
    group_sums = sequence_returns.sum(dim=1, keepdim=True)
    baselines = ((group_sums - sequence_returns) / (group_size - 1)).reshape(batch_size, 1)
    return (token_returns - baselines) * mask


def reinforce_advantages(token_returns: torch.Tensor, mask: torch.Tensor, baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """REINFORCE with a baseline: A_t = G_t - b (Williams 1992). `baseline` is a scalar, a (B,) per-sequence tensor
    or a tensor broadcastable to (B, T). Zero outside the mask."""
    if isinstance(baseline, torch.Tensor) and baseline.dim() == 1:
        baseline = baseline[:, None]  # (B,) is one baseline per sequence
    return (token_returns - baseline) * mask.to(token_returns.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Losses


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7), as a loss to minimise, masked mean over tokens:

      ratio_t = exp(logp_t - old_logp_t)
      L = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

    Stats (detached): clipfrac = fraction of tokens where the clipped term is the active one (its gradient is 0);
    approx_kl = mean of the k3 estimate of KL(pi_old || pi) from tokens sampled from pi_old.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logp.dtype), mask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss (Huang N+; PPO2 baselines):

      V_clip = V_old + clip(V - V_old, -c, c)
      L = 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)

    Returns (loss, clipfrac), clipfrac = fraction of tokens where the clipped error is the larger one.
    """
    values_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    error_unclipped = (values - returns) ** 2
    error_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(error_unclipped, error_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((error_clipped > error_unclipped).to(values.dtype), mask)
    return loss, clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis: (B, T, V) -> (B, T).

    H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, stable for large logits; -inf logits (banned tokens) add 0.
    """
    log_normaliser = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    # Zero the logits of impossible tokens first: 0 * -inf would be NaN (and NaN gradients through torch.where).
    finite_logits = torch.where(probs > 0, logits, torch.zeros_like(logits))
    return log_normaliser - (probs * finite_logits).sum(dim=-1)


# ----------------------------------------------------------------------------------------------------------------------
# Scores, normalisation, advantages and critic quality


def add_missing_eos_penalty(
    token_scores: torch.Tensor, mask: torch.Tensor, finished: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Subtract `penalty` from the last token's score of every response that did not end with EOS (Huang et al.: a
    truncated response must not be rewarded as if complete). The sequence total drops by `penalty` for any shaping."""
    last = (mask.sum(1).long() - 1).clamp(min=0)
    penalty_at_last = torch.zeros_like(token_scores)
    penalty_at_last[torch.arange(len(last)), last] = penalty * (~finished.bool()).to(token_scores.dtype)
    return token_scores - penalty_at_last * mask


class RunningMoments:
    """Running mean and standard deviation of every value seen (batches merged with Chan et al.'s parallel formula).

    Reward normalisation divides the token scores by the running std of the SEQUENCE rewards. Scale only: a shift has no
    per-token meaning for dense rewards, and a scale keeps the R3HF telescoping sum (and the optimal policy) unchanged.
    """

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        n = values.numel()
        if n == 0:
            return
        batch_mean = values.mean().item()
        batch_m2 = ((values - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    def merged(self, values: torch.Tensor) -> RunningMoments:
        """A copy that has also seen `values` (this one is unchanged: a measurement rollout must not move it)."""
        copy = RunningMoments()
        copy.count, copy.mean, copy.m2 = self.count, self.mean, self.m2
        copy.update(values)
        return copy

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0


def reinforce_baseline(batch_mean: float, ema: float | None, mode: str, decay: float) -> tuple[float, float]:
    """REINFORCE's baseline for a batch whose mean sequence return is `batch_mean`, and the EMA after it.

    mode "batch": the batch mean; "ema": the EMA of past batch means (the batch mean for the first batch). The EMA is
    b <- decay * b + (1 - decay) * batch_mean, started at the first batch mean.
    """
    baseline = batch_mean if mode == "batch" or ema is None else ema
    previous = batch_mean if ema is None else ema
    return baseline, decay * previous + (1 - decay) * batch_mean


def compute_advantages(
    algo: str,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor | None = None,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    group_size: int = 2,
    baseline: float | torch.Tensor = 0.0,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), (B, R), zero outside the mask.

    ppo:       GAE on the critic's values; returns = the value targets (TD(lambda) returns); whitened advantages.
    rloo:      per-token returns G_t minus the mean sequence return of the other samples of the same prompt.
    reinforce: per-token returns G_t minus `baseline` (a scalar, e.g. the batch mean or an EMA of sequence returns).
    For rloo / reinforce `returns` = G_t. Whitening centres and scales the advantages over all response tokens (Huang et
    al.). For rloo / reinforce that matters with dense rewards: G_t - b has a token-dependent mean (with r3hf it is
    R(x, y) - R(x, y<t) - b), and an uncentred negative mean pushes down every sampled token, raising entropy and KL.
    Centring absorbs a scalar REINFORCE baseline; rloo's per-prompt baseline still matters.
    """
    if algo == "ppo":
        if values is None:
            raise ValueError("ppo needs the critic's values")
        advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    elif algo == "rloo":
        returns = reward_to_go(rewards, mask, gamma)
        advantages = rloo_advantages(returns, mask, group_size)
    elif algo == "reinforce":
        returns = reward_to_go(rewards, mask, gamma)
        advantages = reinforce_advantages(returns, mask, baseline)
    else:
        raise UserError(f"unknown algo {algo!r}; expected one of {', '.join(ALGOS)}")
    if whiten and mask.sum() > 1:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns


def explained_variance_moments(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(5,) float64 sums over the masked tokens: count, sum and sum of squares of the targets and of the residuals
    targets - predictions. Sums add across processes; `explained_variance` turns them into the statistic."""
    mask = mask.double()
    targets, residuals = targets.double() * mask, (targets.double() - predictions.double()) * mask
    return torch.stack([mask.sum(), targets.sum(), (targets**2).sum(), residuals.sum(), (residuals**2).sum()])


def explained_variance(moments: torch.Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets) from `explained_variance_moments`: 1 for a perfect critic, 0 for
    one no better than the targets' mean, < 0 for worse; NaN when the targets do not vary."""
    count, target_sum, target_squares, residual_sum, residual_squares = moments.tolist()
    if count < 2:
        return float("nan")
    target_var = target_squares / count - (target_sum / count) ** 2
    residual_var = residual_squares / count - (residual_sum / count) ** 2
    return 1.0 - residual_var / target_var if target_var > 1e-12 else float("nan")
