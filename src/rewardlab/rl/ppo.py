"""PPO (and RLOO / REINFORCE) for language models with token-level rewards, in one readable file.

The recipe is Huang et al. 2024 ("The N+ implementation details of RLHF with PPO"); the token rewards come from
`rewardlab.redistribution`, so `--reward-shaping sparse` is classic RLHF PPO and `r3hf` is R3HF / RED. One iteration:

  rollout (no gradients)
    1. sample B responses (temperature 0.7; up to and including the first EOS)
    2. log pi_old and log pi_ref of the sampled tokens, from logits / temperature (the distribution sampled from); the
       reference is the policy with LoRA adapters disabled, or a frozen copy under full fine-tuning
    3. ONE reward-model forward pass per chunk: R(x, tokens <= t) at every position; token scores s_t =
       redistribute(shaping, ...) on the response tokens; optional fixed penalty on the last token of responses without
       EOS; optional reward normalisation (scale only, see `RunningMoments`)
    4. r_t = s_t - beta * KL_t (per-token KL to the reference, k1 or k3; fixed or adaptive beta)         (R3HF Eq. 8)
    5. ppo: values V_t from the critic, GAE (gamma 1, lambda 0.95) -> advantages and returns
       rloo / reinforce: per-token returns G_t = sum_{k >= t} r_k, minus a leave-one-out / batch / EMA baseline
    6. advantages whitened over the batch's response tokens (all algorithms; `whiten_advantages`)
  update: `ppo_epochs` passes over shuffled minibatches: clipped policy loss + vf_coef * clipped value loss, AdamW.

How dense rewards enter each algorithm. R3HF is potential-based shaping: with gamma = 1, r3hf_t = sparse_t + Phi_{t+1} -
Phi_t with Phi_t = R(x, y<t) (and Phi = 0 after the last token).
- rloo / reinforce use per-token returns G_t (token t is credited with the rewards at and after t). With r3hf, G_t =
  R(x, y) - R(x, y<t): the sparse return minus the prefix score, a per-token baseline (unbiased; it lowers the variance
  only if the reward model's prefix scores track the final reward). A sequence-level return (G_0 for every token: GRPO,
  RLOO on sums) would cancel the redistribution exactly; this module never uses one. For sparse rewards and gamma = 1,
  G_t = G_0 and RLOO / REINFORCE are the usual sequence-level methods.
- ppo: the TD errors of r3hf with a critic V - Phi equal those of sparse with the critic V, for any lambda, so PPO on
  r3hf differs from sparse PPO only through how the critic starts and learns (`critic_init = "potential-offset"` builds
  the offset critic; `tests/test_ppo.py` checks that it reproduces sparse PPO).

Value model: a separate critic initialised from the reward model (its backbone and scalar head, read at every
position; V_t is read at the position before token t, i.e. on the state (x, y<t)), as in Huang et al. Policy and critic
are held in one module (`PolicyAndCritic`) with one optimiser (two learning rates), so accelerate / DeepSpeed see a
single model. The critic has its own parameters, parameter group and gradient clipping, so `vf_coef` only rescales its
gradient, which Adam undoes (up to eps): the critic's step size is set by `critic_lr`.
Dropout is off throughout (models stay in eval mode; gradients flow regardless).

Step k of the logs is measured on the rollout of the policy after k updates: step 0 is the initial policy (KL = 0).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardlab.data.templates import assistant_turn_text
from rewardlab.data.types import Text
from rewardlab.modeling.reward_model import DEFAULT_LORA_TARGETS, RewardModel, position_ids_from_mask
from rewardlab.redistribution import METHODS, POTENTIAL_METHODS, redistribute, shaping_potential
from rewardlab.rl.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    entropy_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    reinforce_advantages,
    reward_to_go,
    rloo_advantages,
    shape_rewards,
    value_loss,
)
from rewardlab.rl.sampling import Sample, left_pad, sample
from rewardlab.rl.scorers import BUILTIN, Scorer
from rewardlab.runtime import NonFiniteError, first_non_finite, resolve_device, resolve_dtype

ALGOS = ("ppo", "rloo", "reinforce")
KL_ESTIMATORS = ("k1", "k3")
REINFORCE_BASELINES = ("batch", "ema")
# reward-model: V_t = R(x, y<t), the reward model's prefix score (Huang et al.); a good start for sparse rewards
# potential-offset: the reward-model critic minus the shaping's frozen potential (r3hf: R(x, y<t)), so r3hf starts where
#   sparse starts and PPO on r3hf reproduces sparse PPO with the reward-model critic
# fresh: the reward model's backbone under a small random output layer: V ~ 0 and the backbone learns from the first step
# zero-head: the output layer zeroed: V = 0, and the backbone gets no gradient until the head moves (learns slowly)
CRITIC_INITS = ("reward-model", "potential-offset", "fresh", "zero-head")
FRESH_HEAD_SCALE = 0.01  # `fresh`: output-layer weights ~ N(0, (scale / sqrt(fan_in))^2), i.e. V of order 0.01


@dataclass
class PPOConfig:
    # models and data
    policy: str = BUILTIN  # `builtin` (the world's base policy), a hub id or a local directory
    reward_model: str | None = None  # a rewardlab reward model directory (or training run)
    reward_shaping: str = "sparse"  # one of redistribution.METHODS
    gold: str | None = None  # `builtin` or a reward model directory: logged, never optimised
    prompts: str = BUILTIN  # data spec, or `builtin[:SPLIT]`
    limit: int | None = None  # prompts to load (builtin: default 1024)
    output_dir: str = "runs/ppo"
    # algorithm
    algo: str = "ppo"
    steps: int = 100  # rollout + update iterations
    batch_size: int = 64  # responses per rollout, per process
    minibatch_size: int = 16  # responses per optimiser step
    ppo_epochs: int = 4
    rloo_k: int = 4  # rloo: samples per prompt (batch_size must be a multiple)
    reinforce_baseline: str = "ema"  # reinforce: batch mean, or an EMA of past batch means
    baseline_decay: float = 0.9
    lr: float = 1e-5
    critic_lr: float = 5e-6
    critic_init: str = "reward-model"  # one of CRITIC_INITS (see there and docs/ppo.md)
    adam_eps: float = 1e-5
    max_grad_norm: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    value_clip_range: float = 0.2
    vf_coef: float = 0.1  # separate critic + Adam: almost no effect (see the module docstring); critic_lr sets its step
    whiten_advantages: bool = True
    # reward
    kl_coef: float = 0.05  # Huang et al.; R3HF reports 0.02
    kl_estimator: str = "k1"
    adaptive_kl: bool = False
    kl_target: float = 6.0  # adaptive: target sequence KL (Ziegler et al. 2019)
    kl_horizon: int = 10000
    missing_eos_penalty: float | None = None  # subtracted from the last token's score of responses without EOS
    normalize_reward: bool = False
    beta_c: float = 1.0  # mix: weight of r3hf vs sparse (R3HF Eq. 7)
    abc_beta: float = 0.8
    # generation
    max_new_tokens: int = 32
    temperature: float = 0.7
    top_p: float = 1.0
    generation_batch_size: int | None = None  # sequences per generate call (None: the whole rollout at once)
    # LoRA on the policy (the reference is then the policy with adapters disabled)
    lora: bool = False
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    # bookkeeping
    seed: int = 0
    log_samples: int = 4  # generations written to samples.jsonl per logging step
    sample_every: int = 10  # steps between sample dumps (step 0 and the last step always)
    bf16: bool | None = None  # None: on when a CUDA GPU supports it
    device: str | None = None  # cpu | cuda (None: cuda when available); several processes: accelerate launch
    save_policy: bool = True
    progress: bool = True

    def validate(self) -> None:
        for name, value, choices in (
            ("algo", self.algo, ALGOS),
            ("reward_shaping", self.reward_shaping, METHODS),
            ("kl_estimator", self.kl_estimator, KL_ESTIMATORS),
            ("reinforce_baseline", self.reinforce_baseline, REINFORCE_BASELINES),
            ("critic_init", self.critic_init, CRITIC_INITS),
        ):
            if value not in choices:
                raise ValueError(f"{name} = '{value}' is not one of {', '.join(choices)}")
        if self.steps < 0 or self.batch_size < 1 or self.minibatch_size < 1 or self.ppo_epochs < 1:
            raise ValueError("steps must be >= 0 and batch_size, minibatch_size, ppo_epochs >= 1")
        if self.algo == "rloo" and (self.rloo_k < 2 or self.batch_size % self.rloo_k):
            raise ValueError(f"rloo needs rloo_k >= 2 dividing batch_size, got k={self.rloo_k}, batch={self.batch_size}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0: PPO needs the sampling distribution's log-probs")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay = {self.baseline_decay} must lie in [0, 1)")
        if self.critic_init == "potential-offset" and self.reward_shaping not in POTENTIAL_METHODS:
            raise ValueError(
                f"critic_init = 'potential-offset' needs a potential-based reward_shaping ({', '.join(POTENTIAL_METHODS)}); "
                f"'{self.reward_shaping}' has no state potential"
            )

    @classmethod
    def from_dict(cls, d: dict) -> PPOConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------------------------------
# Tensors for a batch of samples


@dataclass
class ResponseBatch:
    """prompt (left padded, width P) + response (right padded, width R): response token t sits at column P + t."""

    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    response_ids: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) float: 1 on response tokens, EOS included
    context_width: int  # P

    def to(self, device: torch.device) -> ResponseBatch:
        return ResponseBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.response_ids.to(device),
            self.mask.to(device),
            self.context_width,
        )

    def rows(self, index: torch.Tensor | slice) -> ResponseBatch:
        return ResponseBatch(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_ids[index],
            self.mask[index],
            self.context_width,
        )


def build_response_batch(samples: list[Sample], pad_id: int) -> ResponseBatch:
    prompt_ids, prompt_mask = left_pad([s.prompt_ids for s in samples], pad_id)
    width = max(1, max(len(s.response_ids) for s in samples))
    response_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        response_ids[row, : len(s.response_ids)] = torch.tensor(s.response_ids, dtype=torch.long)
        mask[row, : len(s.response_ids)] = 1
    return ResponseBatch(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, mask], dim=1),
        response_ids=response_ids,
        mask=mask.float(),
        context_width=prompt_ids.shape[1],
    )


def response_logits(model: nn.Module, batch: ResponseBatch, temperature: float) -> torch.Tensor:
    """(B, R, V) logits / temperature that predict the response tokens (the columns P - 1 .. P + R - 2)."""
    width = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids_from_mask(batch.attention_mask),  # as generate() numbers left-padded rows
        use_cache=False,
        logits_to_keep=width + 1,
    )
    return out.logits[:, :-1].float() / temperature


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: (B, R, V), (B, R) -> (B, R)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_values(critic: RewardModel, batch: ResponseBatch) -> torch.Tensor:
    """(B, R) V_t = the critic's head at the position before response token t (state = prompt + y<t)."""
    width = batch.response_ids.shape[1]
    positions = critic(batch.input_ids, batch.attention_mask).position_rewards
    return positions[:, batch.context_width - 1 : batch.context_width - 1 + width].float()


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
        raise ValueError(f"critic_init = '{init}' is not one of {', '.join(CRITIC_INITS)}")
    source = reward_model.members[0] if hasattr(reward_model, "members") else reward_model
    critic = copy.deepcopy(source)
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


