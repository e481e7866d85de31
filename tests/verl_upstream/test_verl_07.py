"""verl 0.7 (tested: 0.7.0, the last release with the legacy reward-manager path; it needs transformers 4). Both paths,
each loaded by verl's own loaders from the configuration lines in docs/integrations.md:
- legacy (`reward_model.use_reward_loop=False`): verl's load_reward_manager builds rewardlab's TokenRewardManager, whose
  (B, L) token rewards become token_level_scores;
- the reward loop (0.7's default): verl's RewardLoopWorker builds rewardlab's TokenRewardLoopManager, and rewardlab's
  agent-loop workers put the token rewards into rm_scores.
verl's GAE runs on what comes out."""

from __future__ import annotations

import asyncio

import pytest
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopWorkerBase
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo.core_algos import compute_gae_advantage_return
from verl.trainer.ppo.reward import compute_reward, load_reward_manager
from verl.utils import hf_tokenizer
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.import_utils import load_class_from_fqn
from verl_fixtures import (
    compose_verl_config,
    documented_overrides,
    gae_by_loop,
    internal_outputs,
    trainer_batch,
)

from rewardlab.integrations.verl import TokenRewardManager
from rewardlab.integrations.verl_reward_loop import (
    AGENT_LOOP_MANAGER,
    TOKEN_REWARDS_KEY,
    TokenRewardAgentLoopManager,
    TokenRewardAgentLoopWorker,
    TokenRewardLoopManager,
)

pytestmark = pytest.mark.usefixtures("one_thread")
LocalRewardLoopWorker = RewardLoopWorker.__ray_actor_class__  # verl 0.7 declares it @ray.remote; the class itself


def user_settings(rm_dir) -> list[str]:  # what every user sets anyway: the policy and the rollout engine
    return [f"actor_rollout_ref.model.path={rm_dir}", "actor_rollout_ref.rollout.name=vllm"]


def config_for(rm_dir, marker: str, drop: str | None = None):
    lines = documented_overrides(marker, **{"/path/to/rm": str(rm_dir)})
    return compose_verl_config([line for line in lines if drop is None or drop not in line] + user_settings(rm_dir))


def test_the_documented_lines_make_valid_verl_configs(rm_dir) -> None:
    import transformers

    assert transformers.__version__.startswith("4.")  # verl 0.7 imports AutoModelForVision2Seq, gone in transformers 5
    legacy = config_for(rm_dir, "0.7 legacy")
    assert legacy.reward_model.use_reward_loop is False and legacy.reward_manager.source == "importlib"
    assert legacy.reward_model.reward_kwargs.reward_model == str(rm_dir)
    assert legacy.algorithm.adv_estimator == "gae" and legacy.algorithm.lam < 1 and legacy.algorithm.use_kl_in_reward
    loop = config_for(rm_dir, "0.7 loop")
    assert loop.reward_model.use_reward_loop is True and loop.reward_model.reward_loop_source == "importlib"
    rollout = omega_conf_to_dataclass(loop.actor_rollout_ref.rollout)
    manager_cls = load_class_from_fqn(rollout.agent.agent_loop_manager_class, "AgentLoopManager")  # verl's loader
    assert manager_cls is TokenRewardAgentLoopManager and issubclass(manager_cls, AgentLoopManager)
    assert rollout.agent.agent_loop_manager_class == AGENT_LOOP_MANAGER
    assert manager_cls.agent_loop_workers_class.__ray_actor_class__ is TokenRewardAgentLoopWorker
    assert issubclass(TokenRewardAgentLoopWorker, AgentLoopWorkerBase)


