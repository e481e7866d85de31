"""The demo's settings: `DemoConfig` (full and `--quick`), the reward-model variants and the report's row labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardlab.choices import WorldVersion
from rewardlab.config import DEFAULT_ALPHA, VARIANT_SETTINGS, DemoSpec, TrackingSpec, restate

VARIANTS: dict[str, dict] = {
    name: VARIANT_SETTINGS[name] for name in ("vanilla", "margin", "label-smooth", "grm-sft", "grm-dpo", "grm-dpo-noref")
}
# The official GRM code's comparison, reported apart from the main table (which keeps one head for every variant): GRM
# with its MLP head against a BT baseline with a linear head and no dropout, so the head's share of a "GRM gain" shows.
OFFICIAL_PAIRING: dict[str, dict] = {
    "official-grm-sft-mlp": {"loss": "bt", "reg": "sft", "head": "mlp"},
    "official-vanilla-linear-nodropout": {"loss": "bt", "reg": "none", "head": "linear", "head_dropout": 0.0},
}
# Sampling the preference data, training the reward models and the world check run on one torch thread: the matrices
# are tiny, and OpenMP threads on a busy CPU spin-wait (50 reward-model steps: 4.1 s on 1 thread, 90 s on 2, with
# load 3.5 on 2 cores).
SMALL_MODEL_THREADS = 1
STEP_PPO = "process-vs-outcome"  # the process-supervision step's PPO comparison (demo.prm): its name in logs and figures
FROZEN = "frozen-backbone"  # the linear head on frozen base features, fit to convergence (the world check's base probe)
ROW_LABELS = {
    FROZEN: "frozen backbone (linear head fit to convergence)",
    "official-grm-sft-mlp": "extra, official pairing: grm-sft, MLP head",
    "official-vanilla-linear-nodropout": "extra, official pairing: vanilla, linear head, no dropout",
}


def _preferences():
    from rewardlab.tasks import preferences  # lazily: it pulls in torch, and `--help` should not wait for it

    return preferences


@dataclass
class DemoConfig(TrackingSpec):
    """The demo's sizes and settings; `report_to` (TrackingSpec) reaches every reward model and PPO run it trains.

    The restated fields are `rewardlab demo`'s options (declared on rewardlab.config.DemoSpec; the command builds this
    with `make`); the others are the sizes `make` chooses, full or quick."""

    output_dir: str = restate(DemoSpec, "output_dir")
    quick: bool = restate(DemoSpec, "quick")
    seeds: int = restate(DemoSpec, "seeds")  # `make` sets 1 for the quick demo
    sizes: dict[str, int] = field(default_factory=lambda: dict(_preferences().DATA_SIZES))
    test_sizes: dict[str, int] = field(default_factory=lambda: dict(_preferences().TEST_SIZES))
    label_noise: float = 0.1
    world_version: WorldVersion = restate(DemoSpec, "world_version")
    val_size: int = field(default_factory=lambda: _preferences().VAL_SIZE)
    # Reward models: at most rm_epochs, evaluated on val_id every rm_eval_pairs training pairs (at most once an epoch),
    # stopped after rm_patience evaluations without a gain and kept at their best val_id accuracy: each run gets its own
    # length, chosen on ID validation only.
    rm_epochs: float = 8.0
    rm_eval_pairs: int = 1000
    rm_patience: int = 3
    rm_lr: float = 3e-4
    rm_batch_size: int = 32
    official_pairing: bool = True
    # GRM's alpha curve: every GRM variant at each of these (three points of `rewardlab study`'s default grid: the demo's
    # time budget); its headline row keeps the alpha with the best val_id accuracy (`reward_models.choose_alpha`)
    alphas: tuple[float, ...] = (0.01, 0.1, 0.3)
    # the sizes that get the curve (None: every size; the small one by default, where a regulariser has most to give and
    # its cells cost least: the full demo's 1,800 s); the others train the GRM variants at train-rm's alpha
    curve_sizes: tuple[str, ...] | None = ("small",)
    workers: int = restate(DemoSpec, "workers")  # independent runs trained in this many processes at once, 1 thread each
    bon_n: int = 256
    bon_prompts: int = 128
    ppo_steps: int = 60  # comparisons (a) and (b)
    ppo_batch_size: int = 64
    ppo_seeds: int = 3  # comparisons (a) and (b); (c) is a deterministic check and runs seed 0 only
    ppo_check_steps: int = 10  # comparison (c)
    ppo_lr: float = 3e-5
    ppo_kl_coef: float = 0.15  # at 0.05 the policy ran to KL ~2-3 and past the gold-reward peak (over-optimisation)
    rloo_k: int = 4
    # PPO's held-out evaluation (issue 21): gold, proxy and KL on this many of the world's test_id prompts (never trained
    # on), at step 0, every ppo_eval_every steps and at the end of every PPO comparison run
    ppo_eval_prompts: int = 64
    ppo_eval_every: int = 10
    # process supervision (demo.prm): a PRM and an outcome RM per seed on the world's step tasks, as best-of-N selectors
    # among prm_bon_n sampled step solutions (each step wrong w.p. prm_bon_error_rate) for prm_bon_prompts test_id tasks
    prm_train: int = 2000
    prm_val: int = 500
    prm_bon_n: int = 32
    prm_bon_prompts: int = 256
    prm_bon_error_rate: float = 0.3
    # ... on a step policy: the base policy warm-started for step_policy_steps steps on a mix with step tasks (the PRM, the
    # outcome RM and PPO's policy start from it); then PPO with the PRM's step rewards against PPO with the outcome RM's
    # sparse reward, ppo_seeds seeds of step_ppo_steps steps (step answers are twice the world's length: half its batch)
    step_policy_steps: int = 600
    step_ppo_steps: int = 30
    step_ppo_batch_size: int = 32
    progress: bool = restate(DemoSpec, "progress")
    overwrite: bool = restate(DemoSpec, "overwrite")  # replace an earlier demo output at output_dir (never anything else)

    @classmethod
    def make(cls, quick: bool = False, seeds: int | None = None, **kw) -> DemoConfig:
        if quick:
            # The quick demo's budget (300 s from a cold cache on 2 idle cores; 440 s on this machine on 2026-12-03, 146
            # of them pretraining the base policy: a 2-layer one fit in 286 s, but its reward models were near chance
            # out of distribution): reward models stopped 2 evaluations after their best, 12 PPO steps
            cfg = cls(
                quick=True, seeds=1, sizes={"small": 400, "large": 1600}, test_sizes={"test_id": 300, "test_ood": 600},
                val_size=300, rm_eval_pairs=400, rm_patience=2, official_pairing=False,
                bon_n=64, bon_prompts=48, ppo_steps=12, ppo_batch_size=64, ppo_seeds=1, ppo_check_steps=4,
                ppo_eval_prompts=16, ppo_eval_every=4, prm_train=1000, prm_val=200, prm_bon_n=16, prm_bon_prompts=64,
                step_policy_steps=300, step_ppo_steps=12, **kw,
            )  # fmt: skip
        else:
            cfg = cls(**kw)
        if seeds is not None:
            cfg.seeds = seeds
            cfg.ppo_seeds = min(cfg.ppo_seeds, seeds) if quick else max(1, min(seeds, cfg.ppo_seeds))
        return cfg

    def base_policy_config(self):
        """The demo's base policy (`rewardlab.tasks.policy.BasePolicyConfig`, cached under its key)."""
        from rewardlab.tasks.policy import BasePolicyConfig

        return BasePolicyConfig(world_version=self.world_version)

    def alphas_at(self, size: str) -> tuple[float, ...]:
        """The GRM variants' alphas at a training size: the whole curve, or train-rm's default where the curve is not run."""
        if self.curve_sizes is None or size in self.curve_sizes:
            return tuple(self.alphas)
        return (DEFAULT_ALPHA,)