# ----------------------------------------------------------------------------------------------------------------------
# Rewards and advantages (pure functions)


def response_token_scores(
    method: str,
    position_rewards: torch.Tensor,
    batch: ResponseBatch,
    *,
    beta_c: float = 1.0,
    abc_beta: float = 0.8,
    attention: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, R) token scores on the response tokens from the reward model's (B, P + R) position rewards."""
    response_start = torch.full((batch.input_ids.shape[0],), batch.context_width, device=position_rewards.device)
    scores = redistribute(
        method,
        position_rewards,
        batch.attention_mask,
        response_start,
        beta_c=beta_c,
        abc_beta=abc_beta,
        attention=attention,
    )
    return scores[:, batch.context_width :] * batch.mask


def response_potential(method: str, position_rewards: torch.Tensor, batch: ResponseBatch, *, beta_c: float = 1.0) -> torch.Tensor:
    """(B, R) the shaping potential Phi_t on the state before each response token (r3hf: R(x, y<t)); see
    `redistribution.shaping_potential`. Read at the columns the critic's V_t is read at."""
    response_start = torch.full((batch.input_ids.shape[0],), batch.context_width, device=position_rewards.device)
    potential = shaping_potential(method, position_rewards, batch.attention_mask, response_start, beta_c=beta_c)
    return potential[:, batch.context_width :] * batch.mask


