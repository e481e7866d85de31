"""verl 0.8+ (tested: 0.9.1): rewards come only from the reward loop. rewardlab's reward-loop manager is loaded by verl's
own RewardLoopWorker from the configuration lines in docs/integrations.md; per-token rewards reach `rm_scores` through
rewardlab's agent-loop workers (verl's `agent_loop_manager_class` hook); verl's GAE runs on them."""

from __future__ import annotations

import asyncio

import pytest
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopWorker
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo.core_algos import compute_gae_advantage_return
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.import_utils import load_class_from_fqn
from verl_fixtures import (
    PROMPT_LENGTH,
    agent_loop_sample,
    compose_verl_config,
    documented_overrides,
    gae_by_loop,
    internal_outputs,
    trainer_batch,
)

from rewardlab.integrations.verl_reward_loop import (
    AGENT_LOOP_MANAGER,
    TOKEN_REWARDS_KEY,
    TokenRewardAgentLoopManager,
    TokenRewardAgentLoopWorker,
    TokenRewardLoopManager,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def USER_SETTINGS(rm_dir) -> list[str]:  # noqa: N802 (what every user sets anyway: the policy and the rollout engine)
    return [f"actor_rollout_ref.model.path={rm_dir}", "actor_rollout_ref.rollout.name=vllm"]


def config_for(rm_dir, marker: str = "0.9 dense", **values):
    lines = documented_overrides(marker, **{"/path/to/rm": str(rm_dir), **values})
    return compose_verl_config([*lines, *USER_SETTINGS(rm_dir)])


def run_worker(worker, data):
    return asyncio.run(worker.compute_score_batch(data))


def test_the_documented_lines_make_a_valid_verl_config(rm_dir) -> None:
    config = config_for(rm_dir)
    assert config.reward.reward_manager.source == "importlib"
    assert config.reward.reward_kwargs.reward_model == str(rm_dir) and config.reward.reward_kwargs.method == "r3hf"
    assert config.algorithm.adv_estimator == "gae" and config.algorithm.lam < 1 and config.algorithm.use_kl_in_reward
    rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)  # what verl's agent-loop workers build
    assert rollout.agent.agent_loop_manager_class == AGENT_LOOP_MANAGER
    manager_cls = load_class_from_fqn(rollout.agent.agent_loop_manager_class, "AgentLoopManager")  # verl's loader
    assert manager_cls is TokenRewardAgentLoopManager and issubclass(manager_cls, AgentLoopManager)
    assert manager_cls.agent_loop_workers_class.__ray_actor_class__ is TokenRewardAgentLoopWorker
    assert issubclass(TokenRewardAgentLoopWorker, AgentLoopWorker)


def test_verl_reward_loop_worker_loads_rewardlab_from_the_config_and_scores_like_rewardlab_score(
    rm_dir, expected, encoded
) -> None:
    worker = RewardLoopWorker(config_for(rm_dir))  # verl's class: resolve_reward_manager_cls -> pkg:// -> rewardlab
    assert type(worker.reward_manager) is TokenRewardLoopManager
    results = run_worker(worker, trainer_batch(encoded))  # the colocated path's input: the padded trainer batch
    for got, want in zip(results, expected, strict=True):
        assert got["reward_score"] == pytest.approx(want["reward"], abs=1e-4)
        info = got["reward_extra_info"]
        assert info["rm_prompt_score"] == pytest.approx(want["prompt_reward"], abs=1e-4)
        assert info[TOKEN_REWARDS_KEY].values == pytest.approx(want["token_rewards"], abs=1e-4)
    # The agent loop's input: one unpadded sample at a time, concurrently; they share forward passes.
    manager = worker.reward_manager

    async def concurrently():
        return await asyncio.gather(*(worker.compute_score(agent_loop_sample(p, r)) for p, r in encoded))

    results = asyncio.run(concurrently())
    assert [r["reward_score"] for r in results] == pytest.approx([w["reward"] for w in expected], abs=1e-4)
    batchers = list(manager.scorer.service.batchers.values())  # the scoring service's queues, one per event loop
    assert batchers and max(b.batches_run for b in batchers) < len(encoded)  # not one forward pass per sample