def test_legacy_path_token_rewards_become_the_reward_tensor_and_verl_gae_uses_them(rm_dir, expected, encoded) -> None:
    config = config_for(rm_dir, "0.7 legacy")
    tokenizer = hf_tokenizer(str(rm_dir))
    # As verl's TaskRunner does: a training and a validation manager, from the config alone.
    reward_kwargs = config.reward_model.get("reward_kwargs", {})
    reward_fn = load_reward_manager(config, tokenizer, num_examine=0, **reward_kwargs)
    val_reward_fn = load_reward_manager(config, tokenizer, num_examine=1, **reward_kwargs)
    assert type(reward_fn) is TokenRewardManager and type(val_reward_fn) is TokenRewardManager

    batch = trainer_batch(encoded, tool_spans=[(1, 3, 7)])
    rewards, extra = compute_reward(batch, reward_fn)  # verl's own call site
    assert reward_fn.scorer.rm is val_reward_fn.scorer.rm  # one model in the process
    assert rewards.shape == batch.batch["responses"].shape and rewards.dtype == torch.float32
    for i, want in enumerate(expected):
        n = len(want["token_rewards"])
        if i == 1:  # tool tokens' rewards moved to the policy token before them
            assert float(rewards[i, 2]) == pytest.approx(sum(want["token_rewards"][2:7]), abs=1e-4)
            assert torch.all(rewards[i, 3:7] == 0)
        else:
            assert rewards[i, :n].tolist() == pytest.approx(want["token_rewards"], abs=1e-4)
        assert torch.all(rewards[i, n:] == 0)
        assert float(rewards[i].sum()) == pytest.approx(want["reward"] - want["prompt_reward"], abs=1e-4)
    assert list(extra["rm_score"]) == pytest.approx([w["reward"] for w in expected], abs=1e-4)

    mask = batch.batch["response_mask"]
    _, returns = compute_gae_advantage_return(rewards, torch.zeros_like(rewards), mask, torch.tensor(1.0), torch.tensor(1.0))
    for i, want in enumerate(expected):
        assert float(returns[i, 0]) == pytest.approx(want["reward"] - want["prompt_reward"], abs=1e-4)
    values = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(0)) * mask
    _, returns = compute_gae_advantage_return(rewards, values, mask, torch.tensor(0.99), torch.tensor(0.95))
    by_loop = gae_by_loop(rewards.tolist(), values.tolist(), mask.tolist(), 0.99, 0.95)
    assert (returns * mask).tolist() == [pytest.approx(row, abs=1e-4) for row in by_loop]


def test_reward_loop_path_token_rewards_reach_rm_scores(rm_dir, expected, encoded) -> None:
    config = config_for(rm_dir, "0.7 loop")
    # verl's TaskRunner still builds the legacy managers: rewardlab's loads nothing until called, which it never is here.
    idle = load_reward_manager(config, hf_tokenizer(str(rm_dir)), num_examine=0, **config.reward_model.get("reward_kwargs", {}))
    assert type(idle) is TokenRewardManager and idle.scorer._rm is None

    worker = LocalRewardLoopWorker(config, None)  # verl's reward-loop worker: loads rewardlab's manager by importlib
    assert type(worker.reward_loop) is TokenRewardLoopManager
    batch = trainer_batch(encoded, tool_spans=[(1, 3, 7)])
    results = asyncio.run(worker.compute_score_batch(batch))
    for got, want in zip(results, expected, strict=True):
        assert got["reward_score"] == pytest.approx(want["reward"], abs=1e-4)
        assert got["reward_extra_info"][TOKEN_REWARDS_KEY].values == pytest.approx(want["token_rewards"], abs=1e-4)

    hook = object.__new__(TokenRewardAgentLoopWorker)  # verl 0.7's _postprocess uses nothing else of the worker
    out = hook._postprocess(
        internal_outputs(batch, [r["reward_score"] for r in results], [r["reward_extra_info"] for r in results])
    )
    rm_scores = out.batch["rm_scores"]
    assert TOKEN_REWARDS_KEY not in out.non_tensor_batch and TOKEN_REWARDS_KEY not in out.meta_info["reward_extra_keys"]
    for i, want in enumerate(expected):
        assert float(rm_scores[i].sum()) == pytest.approx(want["reward"] - want["prompt_reward"], abs=1e-4)
        if i != 1:
            assert rm_scores[i, : len(want["token_rewards"])].tolist() == pytest.approx(want["token_rewards"], abs=1e-4)
    assert torch.all(rm_scores[out.batch["response_mask"] == 0] == 0)