def closing_token_ids(tokenizer) -> list[int]:
    """Token ids a chat template writes after EOS to close an assistant turn (ChatML: "\n" after <|im_end|>), or [].

    A policy stops at EOS, but the reward model was trained on the template's rendering, which goes on: its reward is
    read after these tokens. `with_closing_tokens` appends them for scoring, `fold_closing_scores` folds them back.
    """
    turn = assistant_turn_text(tokenizer)
    eos = tokenizer.eos_token
    if turn is None or not eos or not turn[1].startswith(eos) or turn[1] == eos:
        return []
    return tokenizer(turn[1][len(eos) :], add_special_tokens=False)["input_ids"]


def with_closing_tokens(batch: ResponseBatch, closing: list[int], rows: torch.Tensor) -> ResponseBatch:
    """`batch` with `closing` appended after the response of each row where `rows` (B,) is True, as the reward model
    saw such turns in training. The response width grows by len(closing); other rows are unchanged."""
    k = len(closing)
    if k == 0 or not bool(rows.any()):
        return batch
    n, width = batch.response_ids.shape
    response_ids = torch.cat([batch.response_ids, batch.response_ids.new_zeros(n, k)], dim=1)
    mask = torch.cat([batch.mask, batch.mask.new_zeros(n, k)], dim=1)
    where = rows.nonzero().squeeze(1)
    columns = batch.mask[where].sum(1).long().unsqueeze(1) + torch.arange(k, device=where.device)  # just past the EOS
    response_ids[where.unsqueeze(1), columns] = torch.tensor(closing, device=response_ids.device)
    mask[where.unsqueeze(1), columns] = 1.0
    context = batch.context_width
    input_ids = torch.cat([batch.input_ids[:, :context], response_ids], dim=1)
    attention_mask = torch.cat([batch.attention_mask[:, :context], mask.to(batch.attention_mask.dtype)], dim=1)
    return ResponseBatch(input_ids, attention_mask, response_ids, mask, context)