def test_token_rewards_reach_rm_scores_through_the_agent_loop_and_verl_gae_uses_them(rm_dir, expected, encoded) -> None:
    worker = RewardLoopWorker(config_for(rm_dir))
    tool_spans = [(1, 3, 7)]  # row 1: tokens 3..6 of its response are tool output (response_mask 0)
    batch = trainer_batch(encoded, tool_spans)
    results = run_worker(worker, batch)
    scores = [r["reward_score"] for r in results]
    infos = [r["reward_extra_info"] for r in results]

    hook = object.__new__(TokenRewardAgentLoopWorker)  # verl's _postprocess needs no more of the worker than this
    hook.reward_loop_worker_handles = [object()]
    ours = hook._postprocess(internal_outputs(batch, scores, infos))
    plain = object.__new__(AgentLoopWorker)
    plain.reward_loop_worker_handles = [object()]
    infos_without_tokens = [{k: v for k, v in info.items() if k != TOKEN_REWARDS_KEY} for info in infos]
    theirs = plain._postprocess(internal_outputs(batch, scores, infos_without_tokens))

    rm_scores, mask = ours.batch["rm_scores"], ours.batch["response_mask"]
    assert rm_scores.shape == batch.batch["responses"].shape and rm_scores.dtype == torch.float32
    assert TOKEN_REWARDS_KEY not in ours.non_tensor_batch and "rm_score" in ours.non_tensor_batch
    for i, want in enumerate(expected):
        n = len(want["token_rewards"])
        if i == 1:  # tool tokens' rewards moved to the policy token before them
            assert float(rm_scores[i, 2]) == pytest.approx(sum(want["token_rewards"][2:7]), abs=1e-4)
            assert torch.all(rm_scores[i, 3:7] == 0)
        else:
            assert rm_scores[i, :n].tolist() == pytest.approx(want["token_rewards"], abs=1e-4)
        assert torch.all(rm_scores[i, n:] == 0)
        assert float(rm_scores[i].sum()) == pytest.approx(want["reward"] - want["prompt_reward"], abs=1e-4)
        # verl's own agent loop: the scalar on the last response token only
        assert float(theirs.batch["rm_scores"][i].sum()) == pytest.approx(want["reward"], abs=1e-4)
        assert float(theirs.batch["rm_scores"][i, n - 1]) == pytest.approx(want["reward"], abs=1e-4)

    # verl's GAE. gamma = lam = 1 and zero values: the return at the first token is the sum R(x, y) - R(x); without the
    # fold, verl's GAE would drop the rewards sitting on tool tokens (it skips observation tokens).
    zeros = torch.zeros_like(rm_scores)
    _, returns = compute_gae_advantage_return(rm_scores, zeros, mask, torch.tensor(1.0), torch.tensor(1.0))
    for i, want in enumerate(expected):
        assert float(returns[i, 0]) == pytest.approx(want["reward"] - want["prompt_reward"], abs=1e-4)
    values = torch.randn(rm_scores.shape, generator=torch.Generator().manual_seed(0)) * mask
    _, returns = compute_gae_advantage_return(rm_scores, values, mask, torch.tensor(0.99), torch.tensor(0.95))
    by_loop = gae_by_loop(rm_scores.tolist(), values.tolist(), mask.tolist(), 0.99, 0.95)
    assert (returns * mask).tolist() == [pytest.approx(row, abs=1e-4) for row in by_loop]


def test_dense_rewards_without_the_agent_loop_hook_fail_clearly_and_sparse_works(rm_dir, expected, encoded) -> None:
    lines = [line for line in documented_overrides("0.9 dense", **{"/path/to/rm": str(rm_dir)}) if "agent_loop" not in line]
    config = compose_verl_config([*lines, *USER_SETTINGS(rm_dir)])
    with pytest.raises(ValueError, match="agent_loop_manager_class=rewardlab.integrations.verl_reward_loop"):
        RewardLoopWorker(config)

    sparse = RewardLoopWorker(config_for(rm_dir, "0.9 sparse"))  # no hook needed: verl's own agent loop suffices
    batch = trainer_batch(encoded)
    results = run_worker(sparse, batch)
    assert all(TOKEN_REWARDS_KEY not in r["reward_extra_info"] for r in results)
    plain = object.__new__(AgentLoopWorker)
    plain.reward_loop_worker_handles = [object()]
    out = plain._postprocess(
        internal_outputs(batch, [r["reward_score"] for r in results], [r["reward_extra_info"] for r in results])
    )
    last = batch.batch["attention_mask"][:, PROMPT_LENGTH:].sum(-1) - 1
    for i, want in enumerate(expected):
        assert float(out.batch["rm_scores"][i, last[i]]) == pytest.approx(want["reward"], abs=1e-4)


def test_server_url_scores_through_rewardlab_serve(rm_dir, expected, encoded, monkeypatch) -> None:
    from live_server import live_server
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.serve import create_app

    with live_server(create_app(load_reward_model(rm_dir), api_key="k3y")) as url:
        config = config_for(rm_dir, "0.9 server", **{"http://rm-host:8000": url})
        monkeypatch.setenv("REWARDLAB_API_KEY", "k3y")  # as the docs say: in the workers' environment
        worker = RewardLoopWorker(config)
        assert worker.reward_manager.scorer._rm is None  # nothing loaded in verl's worker: the model lives in the server
        results = run_worker(worker, trainer_batch(encoded))
    for got, want in zip(results, expected, strict=True):
        assert got["reward_score"] == pytest.approx(want["reward"], abs=1e-4)
        assert got["reward_extra_info"][TOKEN_REWARDS_KEY].values == pytest.approx(want["token_rewards"], abs=1e-4)