def test_dense_rewards_in_the_reward_loop_without_the_hook_fail_clearly(rm_dir, expected, encoded) -> None:
    with pytest.raises(ValueError, match="agent_loop_manager_class=rewardlab.integrations.verl_reward_loop"):
        LocalRewardLoopWorker(config_for(rm_dir, "0.7 loop", drop="agent_loop_manager_class"), None)
    sparse = config_for(rm_dir, "0.7 loop", drop="agent_loop_manager_class")
    sparse.reward_model.reward_kwargs.method = "sparse"
    worker = LocalRewardLoopWorker(sparse, None)
    results = asyncio.run(worker.compute_score_batch(trainer_batch(encoded)))
    assert [r["reward_score"] for r in results] == pytest.approx([w["reward"] for w in expected], abs=1e-4)
    assert all(TOKEN_REWARDS_KEY not in r["reward_extra_info"] for r in results)


def test_in_ray_actors_built_from_the_config_alone(rm_dir, expected, encoded) -> None:
    """What verl does: Ray actors (other processes) build the managers from the config; nothing is registered here."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        config = config_for(rm_dir, "0.7 loop")
        worker = RewardLoopWorker.remote(config, None)  # as verl 0.7's agent-loop workers create it
        results = ray.get(worker.compute_score_batch.remote(trainer_batch(encoded)), timeout=300)

        @ray.remote
        def legacy_reward(config, data):  # as verl's TaskRunner actor loads and calls the legacy manager
            tokenizer = hf_tokenizer(config.actor_rollout_ref.model.path)
            reward_fn = load_reward_manager(config, tokenizer, num_examine=0, **config.reward_model.get("reward_kwargs", {}))
            return compute_reward(data, reward_fn)

        rewards, _ = ray.get(legacy_reward.remote(config_for(rm_dir, "0.7 legacy"), trainer_batch(encoded)), timeout=300)
    finally:
        ray.shutdown()
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        assert got["reward_score"] == pytest.approx(want["reward"], abs=1e-4)
        assert got["reward_extra_info"][TOKEN_REWARDS_KEY].values == pytest.approx(want["token_rewards"], abs=1e-4)
        assert rewards[i, : len(want["token_rewards"])].tolist() == pytest.approx(want["token_rewards"], abs=1e-4)


def test_legacy_path_step_rewards_of_a_prm_become_the_reward_tensor(prm_dir, step_rows, step_expected) -> None:
    """`method=step` with a process reward model: the legacy manager's reward tensor holds `rewardlab ppo`'s step
    rewards (sigmoid(s_k) - 1/2 at each step's end)."""
    lines = documented_overrides("0.7 legacy", **{"/path/to/rm": str(prm_dir), "method=r3hf": "method=step"})
    config = compose_verl_config(lines + user_settings(prm_dir))
    reward_fn = load_reward_manager(config, hf_tokenizer(str(prm_dir)), num_examine=0, **config.reward_model.reward_kwargs)
    rewards, extra = compute_reward(trainer_batch(step_rows), reward_fn)  # verl's own call site
    for i, want in enumerate(step_expected):
        n = len(want.token_rewards)
        assert rewards[i, :n].tolist() == pytest.approx(want.token_rewards, abs=1e-5) and torch.all(rewards[i, n:] == 0)
    assert list(extra["rm_score"]) == pytest.approx([w.reward for w in step_expected], abs=1e-5)


def test_reward_loop_path_step_rewards_of_a_prm(prm_dir, step_rows, step_expected) -> None:
    """`method=step` through verl 0.7's reward-loop worker: `rewardlab ppo`'s step rewards as the token rewards."""
    lines = documented_overrides("0.7 loop", **{"/path/to/rm": str(prm_dir), "method=r3hf": "method=step"})
    worker = LocalRewardLoopWorker(compose_verl_config(lines + user_settings(prm_dir)), None)
    results = asyncio.run(worker.compute_score_batch(trainer_batch(step_rows)))
    for got, want in zip(results, step_expected, strict=True):
        assert got["reward_score"] == pytest.approx(want.reward, abs=1e-5)
        assert got["reward_extra_info"][TOKEN_REWARDS_KEY].values == pytest.approx(want.token_rewards, abs=1e-5)
