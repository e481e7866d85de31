"""Dense token rewards for verl, the RL engine that takes a (batch, response_length) reward tensor.

verl's layout: `batch["prompts"]` (B, P) left-padded, `batch["responses"]` (B, L) right-padded, `batch["input_ids"]` and
`batch["attention_mask"]` (B, P + L) their concatenation. A reward manager returns a float tensor shaped like
`batch["responses"]`; it becomes `token_level_scores`, and `token_level_rewards = scores - beta * KL` per token feeds
GAE. A sparse manager writes the score at the last response token; here every response token gets its R3HF (or other)
reward.

Dense rewards only matter to advantage estimators that use per-token returns (GAE with a critic, i.e.
`algorithm.adv_estimator=gae`). GRPO / RLOO / REINFORCE++ sum the rewards over the response, and the redistribution
cancels exactly (the sum is R(x, y) - R(x) for r3hf).

Usage (verl is not a dependency; nothing here imports it until `register_with_verl` is called):

    # in a module imported by verl's workers before the trainer starts, e.g. your entry point
    from rewardlab.integrations.verl import register_with_verl
    register_with_verl("rewardlab")

    reward_model.reward_manager=rewardlab
    +reward_model.reward_kwargs.reward_model=/path/to/rm +reward_model.reward_kwargs.method=r3hf

The reward model scores verl's own token ids, so it must share the policy's tokenizer (vocabulary); this is checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from rewardlab.redistribution import METHODS, first_token_index, last_token_index, response_mask
from rewardlab.runtime import resolve_device


def response_token_rewards(
    token_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor, response_length: int
) -> torch.Tensor:
    """(B, T) rewardlab token rewards (any padding) -> verl's (B, response_length): column j = j-th response token.

    Right-padded with zeros; a response longer than `response_length` raises (it cannot come from verl's own batch).
    """
    in_response = response_mask(attention_mask, response_start)
    lengths = in_response.sum(-1)
    longest = int(lengths.max()) if lengths.numel() else 0
    if longest > response_length:
        raise ValueError(f"a response has {longest} tokens, more than response_length {response_length}")
    columns = torch.arange(response_length, device=token_rewards.device).unsqueeze(0)
    source = (response_start.to(token_rewards.device).unsqueeze(-1) + columns).clamp(max=token_rewards.shape[-1] - 1)
    gathered = token_rewards.gather(-1, source)
    return torch.where(columns < lengths.unsqueeze(-1), gathered, 0.0)


def pad_token_rewards(rows: Sequence[Sequence[float]], response_length: int) -> torch.Tensor:
    """Per-response token-reward lists (e.g. `ScoreResult.token_rewards` from `rewardlab score` or the server) ->
    verl's right-padded (B, response_length) float32 tensor. The lists must follow the policy's tokenization."""
    out = torch.zeros(len(rows), response_length, dtype=torch.float32)
    for i, row in enumerate(rows):
        if len(row) > response_length:
            raise ValueError(f"row {i} has {len(row)} token rewards, more than response_length {response_length}")
        out[i, : len(row)] = torch.tensor(list(row), dtype=torch.float32)
    return out


class TokenRewardManager:
    """A verl reward manager: dense token rewards from a rewardlab reward model on the policy's own token ids.

    The constructor takes verl's reward-manager arguments (tokenizer, num_examine, compute_score, reward_fn_key) plus
    `reward_kwargs`: reward_model (a directory or a loaded RewardModel), method (one of METHODS), beta_c, abc_beta,
    micro_batch_size, device.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        *,
        reward_model: Any = None,
        method: str = "r3hf",
        beta_c: float = 1.0,
        abc_beta: float = 0.8,
        micro_batch_size: int = 8,
        device: str | None = None,
        check_tokenizer: bool = True,
        **unused: Any,  # verl passes further manager options (max_resp_len, overlong_buffer_cfg...) to every manager
    ) -> None:
        from rewardlab.modeling.reward_model import load_reward_model
        from rewardlab.scoring import TokenRewardSettings

        if reward_model is None:
            raise ValueError("TokenRewardManager needs reward_kwargs.reward_model (a rewardlab reward model directory)")
        if method not in METHODS:
            raise ValueError(f"unknown token-reward method {method!r}; choose one of {', '.join(METHODS)}")
        if isinstance(reward_model, str):
            reward_model = load_reward_model(reward_model, device=resolve_device(device))
        self.rm = reward_model.eval()
        self.settings = TokenRewardSettings(method, beta_c, abc_beta)
        self.micro_batch_size = micro_batch_size
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        if tokenizer is not None and check_tokenizer and tokenizer.get_vocab() != self.rm.tokenizer.get_vocab():
            raise ValueError(
                "the reward model's tokenizer differs from the policy's; token rewards are computed on the policy's "
                "token ids, so both must share one vocabulary (pass check_tokenizer=False to override)"
            )

    def compute(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int
    ) -> tuple[torch.Tensor, dict[str, list[float]]]:
        """(B, P + L) verl ids and mask -> ((B, L) token rewards, per-row extras). Pure tensors, no verl needed."""
        from rewardlab.scoring import score_batch

        response_length = input_ids.shape[-1] - prompt_length
        rewards = torch.zeros(input_ids.shape[0], response_length, dtype=torch.float32)
        extra: dict[str, list[float]] = defaultdict(list)
        for lo in range(0, input_ids.shape[0], self.micro_batch_size):
            ids, mask = input_ids[lo : lo + self.micro_batch_size], attention_mask[lo : lo + self.micro_batch_size]
            # Drop the columns that are padding in every row (left-padded prompts, right-padded responses).
            first, last = int(first_token_index(mask).min()), int(last_token_index(mask).max())
            ids, mask = ids[:, first : last + 1], mask[:, first : last + 1]
            start = torch.full((ids.shape[0],), prompt_length - first, dtype=torch.long)
            sequence, prompt, token_rewards = score_batch(self.rm, ids, mask, start, self.settings)
            mask, start = mask.to(token_rewards.device), start.to(token_rewards.device)
            rewards[lo : lo + len(ids)] = response_token_rewards(token_rewards, mask, start, response_length).cpu()
            extra["rm_score"] += sequence.cpu().tolist()
            extra["rm_prompt_score"] += prompt.cpu().tolist()
        return rewards, dict(extra)

    def __call__(self, data: Any, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        """verl's reward-manager call: `data` is a DataProto with batch['prompts'|'responses'|'input_ids'|...]."""
        responses = data.batch["responses"]
        prompt_length = data.batch["prompts"].shape[-1]
        rewards, extra = self.compute(data.batch["input_ids"], data.batch["attention_mask"], prompt_length)
        rewards = rewards.to(responses.device)
        if self.num_examine and self.tokenizer is not None:
            for i in range(min(self.num_examine, len(rewards))):
                valid = int(data.batch["attention_mask"][i, prompt_length:].sum())
                print("[response]", self.tokenizer.decode(responses[i, :valid]), "[rm_score]", extra["rm_score"][i])
        if return_dict:
            return {"reward_tensor": rewards, "reward_extra_info": extra}
        return rewards


def register_with_verl(name: str = "rewardlab") -> type[TokenRewardManager]:
    """Register TokenRewardManager in verl's reward-manager registry (`reward_model.reward_manager=<name>`)."""
    try:
        from verl.workers.reward_manager import register
    except ImportError as err:
        raise ImportError("verl is not installed (or too old to have verl.workers.reward_manager.register)") from err
    return register(name)(TokenRewardManager)
