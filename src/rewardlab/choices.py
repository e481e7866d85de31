"""Every closed set of names a setting takes, declared once: a Literal (the type of the config field, whose --help lists
it and whose value `rewardlab.config.check_choices` checks) and the tuple read from it (what the modules that act on the
names iterate and test membership in).

No imports beyond typing: the command line, config.py and the torch modules all read these.
"""

from __future__ import annotations

from typing import Literal, get_args

# reward-model training
Objective = Literal["preference", "prm"]  # pairs (Bradley-Terry and baselines) | a process reward model on labelled steps
OBJECTIVES: tuple[str, ...] = get_args(Objective)
PRM = "prm"
RewardLoss = Literal["bt", "margin", "label-smooth"]
REWARD_LOSSES: tuple[str, ...] = get_args(RewardLoss)
Regularizer = Literal["none", "sft", "sft-nll", "dpo", "dpo-noref"]
REGULARIZERS: tuple[str, ...] = get_args(Regularizer)
Head = Literal["linear", "mlp"]
HEAD_CHOICES: tuple[str, ...] = get_args(Head)
Aggregate = Literal["mean", "min"]  # an ensemble's score from its members'
AGGREGATES: tuple[str, ...] = get_args(Aggregate)
SelectMetric = Literal["accuracy", "loss"]  # model selection: the validation set's best accuracy, or its lowest loss
SELECT_METRICS: tuple[str, ...] = get_args(SelectMetric)

# data
Truncation = Literal["keep_end", "drop"]  # over-long sequences: drop their oldest tokens, or the whole pair
TRUNCATION_CHOICES: tuple[str, ...] = get_args(Truncation)
PairMode = Literal["all", "best-worst", "best-random"]  # rated listwise data -> pairs
PAIR_MODES: tuple[str, ...] = get_args(PairMode)

# kernels
PackedAttentionKind = Literal["segments", "varlen", "flex"]
PACKED_ATTENTION_KINDS: tuple[str, ...] = get_args(PackedAttentionKind)
PackedAttention = Literal["auto", PackedAttentionKind]
PACKED_ATTENTION_CHOICES: tuple[str, ...] = get_args(PackedAttention)
LogprobKernel = Literal["chunked", "liger"]
LOGPROB_KERNELS: tuple[str, ...] = get_args(LogprobKernel)
LogprobBackend = Literal["auto", LogprobKernel]
LOGPROB_BACKENDS: tuple[str, ...] = get_args(LogprobBackend)

# step rewards (rewardlab.step_scoring): a PRM's score at each step's end, or a sequence RM's r3hf token rewards per step
StepView = Literal["prm", "r3hf"]
StepAggregation = Literal["min", "last", "product", "mean"]  # one score for a response from its step scores
STEP_AGGREGATIONS: tuple[str, ...] = get_args(StepAggregation)
STEP_VIEWS: tuple[str, ...] = get_args(StepView)

# PPO / RLOO / REINFORCE
Algo = Literal["ppo", "rloo", "reinforce"]
ALGOS: tuple[str, ...] = get_args(Algo)
KlPenaltyEstimator = Literal["k1", "k3"]  # the KL penalty's estimators PPO offers (rewardlab.rl.ppo_math has k2 too)
KL_ESTIMATORS: tuple[str, ...] = get_args(KlPenaltyEstimator)
ReinforceBaseline = Literal["batch", "ema"]  # reinforce: the batch mean, or an EMA of past batch means
REINFORCE_BASELINES: tuple[str, ...] = get_args(ReinforceBaseline)
# reward-model: V_t = R(x, y<t), the reward model's prefix score (Huang et al.); a good start for sparse rewards
# potential-offset: the reward-model critic minus the shaping's frozen potential (r3hf: R(x, y<t)), so r3hf starts where
#   sparse starts and PPO on r3hf reproduces sparse PPO with the reward-model critic
# fresh: the reward model's backbone under a small random output layer: V ~ 0 and the backbone learns from the first step
# zero-head: the output layer zeroed: V = 0, and the backbone gets no gradient until the head moves (learns slowly)
CriticInit = Literal["reward-model", "potential-offset", "fresh", "zero-head"]
CRITIC_INITS: tuple[str, ...] = get_args(CriticInit)

# the built-in world (rewardlab.tasks.world.WORLDS holds one spec for each)
WorldVersion = Literal[3, 4]
WORLD_VERSIONS: tuple[int, ...] = get_args(WorldVersion)

# placement
DtypeName = Literal["fp32", "bf16", "fp16"]
DTYPE_NAMES: tuple[str, ...] = get_args(DtypeName)
Dtype = Literal["auto", DtypeName]
DTYPE_CHOICES: tuple[str, ...] = get_args(Dtype)


def listed(choices: tuple, default: object = None) -> str:
    """`a (default) | b | c`: the choices as help texts list them, the default marked."""
    return " | ".join(f"{c} (default)" if c == default else str(c) for c in choices)
