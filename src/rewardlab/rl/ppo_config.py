"""PPO's settings, declared once (the `rewardlab ppo` command and `--config` YAML files map onto these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardlab.modeling.reward_model import DEFAULT_LORA_TARGETS
from rewardlab.redistribution import METHODS, POTENTIAL_METHODS
from rewardlab.rl.ppo_math import ALGOS
from rewardlab.rl.scorers import BUILTIN

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
