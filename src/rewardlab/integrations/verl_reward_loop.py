"""rewardlab in verl's reward loop (verl 0.7 with `reward_model.use_reward_loop=True`, the default; verl 0.8+: the only
path). Importing this module imports verl.

verl's reward loop scores one sample at a time (`RewardManagerBase.run_single`) inside its reward-loop workers (Ray
actors that request no GPU) and carries ONE scalar per sample: the agent loop puts `reward_score` on the last response
token of `rm_scores`, which becomes `token_level_scores`. Two classes here, both loaded by verl from its config:

- `TokenRewardLoopManager`, the reward manager (`reward.reward_manager.source=importlib`, `.name=TokenRewardLoopManager`,
  `.module.path=pkg://rewardlab.integrations.verl_reward_loop`; verl 0.7: `reward_model.reward_loop_source=importlib`,
  `reward_model.reward_loop_module_path=...`, `reward_model.reward_loop_class_name=...`). Its `reward_score` is the
  sequence reward R(x, y); with `method=sparse` that is all verl needs.
- `TokenRewardAgentLoopManager`, verl's agent-loop-manager hook
  (`+actor_rollout_ref.rollout.agent.agent_loop_manager_class=rewardlab.integrations.verl_reward_loop.TokenRewardAgentLoopManager`):
  its workers lay the per-token rewards the manager computed (R3HF and the other methods) into `rm_scores`, so dense rewards
  reach `token_level_scores`. Rewards on tool/environment tokens (`response_mask` 0) move to the policy token before them.
  A dense method without this hook fails at start-up with a message saying so: verl's own agent loop would keep only a
  scalar.

Each reward-loop worker process loads the reward model once (on its GPU if Ray gave it one, else the CPU) and batches the
samples it is asked for concurrently; `reward.num_workers` workers load `reward.num_workers` copies. One model on a GPU
for all of them: run `rewardlab serve` there and pass `server_url` instead of `reward_model`.
"""

from __future__ import annotations

import inspect
from typing import Any

import ray
import torch
from verl.experimental.agent_loop import agent_loop as _agent_loop
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from rewardlab.errors import UserError
from rewardlab.integrations.verl import (
    TokenRewardScorer,
    VerlRewardOptions,
    fold_to_policy_tokens,
    place_token_rewards,
    verl_rows,
)

TOKEN_REWARDS_KEY = "rewardlab_token_rewards"  # reward_extra_info key the agent-loop hook takes the dense rewards from
AGENT_LOOP_MANAGER = f"{__name__}.TokenRewardAgentLoopManager"


class TokenRewards:
    """A row's token rewards inside `reward_extra_info`. Not a sequence on purpose: verl turns each extra-info key into a
    numpy array over the batch, and ragged lists would not make one; this stays one object per row."""

    __slots__ = ("values",)

    def __init__(self, values: list[float]) -> None:
        self.values = [float(v) for v in values]

    def __reduce__(self):  # picklable across Ray processes
        return (TokenRewards, (self.values,))

    def __repr__(self) -> str:
        return f"TokenRewards({len(self.values)} values, sum {sum(self.values):+.4f})"


def reward_kwargs(config: Any) -> dict:
    """rewardlab's options from a verl config: `reward.reward_kwargs` (verl 0.8+) or `reward_model.reward_kwargs` (0.7)."""
    for section in ("reward", "reward_model"):
        part = config.get(section) if hasattr(config, "get") else None
        kwargs = part.get("reward_kwargs") if part is not None and hasattr(part, "get") else None
        if kwargs:
            return dict(kwargs)
    return {}


def uses_token_reward_agent_loop(config: Any) -> bool:
    agent = config.get("actor_rollout_ref", {}).get("rollout", {}).get("agent", {}) or {}
    return agent.get("agent_loop_manager_class") == AGENT_LOOP_MANAGER


def verl_reward_model_enabled(config: Any) -> bool:
    reward = config.get("reward") or {}
    legacy = config.get("reward_model") or {}
    return bool((reward.get("reward_model") or {}).get("enable")) or bool(legacy.get("enable"))