def fold_closing_scores(scores: torch.Tensor, mask: torch.Tensor, closing: int) -> torch.Tensor:
    """(B, R + closing) token scores of a `with_closing_tokens` batch -> (B, R): the closing tokens' scores are added to
    the last response token (the EOS the policy chose), so every shaping keeps its sequence total and sparse puts the
    reward of the closed turn on EOS. `mask` (B, R) is the original response mask."""
    width = mask.shape[1]
    if scores.shape[1] == width:
        return scores
    lengths = mask.sum(1).long()
    columns = lengths.unsqueeze(1) + torch.arange(closing, device=scores.device)
    tail = scores.gather(1, columns.clamp(max=scores.shape[1] - 1)).sum(1)  # 0 for rows that were not closed
    folded = scores[:, :width] * mask
    folded[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] += tail
    return folded


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

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0


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
        raise ValueError(f"unknown algo {algo!r}; expected one of {', '.join(ALGOS)}")
    if whiten and mask.sum() > 1:
        advantages = masked_whiten(advantages, mask)
    return advantages, returns


# ----------------------------------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollout:
    prompts: list[Text]  # one per response
    texts: list[str]
    batch: ResponseBatch
    finished: torch.Tensor  # (B,) bool
    logprobs: torch.Tensor  # (B, R) log pi_old
    ref_logprobs: torch.Tensor  # (B, R)
    entropy: torch.Tensor  # (B, R)
    values: torch.Tensor | None  # (B, R) V_t as GAE uses it: the critic's output minus `value_offset`
    sequence_scores: torch.Tensor  # (B,) R(x, y), raw
    token_scores: torch.Tensor  # (B, R) after penalty and normalisation
    kl: torch.Tensor  # (B, R) per-token KL estimate
    rewards: torch.Tensor  # (B, R) token_scores - beta * kl
    advantages: torch.Tensor  # (B, R)
    returns: torch.Tensor  # (B, R)
    gold: torch.Tensor | None = None  # (B,)
    timings: dict[str, float] = field(default_factory=dict)
    value_offset: torch.Tensor | None = None  # (B, R) potential-offset: the frozen Phi_t, in token-score units


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _same_vocabulary(a, b) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


