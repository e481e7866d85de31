"""PPO's settings, declared once (the `rewardlab ppo` command and `--config` YAML files map onto these fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rewardlab.choices import (
    ALGOS,
    KL_ESTIMATORS,
    REINFORCE_BASELINES,
    Algo,
    CriticInit,
    KlPenaltyEstimator,
    ReinforceBaseline,
    listed,
)
from rewardlab.config import LoraSpec, RunSpec, TrackingSpec, check_ranges, from_dict, restate, setting
from rewardlab.errors import UserError
from rewardlab.redistribution import (
    DEFAULT_ABC_BETA,
    DEFAULT_BETA_C,
    POTENTIAL_METHODS,
    SHAPINGS,
    check_objective,
    methods_help,
    token_reward_method,
)
from rewardlab.rl.sources import BUILTIN
from rewardlab.tracking import resolve_report_to

FRESH_HEAD_SCALE = 0.01  # `fresh`: output-layer weights ~ N(0, (scale / sqrt(fan_in))^2), i.e. V of order 0.01


@dataclass
class PPOConfig(RunSpec, LoraSpec, TrackingSpec):
    """Everything a PPO / RLOO / REINFORCE run needs; each field declared once with its help and flag."""

    # --help panels of PPO's own fields (the mixins' fields: their classes' panels, Run and Model)
    help_panels: ClassVar[dict[str, tuple[str, ...]]] = {
        "Data": ("policy", "reward_model", "gold", "prompts", "limit"),
        "Algorithm": ("algo", "steps", "batch_size", "minibatch_size", "ppo_epochs", "rloo_k", "reinforce_baseline",
                      "baseline_decay", "lr", "critic_lr", "critic_init", "adam_eps", "max_grad_norm", "gamma", "lam",
                      "clip_range", "value_clip_range", "vf_coef", "whiten_advantages"),
        "Reward": ("reward_shaping", "kl_coef", "kl_estimator", "adaptive_kl", "kl_target", "kl_horizon",
                   "missing_eos_penalty", "normalize_reward", "beta_c", "abc_beta"),
        "Generation": ("max_new_tokens", "temperature", "top_p", "generation_batch_size"),
        "Model": ("lora", "lora_dropout"),
        "Run": ("output_dir", "log_samples", "sample_every", "save_policy"),
        "Evaluation": ("eval_prompts", "eval_limit", "eval_every"),
    }  # fmt: skip

    # models and data
    policy: str = setting(
        BUILTIN, help="'builtin' (default; the world's base policy), 'builtin-steps' (its step policy), hub id or dir."
    )
    reward_model: str | None = setting(None, help="Reward model directory (or training run).")
    reward_shaping: str = setting(  # one of redistribution.SHAPINGS (step: a process reward model's step scores)
        "sparse", help=f"{methods_help(default='sparse', choices=SHAPINGS)}."
    )
    gold: str | None = setting(  # logged, never optimised
        None, help="Gold scorer to log: 'builtin', 'builtin-steps' or a reward model dir."
    )
    prompts: str = setting(BUILTIN, help="Prompt data (file or hub id), or builtin[:SPLIT] or builtin-steps[:SPLIT].")
    limit: int | None = setting(None, min=1, help="Prompts to load (builtin: 1024).")
    output_dir: str = restate(RunSpec, "output_dir", "runs/ppo", flags=("--output",), help="Output directory (default runs/ppo).")
    # algorithm
    algo: Algo = setting("ppo", help=f"{listed(ALGOS, 'ppo')}.")
    steps: int = setting(100, min=0, help="Rollout + update iterations (default 100).")
    batch_size: int = setting(64, min=1, help="Responses per rollout (default 64).")  # per process
    minibatch_size: int = setting(16, min=1, help="Per optimiser step (16).")
    ppo_epochs: int = setting(4, min=1, help="Passes over each rollout (4).")
    rloo_k: int = setting(4, min=2, help="rloo: samples per prompt (4).")  # batch_size must be a multiple
    reinforce_baseline: ReinforceBaseline = setting(  # reinforce: batch mean, or an EMA of past batch means
        "ema", help=f"{listed(REINFORCE_BASELINES, 'ema')}."
    )
    baseline_decay: float = setting(0.9, help="reinforce with the ema baseline: its decay (default 0.9).")
    lr: float = setting(1e-5, help="Policy learning rate (default 1e-5).")
    critic_lr: float = setting(5e-6, help="Critic learning rate (default 5e-6).")
    critic_init: CriticInit = setting(  # see rewardlab.choices.CriticInit and docs/ppo.md
        "reward-model",
        help="reward-model (default: V = the RM's prefix score) | potential-offset (RM minus the shaping's potential: r3hf "
        "then reproduces sparse) | fresh (RM backbone, small random output layer) | zero-head (output layer zeroed).",
    )
    adam_eps: float = setting(1e-5, help="Adam epsilon (default 1e-5).")
    max_grad_norm: float = setting(1.0, help="Gradient clipping norm (default 1.0).")
    gamma: float = setting(1.0, help="Discount (default 1).")
    lam: float = setting(0.95, help="GAE lambda (default 0.95).")
    clip_range: float = setting(0.2, help="PPO ratio clip range (default 0.2).")
    value_clip_range: float = setting(0.2, help="Value clip range (default 0.2).")
    vf_coef: float = setting(  # separate critic + Adam: almost no effect (see the module docstring); critic_lr sets its step
        0.1, help="Value loss coefficient (0.1); the critic is separate, so Adam undoes it: use --critic-lr."
    )
    whiten_advantages: bool = setting(True, help="Centre and scale advantages over the batch (on).")
    # reward
    kl_coef: float = setting(0.05, help="KL coefficient beta (default 0.05; R3HF: 0.02).")  # Huang et al.; R3HF: 0.02
    kl_estimator: KlPenaltyEstimator = setting("k1", help=f"{listed(KL_ESTIMATORS, 'k1')}.")
    adaptive_kl: bool = setting(False, flags=("--adaptive-kl/--fixed-kl",), help="Adaptive KL coefficient.")
    kl_target: float = setting(6.0, help="Adaptive KL target per response (6.0).")  # Ziegler et al. 2019
    kl_horizon: int = setting(10000, help="Adaptive KL horizon in responses (default 10000).")
    missing_eos_penalty: float | None = setting(  # subtracted from the last token's score of responses without EOS
        None, help="Subtracted from the reward of responses without EOS."
    )
    normalize_reward: bool = setting(False, help="Divide token scores by the running reward std.")
    beta_c: float = setting(  # R3HF Eq. 7
        DEFAULT_BETA_C, help=f"mix: weight of r3hf vs sparse (default {DEFAULT_BETA_C:g})."
    )
    abc_beta: float = setting(
        DEFAULT_ABC_BETA, help=f"abc: weight of the attention-distributed part (default {DEFAULT_ABC_BETA:g})."
    )
    # generation
    max_new_tokens: int = setting(32, min=1, help="Default 32.")
    temperature: float = setting(0.7, help="Sampling temperature (default 0.7).")
    top_p: float = setting(1.0, help="Default 1.0 (no nucleus truncation).")
    generation_batch_size: int | None = setting(None, help="Sequences per generate call (default: the whole rollout at once).")
    # LoRA on the policy (the reference is then the policy with adapters disabled); r, alpha, targets: LoraSpec
    lora: bool = restate(LoraSpec, "lora", help="LoRA on the policy; reference = adapters off.")
    lora_dropout: float = restate(LoraSpec, "lora_dropout", 0.0, help="Dropout on the LoRA path (default 0).")
    # bookkeeping (seed, bf16, device, progress: RunSpec; report_to: TrackingSpec)
    log_samples: int = setting(4, help="Generations written to samples.jsonl per logged step (default 4).")
    sample_every: int = setting(10, help="Steps between sample dumps (default 10; step 0 and the last always).")
    save_policy: bool = setting(True, help="Save the trained policy (default on).")
    # held-out evaluation: gold (and proxy, KL) on prompts the policy never trains on, at fixed checkpoints
    eval_prompts: str | None = setting(  # e.g. builtin:test_id; needs a gold scorer
        None, help="Held-out prompts scored by the gold at checkpoints (file, hub id or builtin:SPLIT); default off."
    )
    eval_limit: int = setting(64, min=1, help="Held-out prompts to evaluate (default 64).")
    eval_every: int = setting(10, min=1, help="Steps between held-out evaluations (default 10; step 0 and the last always).")

    def validate(self) -> None:
        """Every setting and the output directory, checked before any model loads (one line on a bad one)."""
        from rewardlab.runtime import check_output_dir

        check_ranges(self)  # and the choice fields (config.check_choices)
        shaping = token_reward_method(self.reward_shaping, "reward_shaping", choices=SHAPINGS)
        if self.algo == "rloo" and (self.rloo_k < 2 or self.batch_size % self.rloo_k):
            raise UserError(f"rloo needs rloo_k >= 2 dividing batch_size, got k={self.rloo_k}, batch={self.batch_size}")
        if self.temperature <= 0:
            raise UserError("temperature must be > 0: PPO needs the sampling distribution's log-probs")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise UserError(f"baseline_decay = {self.baseline_decay} must lie in [0, 1)")
        if self.critic_init == "potential-offset" and not shaping.uses_potential:
            raise UserError(
                f"critic_init = 'potential-offset' needs a potential-based reward_shaping ({', '.join(POTENTIAL_METHODS)}); "
                f"'{self.reward_shaping}' has no state potential"
            )
        if self.eval_prompts is not None and self.gold is None:
            raise UserError("eval_prompts needs a gold scorer to score them: pass --gold")
        resolve_report_to(self.report_to)  # an unknown or uninstalled tracker fails here, before anything loads
        check_output_dir(self.output_dir, overwrite=self.overwrite, inputs=self.input_paths(), flag="--output")
        if self.reward_model is not None:  # a PRM with a sequence shaping, or step with a sequence model: one line here
            from rewardlab.errors import MissingPathError
            from rewardlab.modeling.loader import saved_objective

            try:
                objective = saved_objective(self.reward_model)
            except MissingPathError:  # not here (yet): loading the reward model says so, in one line
                objective = None
            if objective is not None:
                check_objective(shaping, objective)

    def input_paths(self) -> list[str | None]:
        """What the run reads (policy, reward model, gold, prompts): the output directory must lie apart from each."""
        return [self.policy, self.reward_model, self.gold, self.prompts, self.eval_prompts]

    @classmethod
    def from_dict(cls, d: dict) -> PPOConfig:
        return from_dict(cls, d)
