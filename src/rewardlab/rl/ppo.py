"""PPO (and RLOO / REINFORCE) for language models with token-level rewards, in one readable file.

The recipe is Huang et al. 2024 ("The N+ implementation details of RLHF with PPO"); the token rewards come from
`rewardlab.redistribution`, so `--reward-shaping sparse` is classic RLHF PPO and `r3hf` is R3HF / RED. One iteration:

  rollout (no gradients)
    1. sample B responses (temperature 0.7; up to and including the first EOS)
    2. log pi_old and log pi_ref of the sampled tokens, from logits / temperature (the distribution sampled from); the
       reference is the policy with LoRA adapters disabled, or a frozen copy under full fine-tuning
    3. ONE reward-model forward pass per chunk (the scoring service's `forward_padded`): R(x, tokens <= t) at every
       position; token scores s_t = redistribute(shaping, ...) on the response tokens; optional fixed penalty on the
       last token of responses without EOS; optional reward normalisation (scale only, see `RunningMoments`)
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

Held-out evaluation (`eval_prompts`, off by default): at step 0, every `eval_every` steps and after the last update, the
policy answers `eval_limit` held-out prompts (one sample each, at the training temperature, from a generator seeded with
EVAL_SEED: the same random numbers at every checkpoint and in every run, whatever the run's seed), and metrics.jsonl gets
a row {"kind": "eval", "step", "gold_reward", "proxy_reward", "kl", "kl_sampled", ...}: the gold, the reward model's
score and the KL to the reference on prompts the policy never trains on: `kl` sums the exact KL of the full next-token
distributions over the response's positions (never negative, no sampling noise over the vocabulary: the axis for
comparing runs at matched KL on a few prompts), `kl_sampled` the training estimator on the sampled tokens. Training rows
carry no "kind". The evaluation leaves the training's random state alone (generation seeds its own generator).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rewardlab.data.templates import closing_ids_after_eos
from rewardlab.data.types import Text
from rewardlab.errors import UserError
from rewardlab.generation import PromptCycle, SampleBatch, sample
from rewardlab.masks import fold_closing_scores
from rewardlab.modeling.reward_model import RewardModel
from rewardlab.modeling.service import ScoringService, TokenRewardSettings
from rewardlab.progress import progress
from rewardlab.redistribution import SHAPINGS, check_objective, token_reward_method
from rewardlab.rl.models import PolicyAndCritic, make_critic, trainable_policy
from rewardlab.rl.ppo_config import PPOConfig
from rewardlab.rl.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    add_missing_eos_penalty,
    compute_advantages,
    entropy_from_logits,
    exact_kl_per_token,
    kl_per_token,
    masked_mean,
    policy_loss,
    reinforce_baseline,
    reward_to_go,
    shape_rewards,
    value_loss,
)
from rewardlab.rl.ppo_report import plot_ppo, rollout_stats, sample_rows, save_policy, summarise
from rewardlab.rl.rollout import (
    ResponseBatch,
    Rollout,
    build_response_batch,
    gather_logprobs,
    response_logits,
    response_potential,
    response_step_scores,
    response_values,
    separator_token_id,
    with_closing_tokens,
)
from rewardlab.rl.scorers import Scorer
from rewardlab.runtime import (
    NonFiniteError,
    claim_output_dir,
    first_non_finite,
    resolve_device,
    resolve_dtype,
    seal_output_dir,
)
from rewardlab.tracking import finish_tracking, resolve_report_to, start_tracking, tracker_scalars

EVAL_SEED = 20_240_917  # held-out evaluation samples with this seed in every run and at every checkpoint


def eval_steps(steps: int, every: int) -> list[int]:
    """The checkpoints of the held-out evaluation: 0, every `every` steps, and the last step (`steps`)."""
    return sorted(set(range(0, steps + 1, max(every, 1))) | {steps})


def _prompt_key(prompt: Text) -> str:
    import json

    return json.dumps(prompt, sort_keys=True)


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

        from rewardlab.rl.scorers import resolve_scorer
        from rewardlab.rl.sources import resolve_prompts

        cfg.validate()  # the output directory too: checked here, claimed when the run starts writing
        self.cfg = cfg
        on_cpu = resolve_device(cfg.device).type == "cpu"
        bf16 = cfg.bf16 if cfg.bf16 is not None else resolve_dtype("auto", "cpu" if on_cpu else None) == torch.bfloat16
        self.accelerator = Accelerator(
            cpu=on_cpu,
            mixed_precision="bf16" if bf16 else "no",
            log_with=resolve_report_to(cfg.report_to) or None,
            project_dir=cfg.output_dir,
        )
        set_seed(cfg.seed)
        device = self.accelerator.device

        model, critic = self._build_models(policy, reward_model, device)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
        if critic is not None:
            groups.append({"params": [p for p in critic.parameters() if p.requires_grad], "lr": cfg.critic_lr})
        optimizer = torch.optim.AdamW(groups, eps=cfg.adam_eps, weight_decay=0.0)
        self.model, self.optimizer = self.accelerator.prepare(PolicyAndCritic(model, critic), optimizer)

        # ---- reward pieces and the state training moves (see `commit`) ----
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
            raise UserError("no prompts")
        self.prompts = list(prompts)
        self.prompt_cycle = PromptCycle(self.prompts, cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # minibatch shuffling
        # held-out evaluation prompts: the same ones in every run (seed 0), whatever the training seed
        self.eval_prompts: list[Text] = []
        if cfg.eval_prompts is not None:
            if self.gold is None:
                raise UserError("eval_prompts needs a gold scorer (gold)")
            self.eval_prompts = list(resolve_prompts(cfg.eval_prompts, limit=cfg.eval_limit, seed=0, default_count=64))
            if not self.eval_prompts:
                raise UserError(f"no evaluation prompts in {cfg.eval_prompts}")
        training = {_prompt_key(p) for p in self.prompts}
        self.eval_prompts_in_training = sum(_prompt_key(p) in training for p in self.eval_prompts)

    def _build_models(self, policy, reward_model, device) -> tuple[nn.Module, RewardModel | None]:
        """The frozen reward model, the trainable policy (LoRA or full; its reference) and the critic."""
        from rewardlab.rl.sources import resolve_policy

        cfg = self.cfg
        if reward_model is None:
            if cfg.reward_model is None:
                raise UserError("no reward model: pass --reward-model PATH")
            from rewardlab.modeling.loader import load_reward_model

            reward_model = load_reward_model(cfg.reward_model, device=device)
        self.reward_model = reward_model.to(device).eval().requires_grad_(False)
        shaping = token_reward_method(cfg.reward_shaping, "reward_shaping", choices=SHAPINGS)
        check_objective(shaping, getattr(getattr(reward_model, "config", None), "objective", "preference"))
        # the reward pass: one padded forward per chunk (as PPO always ran it; the shaping is read from cfg per pass)
        self.reward_scoring = ScoringService(self.reward_model, batch_size=cfg.minibatch_size, packed=False)
        model, self.tokenizer = policy if policy is not None else resolve_policy(cfg.policy, device=device)
        self.separator_id = separator_token_id(self.tokenizer) if shaping.needs_step_ends else None
        if not _same_vocabulary(self.tokenizer, self.reward_model.tokenizer):
            raise UserError(
                "the policy and the reward model use different tokenizers; token rewards (and the critic) are read per "
                "policy token, so train the reward model on the policy's tokenizer"
            )
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.closing_ids = closing_ids_after_eos(self.tokenizer)
        model, self.reference = trainable_policy(model.to(device), cfg)
        critic = make_critic(self.reward_model, cfg.critic_init, seed=cfg.seed).to(device) if cfg.algo == "ppo" else None
        return model, critic

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
        return self.prompt_cycle.take(self.prompts_per_rollout, self.accelerator.process_index, self.accelerator.num_processes)

    # ----- rollout -----
    @torch.no_grad()
    def rollout(self, prompts: list[Text], step: int = 0) -> Rollout:
        """Steps 1-6 of the module docstring for `prompts`. Reads the trainer's state and changes none of it: the state
        it would move (reward normaliser, REINFORCE's EMA baseline) comes back in the Rollout for `commit`."""
        cfg, accelerator = self.cfg, self.accelerator
        timings: dict[str, float] = {}

        start = time.perf_counter()
        samples, batch, finished = self._generate(prompts, step)
        timings["generate_seconds"] = time.perf_counter() - start
        timings["generated_tokens"] = float(batch.mask.sum().item())

        start = time.perf_counter()
        logprobs, ref_logprobs, entropy, values = self._policy_pass(batch)
        timings["policy_forward_seconds"] = time.perf_counter() - start

        start = time.perf_counter()
        sequence_scores, token_scores, value_offset = self._reward_pass(batch, samples, finished)
        mask = batch.mask
        if cfg.missing_eos_penalty is not None:
            token_scores = add_missing_eos_penalty(token_scores, mask, finished, cfg.missing_eos_penalty)
        moments = None
        if cfg.normalize_reward:
            moments = self.reward_moments.merged(accelerator.gather(sequence_scores))
            scale = max(moments.std, 1e-8)
            token_scores = token_scores / scale
            value_offset = value_offset / scale if value_offset is not None else None  # the potential of the scaled rewards
        if value_offset is not None:
            values = values - value_offset  # V - Phi: GAE then sees sparse's TD errors
        timings["reward_seconds"] = time.perf_counter() - start

        # final rewards and advantages
        rewards, kl = shape_rewards(token_scores, logprobs, ref_logprobs, mask, self.kl_controller.value, cfg.kl_estimator)
        baseline, next_baseline = self._reinforce_baseline(rewards, mask)
        advantages, returns = compute_advantages(
            cfg.algo,
            rewards,
            mask,
            values,
            gamma=cfg.gamma,
            lam=cfg.lam,
            group_size=cfg.rloo_k,
            baseline=baseline,
            whiten=cfg.whiten_advantages,
        )

        gold = None
        if self.gold is not None:
            start = time.perf_counter()
            gold = torch.tensor(self.gold.score(samples.prompts_of_samples(), samples.texts()), device=batch.mask.device)
            timings["gold_seconds"] = time.perf_counter() - start
        return Rollout(
            prompts=samples.prompts_of_samples(),
            texts=samples.texts(),
            batch=batch,
            finished=finished,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            entropy=entropy,
            values=values,
            sequence_scores=sequence_scores,
            token_scores=token_scores,
            kl=kl,
            rewards=rewards,
            advantages=advantages,
            returns=returns,
            gold=gold,
            timings=timings,
            value_offset=value_offset,
            reward_moments=moments,
            reinforce_baseline=next_baseline,
        )

    def commit(self, ro: Rollout) -> None:
        """Adopt the training state a rollout computed (called once per training rollout, before its update)."""
        if ro.reward_moments is not None:
            self.reward_moments = ro.reward_moments
        if ro.reinforce_baseline is not None:
            self.reinforce_baseline = ro.reinforce_baseline

    def _generate(self, prompts: list[Text], step: int) -> tuple[SampleBatch, ResponseBatch, torch.Tensor]:
        """1. Sample the responses (rloo: rloo_k per prompt), seeded per step and process."""
        cfg, accelerator = self.cfg, self.accelerator
        n = cfg.rloo_k if cfg.algo == "rloo" else 1
        samples = sample(
            self.policy,
            self.tokenizer,
            prompts,
            n=n,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            batch_size=cfg.generation_batch_size or len(prompts) * n,
            seed=(cfg.seed * 1_000_003 + step) * 1024 + accelerator.process_index,
        )
        batch = build_response_batch(samples.samples, self.pad_id).to(accelerator.device)
        finished = torch.tensor([s.finished for s in samples.samples], device=accelerator.device)
        return samples, batch, finished

    def _policy_pass(self, batch: ResponseBatch):
        """2. log pi_old, log pi_ref, entropy and the critic's values, in chunked forward passes (no gradients)."""
        cfg, accelerator = self.cfg, self.accelerator
        logprobs, ref_logprobs, entropy, values = [], [], [], []
        for rows in _chunks(batch.mask.shape[0], cfg.minibatch_size):
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
        value_tensor = torch.cat(values) * mask if values else None
        return torch.cat(logprobs) * mask, torch.cat(ref_logprobs) * mask, torch.cat(entropy) * mask, value_tensor

    def _reward_pass(self, batch: ResponseBatch, samples: SampleBatch, finished: torch.Tensor):
        """3. ONE reward-model forward pass per chunk gives R(x, tokens <= t) at every position: the sequence scores, the
        token scores of the shaping and (potential-offset) the frozen potential Phi_t."""
        cfg = self.cfg
        sequence_scores, token_scores, potentials = [], [], []
        offset_critic = self.critic is not None and cfg.critic_init == "potential-offset"
        # chat turns that ended at EOS are scored closed, as the template renders them in training (ChatML's "\n")
        chat = torch.tensor([isinstance(p, list) for p in samples.prompts_of_samples()], device=finished.device)
        closed = finished.bool() & chat
        # a sequence reward model's shaping (the service's methods); `step` reads a PRM below
        shaping = TokenRewardSettings(cfg.reward_shaping, cfg.beta_c, cfg.abc_beta) if self.separator_id is None else None
        for rows in _chunks(len(finished), cfg.minibatch_size):
            chunk = batch.rows(rows)
            if self.separator_id is not None:  # step: a PRM's step scores at each step's end; the return is their sum
                with self.accelerator.autocast():
                    scores = response_step_scores(self.reward_model, chunk, finished[rows], self.tokenizer, self.separator_id)
                sequence_scores.append(scores[0])
                token_scores.append(scores[1])
                continue
            scored = with_closing_tokens(chunk, self.closing_ids, closed[rows])
            out = self.reward_scoring.forward_padded(
                scored.input_ids, scored.attention_mask, scored.response_start(), shaping, autocast=self.accelerator.autocast
            )
            sequence_scores.append(out.rewards)
            if offset_critic:  # Phi_t before each response token: causal, so the closing tokens do not change it
                potential = response_potential(cfg.reward_shaping, out.position_rewards, scored, beta_c=cfg.beta_c)
                potentials.append(potential[:, : chunk.mask.shape[1]] * chunk.mask)
            scores = out.token_rewards[:, scored.context_width :] * scored.mask  # the shaping's, on the response tokens
            token_scores.append(fold_closing_scores(scores, chunk.mask, len(self.closing_ids)))
        value_offset = torch.cat(potentials) if potentials else None
        return torch.cat(sequence_scores), torch.cat(token_scores), value_offset

    def _reinforce_baseline(self, rewards: torch.Tensor, mask: torch.Tensor) -> tuple[float, float | None]:
        """REINFORCE's baseline for this batch (the batch mean of the returns, or an EMA of past batch means) and the EMA
        after this batch; (0, None) for the other algorithms."""
        cfg = self.cfg
        if cfg.algo != "reinforce":
            return 0.0, None
        batch_mean = self.accelerator.gather(reward_to_go(rewards, mask, cfg.gamma)[:, 0]).mean().item()
        return reinforce_baseline(batch_mean, self.reinforce_baseline, cfg.reinforce_baseline, cfg.baseline_decay)

    # ----- held-out evaluation -----
    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """The eval row for the current policy on the held-out prompts (see the module docstring); moves no training
        state. Each process answers its share of the prompts; the means are over all of them."""
        cfg, accelerator = self.cfg, self.accelerator
        start = time.perf_counter()
        prompts = self.eval_prompts[accelerator.process_index :: accelerator.num_processes]
        samples = sample(
            self.policy,
            self.tokenizer,
            prompts,
            n=1,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            batch_size=cfg.generation_batch_size or len(prompts),
            seed=EVAL_SEED * 1024 + accelerator.process_index,
        )
        batch = build_response_batch(samples.samples, self.pad_id).to(accelerator.device)
        finished = torch.tensor([s.finished for s in samples.samples], device=accelerator.device)
        exact, sampled = [], []
        for rows in _chunks(batch.mask.shape[0], cfg.minibatch_size):
            chunk = batch.rows(rows)
            with accelerator.autocast():
                logits = response_logits(self.policy, chunk, cfg.temperature)
                if self.reference is not None:
                    ref_logits = response_logits(self.reference, chunk, cfg.temperature)
                else:
                    with self.policy.disable_adapter():
                        ref_logits = response_logits(self.policy, chunk, cfg.temperature)
            exact.append((exact_kl_per_token(logits, ref_logits) * chunk.mask).sum(1))
            logp, ref_logp = gather_logprobs(logits, chunk.response_ids), gather_logprobs(ref_logits, chunk.response_ids)
            sampled.append((kl_per_token(logp, ref_logp, cfg.kl_estimator) * chunk.mask).sum(1))
            del logits, ref_logits
        sequence_scores, _, _ = self._reward_pass(batch, samples, finished)
        kl, kl_sampled = torch.cat(exact), torch.cat(sampled)
        gold = torch.tensor(self.gold.score(samples.prompts_of_samples(), samples.texts()), device=batch.mask.device)
        lengths = batch.mask.sum(1).float()
        row = {"kind": "eval", "step": step, "n_prompts": len(self.eval_prompts)}
        for key, values in (
            ("gold_reward", gold),
            ("proxy_reward", sequence_scores),
            ("kl", kl),
            ("kl_sampled", kl_sampled),
            ("response_length", lengths),
        ):
            row[key] = self._mean(values)
        row["eos_fraction"] = self._mean(finished.float())
        row["eval_seconds"] = time.perf_counter() - start
        return row

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
                norms = {k: v for k, v in norms.items() if v is not None}  # DeepSpeed clips inside its step
                problem = first_non_finite({"loss": loss} | norms)
                if problem is not None:  # before the optimiser steps with it
                    raise NonFiniteError(problem)
                step_stats |= {name.replace(" ", "_"): norm for name, norm in norms.items()}  # before clipping
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
        """The step's log record (means over every process's responses)."""
        return rollout_stats(ro, self._mean, self.accelerator.gather, self.kl_controller.value)

    # ----- the loop -----
    def train(self) -> dict:
        """Rollout + update for cfg.steps iterations (and a final rollout to measure the last policy); writes
        metrics.jsonl, samples.jsonl, config.json, metrics.json, plots and policy/ under cfg.output_dir, and reports each
        step's record to the trackers of `report_to`."""
        from rewardlab.runtime import version, write_json

        cfg, accelerator = self.cfg, self.accelerator
        output_dir = Path(cfg.output_dir)
        is_main = accelerator.is_main_process
        resolved = asdict(cfg) | {
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "num_prompts": len(self.prompts),
            "num_eval_prompts": len(self.eval_prompts),
            "eval_prompts_in_training": self.eval_prompts_in_training,
            "rewardlab_version": version(),
        }
        if is_main:
            claim_output_dir(output_dir, "ppo", overwrite=cfg.overwrite, inputs=cfg.input_paths(), flag="--output")
            write_json(output_dir / "config.json", resolved)
        start_tracking(accelerator, resolved, output_dir)  # the trackers of --report-to (none: nothing)
        try:
            summary = self._train_steps(output_dir)
        finally:
            finish_tracking(accelerator)
        return summary

    def _train_steps(self, output_dir: Path) -> dict:
        """The loop of `train`: every step's record goes to metrics.jsonl and, as the same numbers, to the trackers."""
        from rewardlab.runtime import JsonlAppender, write_json

        cfg, accelerator = self.cfg, self.accelerator
        is_main = accelerator.is_main_process
        metrics_log = JsonlAppender(output_dir / "metrics.jsonl", enabled=is_main)
        samples_log = JsonlAppender(output_dir / "samples.jsonl", enabled=is_main)
        log: list[dict] = []
        evals: list[dict] = []
        checkpoints = set(eval_steps(cfg.steps, cfg.eval_every)) if self.eval_prompts else set()
        bar = progress(range(cfg.steps + 1), desc=f"{cfg.algo} ({cfg.reward_shaping})", enabled=cfg.progress and is_main)
        start = time.perf_counter()
        for step in bar:
            if step in checkpoints:  # the policy after `step` updates, before this step's rollout
                row = self.evaluate(step)
                evals.append(row)
                metrics_log.write(row)
                accelerator.log(tracker_scalars(row, "eval/"), step=step)
            ro = self.rollout(self.next_prompts(), step)
            self.commit(ro)
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
            accelerator.log(tracker_scalars(record), step=step)
            if step % max(cfg.sample_every, 1) == 0 or step == cfg.steps:
                for row in sample_rows(ro, step, cfg.log_samples) if is_main else ():
                    samples_log.write(row)
            postfix = {"proxy": f"{record['proxy_reward']:.3f}", "kl": f"{record['kl']:.3f}"}
            if "gold_reward" in record:
                postfix["gold"] = f"{record['gold_reward']:.3f}"
            bar.set_postfix(postfix)
        bar.close()

        summary = summarise(log)
        if evals:
            summary["eval"] = evals
        if cfg.save_policy:
            self.save_policy(output_dir / "policy")
        if is_main:
            write_json(output_dir / "metrics.json", summary)
            plot_ppo(log, output_dir)
            seal_output_dir(output_dir)
        accelerator.wait_for_everyone()
        return summary

    def save_policy(self, path: Path) -> None:
        """The trained policy with `save_pretrained` (LoRA: the adapter under adapter/, the merged model at `path`)."""
        save_policy(self.accelerator, self.model, self.policy, self.tokenizer, self.cfg.lora, path)


def train_ppo(cfg: PPOConfig, **components: Any) -> dict:
    """Run PPO / RLOO / REINFORCE as configured; returns the summary (also in metrics.json). `components` are passed
    to `PPOTrainer` (policy, reward_model, gold, prompts) to use already-loaded models."""
    return PPOTrainer(cfg, **components).train()