class PPOTrainer:
    """Holds the models, optimiser and state; `rollout()`, `update()` and `train()` are the algorithm.

    Models may be passed in (tests, benchmarks, the demo): `policy` = (model, tokenizer), `reward_model` a loaded
    RewardModel / EnsembleRewardModel, `gold` any Scorer, `prompts` a list; otherwise they come from the config. A
    passed-in policy model is trained in place (LoRA: adapters are injected into it).
    """

    def __init__(
        self,
        cfg: PPOConfig,
        *,
        policy: tuple[nn.Module, Any] | None = None,
        reward_model: nn.Module | None = None,
        gold: Scorer | None = None,
        prompts: list[Text] | None = None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from rewardlab.rl.scorers import resolve_policy, resolve_prompts, resolve_scorer

        cfg.validate()
        self.cfg = cfg
        on_cpu = resolve_device(cfg.device).type == "cpu"
        bf16 = cfg.bf16 if cfg.bf16 is not None else resolve_dtype("auto", "cpu" if on_cpu else None) == torch.bfloat16
        self.accelerator = Accelerator(cpu=on_cpu, mixed_precision="bf16" if bf16 else "no")
        set_seed(cfg.seed)
        device = self.accelerator.device

        # ---- models ----
        if reward_model is None:
            if cfg.reward_model is None:
                raise ValueError("no reward model: pass --reward-model PATH")
            from rewardlab.modeling.reward_model import load_reward_model

            reward_model = load_reward_model(cfg.reward_model, device=device)
        self.reward_model = reward_model.to(device).eval().requires_grad_(False)
        model, self.tokenizer = policy if policy is not None else resolve_policy(cfg.policy, device=device)
        if not _same_vocabulary(self.tokenizer, self.reward_model.tokenizer):
            raise ValueError(
                "the policy and the reward model use different tokenizers; token rewards (and the critic) are read per "
                "policy token, so train the reward model on the policy's tokenizer"
            )
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.closing_ids = closing_token_ids(self.tokenizer)
        model = model.to(device)
        self.reference = None
        if cfg.lora:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)  # reference = this model with adapters disabled
        else:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
            model.requires_grad_(True)
        model.eval()  # no dropout (Huang et al.); gradients flow in eval mode
        critic = None
        if cfg.algo == "ppo":
            critic = make_critic(self.reward_model, cfg.critic_init, seed=cfg.seed).to(device)

        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
        if critic is not None:
            groups.append({"params": [p for p in critic.parameters() if p.requires_grad], "lr": cfg.critic_lr})
        optimizer = torch.optim.AdamW(groups, eps=cfg.adam_eps, weight_decay=0.0)
        self.model, self.optimizer = self.accelerator.prepare(PolicyAndCritic(model, critic), optimizer)

        # ---- reward pieces ----
        self.gold = gold if gold is not None or cfg.gold is None else resolve_scorer(cfg.gold, device=device)
        self.kl_controller = (
            AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.adaptive_kl
            else FixedKLController(cfg.kl_coef)
        )
        self.reward_moments = RunningMoments()
        self.reinforce_baseline: float | None = None

        # ---- prompts: a shuffled cycle, the same on every process; each process takes its own slice ----
        if prompts is None:
            prompts = resolve_prompts(cfg.prompts, limit=cfg.limit, seed=cfg.seed, default_count=1024)
        if not prompts:
            raise ValueError("no prompts")
        self.prompts = list(prompts)
        self._prompt_rng = random.Random(cfg.seed)
        self._prompt_order: list[int] = []
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch shuffling

    # ----- models -----
    @property
    def unwrapped(self) -> PolicyAndCritic:
        return self.accelerator.unwrap_model(self.model)

    @property
    def policy(self) -> nn.Module:
        return self.unwrapped.policy

    @property
    def critic(self) -> RewardModel | None:
        return self.unwrapped.critic

    @property
    def prompts_per_rollout(self) -> int:
        return self.cfg.batch_size // self.cfg.rloo_k if self.cfg.algo == "rloo" else self.cfg.batch_size

    def next_prompts(self) -> list[Text]:
        """This process's prompts for the next rollout (rloo: each is sampled rloo_k times)."""
        per_process = self.prompts_per_rollout
        needed = per_process * self.accelerator.num_processes
        chosen = []
        while len(chosen) < needed:
            if not self._prompt_order:
                self._prompt_order = list(range(len(self.prompts)))
                self._prompt_rng.shuffle(self._prompt_order)
            chosen.append(self._prompt_order.pop())
        mine = chosen[self.accelerator.process_index * per_process : (self.accelerator.process_index + 1) * per_process]
        return [self.prompts[i] for i in mine]

    # ----- rollout -----
    @torch.no_grad()
    def rollout(self, prompts: list[Text], step: int = 0) -> Rollout:
        cfg, accelerator = self.cfg, self.accelerator
        device = accelerator.device
        timings: dict[str, float] = {}

        start = time.perf_counter()
        n = cfg.rloo_k if cfg.algo == "rloo" else 1
        seed = (cfg.seed * 1_000_003 + step) * 1024 + accelerator.process_index
        samples = sample(
            self.policy,
            self.tokenizer,
            prompts,
            n=n,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            batch_size=cfg.generation_batch_size or len(prompts) * n,
            seed=seed,
        )
        timings["generate_seconds"] = time.perf_counter() - start
        batch = build_response_batch(samples.samples, self.pad_id).to(device)
        finished = torch.tensor([s.finished for s in samples.samples], device=device)
        timings["generated_tokens"] = float(batch.mask.sum().item())

        # log pi_old, log pi_ref, entropy, values: chunked forward passes, no gradients
        start = time.perf_counter()
        logprobs, ref_logprobs, entropy, values = [], [], [], []
        for rows in _chunks(len(finished), cfg.minibatch_size):
            chunk = batch.rows(rows)
            with accelerator.autocast():
                logits = response_logits(self.policy, chunk, cfg.temperature)
                logprobs.append(gather_logprobs(logits, chunk.response_ids))
                entropy.append(entropy_from_logits(logits))
                del logits
                if self.reference is not None:
                    ref_logits = response_logits(self.reference, chunk, cfg.temperature)
                else:
                    with self.policy.disable_adapter():
                        ref_logits = response_logits(self.policy, chunk, cfg.temperature)
                ref_logprobs.append(gather_logprobs(ref_logits, chunk.response_ids))
                del ref_logits
                if self.critic is not None:
                    values.append(response_values(self.critic, chunk))
        mask = batch.mask
        logprobs, ref_logprobs = torch.cat(logprobs) * mask, torch.cat(ref_logprobs) * mask
        entropy = torch.cat(entropy) * mask
        value_tensor = torch.cat(values) * mask if values else None
        timings["policy_forward_seconds"] = time.perf_counter() - start

        # reward model: ONE forward pass per chunk gives R(x, tokens <= t) at every position
        start = time.perf_counter()
        sequence_scores, token_scores, potentials = [], [], []
        offset_critic = self.critic is not None and cfg.critic_init == "potential-offset"
        # chat turns that ended at EOS are scored closed, as the template renders them in training (ChatML's "\n")
        chat = torch.tensor([isinstance(p, list) for p in samples.prompts_of_samples()], device=device)
        closed = finished.bool() & chat
        for rows in _chunks(len(finished), cfg.minibatch_size):
            chunk = batch.rows(rows)
            scored = with_closing_tokens(chunk, self.closing_ids, closed[rows])
            with accelerator.autocast():
                out = self.reward_model(scored.input_ids, scored.attention_mask, output_attentions=cfg.reward_shaping == "abc")
            sequence_scores.append(out.sequence_rewards.float())
            if offset_critic:  # Phi_t before each response token: causal, so the closing tokens do not change it
                potential = response_potential(cfg.reward_shaping, out.position_rewards.float(), scored, beta_c=cfg.beta_c)
                potentials.append(potential[:, : chunk.mask.shape[1]] * chunk.mask)
            scores = response_token_scores(
                cfg.reward_shaping,
                out.position_rewards.float(),
                scored,
                beta_c=cfg.beta_c,
                abc_beta=cfg.abc_beta,
                attention=out.attentions,
            )
            token_scores.append(fold_closing_scores(scores, chunk.mask, len(self.closing_ids)))
        sequence_scores, token_scores = torch.cat(sequence_scores), torch.cat(token_scores)
        if cfg.missing_eos_penalty is not None:
            token_scores = add_missing_eos_penalty(token_scores, mask, finished, cfg.missing_eos_penalty)
        value_offset = torch.cat(potentials) if potentials else None
        if cfg.normalize_reward:
            self.reward_moments.update(accelerator.gather(sequence_scores))
            scale = max(self.reward_moments.std, 1e-8)
            token_scores = token_scores / scale
            value_offset = value_offset / scale if value_offset is not None else None  # the potential of the scaled rewards
        if value_offset is not None:
            value_tensor = value_tensor - value_offset  # V - Phi: GAE then sees sparse's TD errors
        timings["reward_seconds"] = time.perf_counter() - start

        # final rewards and advantages
        rewards, kl = shape_rewards(token_scores, logprobs, ref_logprobs, mask, self.kl_controller.value, cfg.kl_estimator)
        baseline: float | torch.Tensor = 0.0
        if cfg.algo == "reinforce":
            batch_mean = accelerator.gather(reward_to_go(rewards, mask, cfg.gamma)[:, 0]).mean().item()
            use_batch = cfg.reinforce_baseline == "batch" or self.reinforce_baseline is None
            baseline = batch_mean if use_batch else self.reinforce_baseline
            previous = batch_mean if self.reinforce_baseline is None else self.reinforce_baseline
            self.reinforce_baseline = cfg.baseline_decay * previous + (1 - cfg.baseline_decay) * batch_mean
        advantages, returns = compute_advantages(
            cfg.algo,
            rewards,
            mask,
            value_tensor,
            gamma=cfg.gamma,
            lam=cfg.lam,
            group_size=cfg.rloo_k,
            baseline=baseline,
            whiten=cfg.whiten_advantages,
        )

        gold = None
        if self.gold is not None:
            start = time.perf_counter()
            gold = torch.tensor(self.gold.score(samples.prompts_of_samples(), samples.texts()), device=device)
            timings["gold_seconds"] = time.perf_counter() - start
        return Rollout(
            prompts=samples.prompts_of_samples(),
            texts=samples.texts(),
            batch=batch,
            finished=finished,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            entropy=entropy,
            values=value_tensor,
            sequence_scores=sequence_scores,
            token_scores=token_scores,
            kl=kl,
            rewards=rewards,
            advantages=advantages,
            returns=returns,
            gold=gold,
            timings=timings,
            value_offset=value_offset,
        )

    # ----- update -----
    def update(self, ro: Rollout) -> dict[str, float]:
        """`ppo_epochs` passes over shuffled minibatches of the rollout; returns mean losses and statistics."""
        cfg, accelerator = self.cfg, self.accelerator
        start = time.perf_counter()
        policy_params = [p for p in self.unwrapped.policy.parameters() if p.requires_grad]
        critic_params = [p for p in self.critic.parameters() if p.requires_grad] if self.critic is not None else []
        stats: dict[str, list[float]] = {}
        size = len(ro.finished)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(size, generator=self.generator).to(ro.logprobs.device)
            for rows in _chunks(size, cfg.minibatch_size):
                index = order[rows]
                mask = ro.batch.mask[index]
                minibatch = ro.batch.rows(index)
                logits, values = self.model(
                    minibatch.input_ids, minibatch.attention_mask, minibatch.response_ids, cfg.temperature
                )
                logp = gather_logprobs(logits, ro.batch.response_ids[index])
                pg_loss, pg_stats = policy_loss(logp, ro.logprobs[index], ro.advantages[index], mask, cfg.clip_range)
                loss = pg_loss
                step_stats = {"policy_loss": pg_loss.detach(), **pg_stats}
                if values is not None:
                    if ro.value_offset is not None:
                        values = values - ro.value_offset[index]
                    vf_loss, vf_clipfrac = value_loss(values, ro.values[index], ro.returns[index], mask, cfg.value_clip_range)
                    loss = loss + cfg.vf_coef * vf_loss
                    step_stats |= {"value_loss": vf_loss.detach(), "value_clipfrac": vf_clipfrac}
                with torch.no_grad():
                    step_stats["update_entropy"] = masked_mean(entropy_from_logits(logits), mask)
                accelerator.backward(loss)
                norms = {}
                for name, params in (("policy grad norm", policy_params), ("critic grad norm", critic_params)):
                    if params:  # inf max_norm measures without clipping
                        norms[name] = accelerator.clip_grad_norm_(params, cfg.max_grad_norm or math.inf)
                problem = first_non_finite({"loss": loss} | {k: v for k, v in norms.items() if v is not None})
                if problem is not None:  # before the optimiser steps with it
                    raise NonFiniteError(problem)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                for key, value in step_stats.items():
                    stats.setdefault(key, []).append(float(value))
        if not all(torch.isfinite(p).all() for p in policy_params + critic_params):  # or sampling would fail next
            raise NonFiniteError("weights non-finite after the update")
        out = {key: sum(v) / len(v) for key, v in stats.items()}
        out["update_seconds"] = time.perf_counter() - start
        return out

    # ----- logging helpers -----
    def _mean(self, values: torch.Tensor) -> float:
        return self.accelerator.gather(values.detach().float().reshape(-1)).mean().item()

    def rollout_stats(self, ro: Rollout) -> dict[str, float]:
        mask = ro.batch.mask
        lengths = mask.sum(1)
        stats = {
            "proxy_reward": self._mean(ro.sequence_scores),
            "score_total": self._mean(ro.token_scores.sum(1)),  # what the policy is trained on (penalty, scale)
            "kl": self._mean(ro.kl.sum(1)),
            "kl_coef": self.kl_controller.value,
            "entropy": self._mean(ro.entropy.sum(1)) / max(self._mean(lengths), 1.0),
            "response_length": self._mean(lengths),
            "eos_rate": self._mean(ro.finished.float()),
            "return_mean": self._mean(ro.returns[:, 0]),
        }
        if ro.values is not None:
            stats["value_mean"] = self._mean(ro.values.sum(1)) / max(self._mean(lengths), 1.0)
            moments = explained_variance_moments(ro.values, ro.returns, mask)
            stats["value_explained_variance"] = explained_variance(self.accelerator.gather(moments).view(-1, 5).sum(0))
        if ro.gold is not None:
            stats["gold_reward"] = self._mean(ro.gold)
        generate = ro.timings.get("generate_seconds", 0.0)
        stats["tokens_per_second"] = ro.timings.get("generated_tokens", 0.0) / generate if generate > 0 else 0.0
        stats |= {k: v for k, v in ro.timings.items() if k.endswith("_seconds")}
        return stats

    def sample_rows(self, ro: Rollout, step: int) -> list[dict]:
        rows = []
        for i in range(min(self.cfg.log_samples, len(ro.texts))):
            row = {
                "step": step,
                "prompt": ro.prompts[i],
                "response": ro.texts[i],
                "finished": bool(ro.finished[i]),
                "proxy_reward": float(ro.sequence_scores[i]),
            }
            if ro.gold is not None:
                row["gold_reward"] = float(ro.gold[i])
            rows.append(row)
        return rows

    # ----- the loop -----
    def train(self) -> dict:
        """Rollout + update for cfg.steps iterations (and a final rollout to measure the last policy); writes
        metrics.jsonl, samples.jsonl, config.json, metrics.json, plots and policy/ under cfg.output_dir."""
        from tqdm.auto import tqdm

        from rewardlab.runtime import JsonlAppender, version, write_json

        cfg, accelerator = self.cfg, self.accelerator
        output_dir = Path(cfg.output_dir)
        is_main = accelerator.is_main_process
        if is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            write_json(
                output_dir / "config.json",
                asdict(cfg)
                | {
                    "num_processes": accelerator.num_processes,
                    "mixed_precision": accelerator.mixed_precision,
                    "num_prompts": len(self.prompts),
                    "rewardlab_version": version(),
                },
            )
        metrics_log = JsonlAppender(output_dir / "metrics.jsonl", enabled=is_main)
        samples_log = JsonlAppender(output_dir / "samples.jsonl", enabled=is_main)
        log: list[dict] = []
        bar = tqdm(range(cfg.steps + 1), desc=f"{cfg.algo} ({cfg.reward_shaping})", disable=not (cfg.progress and is_main))
        start = time.perf_counter()
        for step in bar:
            ro = self.rollout(self.next_prompts(), step)
            record = {"step": step, **self.rollout_stats(ro)}
            if step < cfg.steps:  # the last rollout only measures the final policy
                try:
                    record |= self.update(ro)
                except NonFiniteError as err:
                    raise NonFiniteError(
                        f"step {step}: {err}; training stopped before an optimiser step used it, no policy or "
                        f"metrics.json saved ({output_dir}/metrics.jsonl has the steps before). Try a lower --lr."
                    ) from None
                self.kl_controller.update(record["kl"], cfg.batch_size * accelerator.num_processes)
            record["elapsed_seconds"] = time.perf_counter() - start
            log.append(record)
            metrics_log.write(record)
            if step % max(cfg.sample_every, 1) == 0 or step == cfg.steps:
                for row in self.sample_rows(ro, step) if is_main else ():
                    samples_log.write(row)
            postfix = {"proxy": f"{record['proxy_reward']:.3f}", "kl": f"{record['kl']:.3f}"}
            if "gold_reward" in record:
                postfix["gold"] = f"{record['gold_reward']:.3f}"
            bar.set_postfix(postfix)
        bar.close()

        summary = summarise(log)
        if cfg.save_policy:
            self.save_policy(output_dir / "policy")
        if is_main:
            write_json(output_dir / "metrics.json", summary)
            plot_ppo(log, output_dir)
        accelerator.wait_for_everyone()
        return summary

    def save_policy(self, path: Path) -> None:
        """The trained policy with `save_pretrained` (LoRA: the adapter under adapter/, the merged model at `path`)."""
        accelerator = self.accelerator
        state = accelerator.get_state_dict(self.model)  # gathers ZeRO-3 shards; call on every process
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return
        policy = self.policy
        self.tokenizer.save_pretrained(path)
        if self.cfg.lora:
            policy.save_pretrained(path / "adapter")
            merged = copy.deepcopy(policy).merge_and_unload()
            merged.save_pretrained(path)
        else:
            policy_state = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
            policy.save_pretrained(path, state_dict=policy_state)


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