class TokenRewardLoopManager(RewardManagerBase):
    """verl's reward-loop manager: R(x, y) as `reward_score`, and (dense methods) the token rewards for the hook."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if "compute_score" in inspect.signature(RewardManagerBase.__init__).parameters:  # verl 0.8+
            super().__init__(config, tokenizer, compute_score)
        else:  # verl 0.7: (config, tokenizer)
            super().__init__(config, tokenizer)
        self.options = VerlRewardOptions.from_kwargs({**reward_kwargs(config), **kwargs})
        self.dense = self.options.method != "sparse"
        if verl_reward_model_enabled(config):
            raise UserError(
                "rewardlab's reward-loop manager scores with its own reward model; verl's reward model "
                "(reward.reward_model.enable / reward_model.enable) must stay off"
            )
        if self.dense and not uses_token_reward_agent_loop(config):
            raise UserError(
                f"token rewards (method={self.options.method}) cannot pass through verl's reward loop on its own: its "
                "agent loop keeps one scalar per sample, on the last response token. Add "
                f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={AGENT_LOOP_MANAGER} (rewardlab's agent loop "
                "lays the token rewards into rm_scores), or use method=sparse (one reward per sequence), or verl 0.7's "
                "legacy path (reward_model.use_reward_loop=False, rewardlab.integrations.verl.TokenRewardManager)"
            )
        self.scorer = TokenRewardScorer(self.options, tokenizer)
        if not self.options.server_url:
            _ = self.scorer.rm  # load now (once per process), not inside the first rollout; checks the vocabulary

    async def _score_row(self, row: tuple[list[int], list[int]]):
        """One sample: through the server, or the scoring service's asynchronous entry (one batching queue per event
        loop, so concurrent samples share forward passes)."""
        if self.options.server_url:
            return (await self.scorer.score_server_async([row]))[0]
        return (await self.scorer.score_local_async([row]))[0]

    async def run_single(self, data: Any) -> dict:
        data = data[-1:]  # a trajectory with several outputs is scored on its last one, as verl's managers do
        batch = data.batch
        prompt_length = batch["prompts"].shape[-1]
        keys = set(batch.keys())  # a TensorDict: `in` on it raises, its keys() does not
        input_ids = batch["input_ids"] if "input_ids" in keys else torch.cat([batch["prompts"], batch["responses"]], -1)
        (row,) = verl_rows(input_ids, batch["attention_mask"], prompt_length)
        score = await self._score_row(row)
        info: dict[str, Any] = {"rm_score": score.reward, "rm_prompt_score": score.prompt_reward}
        if self.dense:
            info[TOKEN_REWARDS_KEY] = TokenRewards(score.token_rewards)
        return {"reward_score": score.reward, "reward_extra_info": info}


# --- the agent-loop hook -------------------------------------------------------------------------------------------

# verl 0.7 wraps AgentLoopWorker in ray.remote and keeps the plain class as AgentLoopWorkerBase; 0.8+ has the plain class.
_WorkerBase = getattr(_agent_loop, "AgentLoopWorkerBase", None) or _agent_loop.AgentLoopWorker


class TokenRewardAgentLoopWorker(_WorkerBase):  # type: ignore[misc, valid-type]
    """verl's agent-loop worker, with the batch's `rm_scores` made from rewardlab's per-token rewards."""

    def _postprocess(self, inputs, *args, **kwargs):
        rows = []
        for item in inputs:  # taken out before verl turns every extra-info key into a numpy column
            info = item.extra_fields.get("reward_extra_info") or {}
            rows.append(info.pop(TOKEN_REWARDS_KEY, None))
        output = super()._postprocess(inputs, *args, **kwargs)
        has_scores = "rm_scores" in set(output.batch.keys())  # a TensorDict: `in` on it raises, its keys() does not
        if has_scores and rows and all(row is not None for row in rows):
            prompt_length = output.batch["prompts"].shape[-1]
            dense = place_token_rewards([row.values for row in rows], output.batch["attention_mask"][:, prompt_length:])
            dense = fold_to_policy_tokens(dense, output.batch["response_mask"].cpu())
            output.batch["rm_scores"] = dense.to(output.batch["rm_scores"].device)
        return output


class TokenRewardAgentLoopManager(_agent_loop.AgentLoopManager):
    """verl's AgentLoopManager whose workers are `TokenRewardAgentLoopWorker`s (verl's `agent_loop_workers_class`)."""

    agent_loop_workers_class = ray.remote(TokenRewardAgentLoopWorker)


__all__ = [
    "AGENT_LOOP_MANAGER",
    "TOKEN_REWARDS_KEY",
    "TokenRewardAgentLoopManager",
    "TokenRewardAgentLoopWorker",
    "TokenRewardLoopManager",
    "TokenRewards",
]