def test_in_a_ray_actor_built_from_the_config_alone(rm_dir, expected, encoded) -> None:
    """What verl does: a Ray actor (another process) builds the reward loop from the config; nothing is registered in
    this process (the failure of the old `register_with_verl` recipe)."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        actor = ray.remote(RewardLoopWorker).remote(config_for(rm_dir), None)  # as RewardLoopManager creates them
        results = ray.get(actor.compute_score_batch.remote(trainer_batch(encoded)), timeout=300)
    finally:
        ray.shutdown()
    for got, want in zip(results, expected, strict=True):
        assert got["reward_score"] == pytest.approx(want["reward"], abs=1e-4)
        assert got["reward_extra_info"][TOKEN_REWARDS_KEY].values == pytest.approx(want["token_rewards"], abs=1e-4)


def test_which_estimators_see_the_token_rewards(rm_dir) -> None:
    """docs/integrations.md's table, on verl's own estimators: GRPO and RLOO start from the summed reward, and R(x) is
    the same for every sample of one prompt, so r3hf gives them exactly the sparse reward's advantages; GAE and
    REINFORCE++ use per-token returns, where r3hf changes them."""
    import numpy as np
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.core_algos import (
        compute_grpo_outcome_advantage,
        compute_reinforce_plus_plus_outcome_advantage,
        compute_rloo_outcome_advantage,
    )

    from rewardlab.data.templates import encode_prompt_response
    from rewardlab.integrations.verl import TokenRewardManager

    tokenizer = RewardLoopWorker(config_for(rm_dir)).input_tokenizer
    rows = []
    for prompt, responses in (("What is 2 + 2?", [" 4.", " It is 4.", " Five"]), ("Name a colour.", [" Blue", " Red!"])):
        for response in responses:
            e = encode_prompt_response(tokenizer, prompt, response)
            rows.append((e.input_ids[: e.response_start], e.input_ids[e.response_start :]))
    batch = trainer_batch(rows)
    index = np.array(["a", "a", "a", "b", "b"], dtype=object)
    mask = batch.batch["response_mask"]
    dense = TokenRewardManager(tokenizer, reward_model=str(rm_dir), method="r3hf")(batch)
    sparse = TokenRewardManager(tokenizer, reward_model=str(rm_dir), method="sparse")(batch)
    assert not torch.allclose(dense, sparse)
    config = AlgoConfig(gamma=1.0, lam=1.0)
    for name, estimator in (("grpo", compute_grpo_outcome_advantage), ("rloo", compute_rloo_outcome_advantage)):
        with_dense, _ = estimator(dense, mask, index, config=config)
        with_sparse, _ = estimator(sparse, mask, index, config=config)
        assert torch.allclose(with_dense, with_sparse, atol=1e-5), name
    with_dense, _ = compute_reinforce_plus_plus_outcome_advantage(dense, mask, config=config)
    with_sparse, _ = compute_reinforce_plus_plus_outcome_advantage(sparse, mask, config=config)
    assert not torch.allclose(with_dense, with_sparse, atol=1e-3)
    zeros = torch.zeros_like(dense)
    with_dense, _ = compute_gae_advantage_return(dense, zeros, mask, torch.tensor(1.0), torch.tensor(1.0))
    with_sparse, _ = compute_gae_advantage_return(sparse, zeros, mask, torch.tensor(1.0), torch.tensor(1.0))
    assert not torch.allclose(with_dense, with_sparse, atol=1e-3)


# ----- a process reward model's step rewards (`method=step`), loaded in verl's worker or served -----


def step_config(prm_dir, marker: str, **values):
    return config_for(prm_dir, marker, **{"method=r3hf": "method=step", **values})


def assert_step_rewards(results, step_expected) -> None:
    for got, want in zip(results, step_expected, strict=True):
        assert got["reward_score"] == pytest.approx(want.reward, abs=1e-5)
        assert got["reward_extra_info"][TOKEN_REWARDS_KEY].values == pytest.approx(want.token_rewards, abs=1e-5)


def test_step_rewards_of_a_local_prm_reach_verl_as_ppo_computes_them(prm_dir, step_rows, step_expected) -> None:
    worker = RewardLoopWorker(step_config(prm_dir, "0.9 dense"))
    assert worker.reward_manager.scorer.options.method == "step"
    assert_step_rewards(run_worker(worker, trainer_batch(step_rows)), step_expected)
    assert sum(1 for want in step_expected for r in want.token_rewards if r != 0) >= 6  # a reward at each step's end


def test_step_rewards_over_http_equal_the_local_ones(prm_dir, step_rows, step_expected) -> None:
    from live_server import live_server
    from rewardlab.modeling.loader import load_reward_model
    from rewardlab.serve import create_app

    with live_server(create_app(load_reward_model(prm_dir))) as url:
        worker = RewardLoopWorker(step_config(prm_dir, "0.9 server", **{"http://rm-host:8000": url}))
        assert worker.reward_manager.scorer._rm is None  # the PRM lives in the server
        results = run_worker(worker, trainer_batch(step_rows))
    assert_step_rewards(results, step_expected)