def summarise(log: list[dict]) -> dict:
    """First and last records, and the change in proxy / gold reward and KL between them."""
    if not log:
        return {"steps": 0}
    first, last = log[0], log[-1]
    summary: dict[str, Any] = {"steps": last["step"], "initial": first, "final": last}
    for key in ("proxy_reward", "gold_reward", "kl"):
        if key in first and key in last:
            summary[f"{key}_change"] = last[key] - first[key]
    return summary


def moving_average(values: list[float], window: int = 5) -> list[float]:
    """Trailing mean over up to `window` points (rollout statistics are noisy; the plots show both)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i - max(0, i - window + 1) + 1) for i in range(len(values))]


def plot_ppo(log: list[dict], output_dir: Path) -> None:
    """reward_vs_step.png (proxy, gold, KL vs step: raw and a 5-step moving average) and, with a gold scorer,
    gold_vs_kl.png (gold and proxy vs KL, points coloured by step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    panels = [("proxy_reward", "proxy reward", "tab:blue"), ("gold_reward", "gold reward", "tab:orange")]
    panels = [p for p in panels if p[0] in log[0]] + [("kl", "KL(policy || reference) per response", "tab:red")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title, colour) in zip(axes, panels, strict=True):
        values = [r[key] for r in log]
        ax.plot(steps, values, color=colour, alpha=0.3, linewidth=1)
        ax.plot(steps, moving_average(values), color=colour, linewidth=2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(output_dir / "reward_vs_step.png", dpi=110)
    plt.close(fig)
    if "gold_reward" not in log[0]:
        return
    kl = [r["kl"] for r in log]
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    points = ax.scatter(kl, [r["gold_reward"] for r in log], c=steps, cmap="viridis", s=14, label="gold")
    ax.plot(moving_average(kl), moving_average([r["gold_reward"] for r in log]), "-", color="black", linewidth=1.5)
    ax.set_xlabel("KL(policy || reference) per response")
    ax.set_ylabel("gold reward (solid: 5-step moving average)")
    proxy_ax = ax.twinx()
    proxy_ax.plot(moving_average(kl), moving_average([r["proxy_reward"] for r in log]), "--", color="grey")
    proxy_ax.set_ylabel("proxy reward (dashed, moving average)", color="grey")
    fig.colorbar(points, ax=proxy_ax, label="step", pad=0.15)
    ax.set_title("reward vs KL")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(output_dir / "gold_vs_kl.png", dpi=110)
    plt.close(fig)


def train_ppo(cfg: PPOConfig, **components: Any) -> dict:
    """Run PPO / RLOO / REINFORCE as configured; returns the summary (also in metrics.json). `components` are passed
    to `PPOTrainer` (policy, reward_model, gold, prompts) to use already-loaded models."""
    return PPOTrainer(cfg, **components).train()
