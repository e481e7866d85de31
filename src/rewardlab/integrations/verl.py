"""Dense token rewards for verl, the RL engine that takes a (batch, response_length) reward tensor.

verl's layout: `batch["prompts"]` (B, P) left-padded, `batch["responses"]` (B, L) right-padded, `batch["input_ids"]` and
`batch["attention_mask"]` (B, P + L) their concatenation, `batch["response_mask"]` (B, L) 1 on tokens the policy
generated (0 on padding and, in multi-turn rollouts, on tool or environment output). A reward tensor shaped like
`batch["responses"]` becomes `token_level_scores`; `token_level_rewards = scores - beta * KL` per token (only with
`algorithm.use_kl_in_reward=True`) feeds the advantage estimator.

This module imports no verl (rewardlab does not depend on it). It holds what both verl paths share:
- the options a verl config passes (`VerlRewardOptions`: `reward_model` or `server_url`, `method`, ...);
- the layout conversions and `fold_to_policy_tokens` (rewards of non-policy tokens move to the policy token before them);
- `TokenRewardScorer`: scores verl rows with a local reward model (loaded once per process, on the GPU when this process
  has one; scored by the scoring service, `rewardlab.modeling.service`) or through `rewardlab serve` (`server_url`: one
  model on a GPU of its own, shared by every verl worker);
- `TokenRewardManager`: verl's legacy reward-manager interface (verl <= 0.7 with `reward_model.use_reward_loop=False`),
  loaded by verl itself through `reward_manager.source=importlib` and `pkg://rewardlab.integrations.verl`.
The reward-loop classes (verl 0.7 with its reward loop, verl 0.8+) subclass verl's own and live in
`rewardlab.integrations.verl_reward_loop`. Config lines for each version: docs/integrations.md.

Dense rewards only matter to advantage estimators that use per-token returns (GAE with a critic,
`algorithm.adv_estimator=gae`, and a `lam` below 1 to bootstrap from the critic; REINFORCE++'s reward-to-go). GRPO, RLOO
and ReMax start from the sum over the response, R(x, y) - R(x) for r3hf, and R(x) is shared by a prompt's samples: the
redistribution cancels exactly there.

The reward model scores verl's own token ids, so it must share the policy's tokenizer (vocabulary); this is checked.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from rewardlab.errors import UserError
from rewardlab.masks import fold_closing_scores, response_mask
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C, SHAPINGS, check_objective, token_reward_method
from rewardlab.runtime import API_KEY_ENV

# --- layout: rewardlab token rewards <-> verl's (B, response_length) --------------------------------------------------


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


def place_token_rewards(rows: Sequence[Sequence[float]], response_attention: torch.Tensor) -> torch.Tensor:
    """Each row's token rewards, in order, onto the positions where `response_attention` (B, L) is 1; zeros elsewhere."""
    out = torch.zeros(response_attention.shape, dtype=torch.float32)
    for i, row in enumerate(rows):
        positions = response_attention[i].nonzero().flatten().cpu()
        if len(positions) != len(row):
            raise ValueError(f"row {i}: {len(row)} token rewards for {len(positions)} response tokens")
        out[i, positions] = torch.tensor(list(row), dtype=torch.float32)
    return out


def fold_to_policy_tokens(rewards: torch.Tensor, policy_mask: torch.Tensor) -> torch.Tensor:
    """Move the reward of every token the policy did not generate (`policy_mask` 0: tool or environment output) onto the
    nearest policy token before it (the action whose consequence it is), or after it when none precedes. Per-row sums
    are kept whenever a row has a policy token; a row without one gets zeros. (B, L) -> (B, L).

    In RL terms, tool output is part of the environment's transition after the policy's last action, so the change of
    score it causes (R3HF: R(x, y<=t) - R(x, y<t) over those tokens) is credited to that action.
    """
    length = rewards.shape[-1]
    index = torch.arange(length, device=rewards.device).expand_as(rewards)
    policy = policy_mask.to(rewards.device).bool()
    before = torch.where(policy, index, -1).cummax(dim=-1).values  # last policy index <= j
    after = torch.where(policy, index, length).flip(-1).cummin(dim=-1).values.flip(-1)  # first policy index >= j
    target = torch.where(before >= 0, before, after)
    has_target = target < length
    out = torch.zeros_like(rewards)
    return out.scatter_add_(-1, target.clamp(max=length - 1), torch.where(has_target, rewards, 0.0))


def verl_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> list[tuple[list[int], list[int]]]:
    """verl's (B, P + L) ids and mask -> per row (prompt token ids, response token ids), padding removed."""
    ids, mask = input_ids.cpu(), attention_mask.cpu().bool()
    rows = []
    for i in range(ids.shape[0]):
        prompt = ids[i, :prompt_length][mask[i, :prompt_length]].tolist()
        response = ids[i, prompt_length:][mask[i, prompt_length:]].tolist()
        rows.append((prompt, response))
    return rows


# --- options -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerlRewardOptions:
    """What a verl config passes to rewardlab (`reward_kwargs`). Exactly one of `reward_model` / `server_url`."""

    reward_model: Any = None  # a rewardlab reward-model directory (run directory, ensemble, built-in name) or a RewardModel
    server_url: str | None = None  # or a running `rewardlab serve` (http://host:port): the model lives there
    api_key: str | None = None  # for server_url; default: the REWARDLAB_API_KEY environment variable
    # token rewards: one of rewardlab.redistribution.METHODS (`sparse`: R(x, y) on the last token), or `step` on a
    # process reward model, local or served (its sigmoid(s_k) - 1/2 at each step's last token, docs/token_rewards.md)
    method: str = "r3hf"
    beta_c: float = DEFAULT_BETA_C
    abc_beta: float = DEFAULT_ABC_BETA
    micro_batch_size: int = 8  # sequences per forward pass (local) or per request (server)
    device: str | None = None  # local model: None = CUDA when this process sees a GPU, else CPU
    dtype: str | None = None  # local model: auto | fp32 | bf16 | fp16
    check_tokenizer: bool = True
    timeout: float = 600.0  # server requests, seconds
    # rewards (r - mean) / std by the statistics recorded at training (`rewardlab score --normalize`); with server_url the
    # server must normalise (`rewardlab serve --normalize`): its answers are checked
    normalize: bool = False

    def __post_init__(self) -> None:
        if (self.reward_model is None) == (self.server_url is None):
            raise UserError(
                "rewardlab's verl reward manager needs reward_kwargs.reward_model (a rewardlab reward model directory) "
                "or reward_kwargs.server_url (a running `rewardlab serve`), and not both"
            )
        method = token_reward_method(self.method, "reward_kwargs.method", choices=SHAPINGS)
        if isinstance(self.reward_model, str | os.PathLike):
            from rewardlab.errors import MissingPathError
            from rewardlab.modeling.loader import saved_objective

            try:
                objective = saved_objective(self.reward_model)
            except MissingPathError:
                objective = None  # reported where it loads
            if objective is not None:
                check_objective(method, objective, "reward_kwargs.method")
        if self.micro_batch_size < 1:
            raise UserError(f"micro_batch_size must be at least 1, not {self.micro_batch_size}")
        if self.normalize and isinstance(self.reward_model, str | os.PathLike):
            from rewardlab.modeling.loader import check_normalizable

            check_normalizable(self.reward_model)  # a model without statistics fails at start-up, in one line

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> VerlRewardOptions:
        """Options from verl's reward kwargs; keys that are not rewardlab's are ignored (verl passes its own
        manager options, e.g. max_resp_len, to every manager)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(kwargs).items() if k in names})


# --- scoring -----------------------------------------------------------------------------------------------------------


@dataclass
class RowScore:
    """One verl row: R(x, y), R(x), and one token reward per response token (padding excluded)."""

    reward: float
    prompt_reward: float
    token_rewards: list[float]


_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def shared_reward_model(path: str, device: str | None = None, dtype: str | None = None, normalize: bool = False):
    """A reward model loaded once per process and shared (verl builds a training and a validation manager, and several
    workers may live in one process). `device` None: CUDA when this process sees a GPU, else the CPU."""
    from rewardlab.modeling.loader import load_for_scoring, scoring_placement

    placed_on, placed_as = scoring_placement(device, dtype)
    key = (str(path), str(placed_on), str(placed_as), normalize)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_for_scoring(path, placed_on, placed_as, normalize=normalize)
        return _MODELS[key]


def _server_items(rows: Sequence[tuple[list[int], list[int]]]) -> list[dict]:
    return [{"prompt_ids": prompt, "response_ids": response} for prompt, response in rows]


def _server_scores(body: dict, n: int, normalize: bool = False) -> list[RowScore]:
    results = body.get("results")
    if not isinstance(results, list) or len(results) != n:
        raise RuntimeError(f"rewardlab serve answered {body!r:.200}, not {n} results")
    if normalize and body.get("normalize") is not True:
        raise RuntimeError("reward_kwargs.normalize is set but the server does not normalise: run `rewardlab serve --normalize`")
    return [RowScore(r["reward"], r["prompt_reward"], list(r["token_rewards"])) for r in results]


class TokenRewardScorer:
    """Scores verl rows (prompt ids, response ids) with rewardlab: a local reward model through the scoring service, or
    `rewardlab serve`. Either way a chat turn stopped at EOS is closed first and the closing's rewards folded back (not for
    `step`: a PRM reads the EOS itself as its final step's end)."""

    def __init__(self, options: VerlRewardOptions, tokenizer: Any = None) -> None:
        from rewardlab.modeling.service import TokenRewardSettings

        self.options = options
        self.steps = token_reward_method(options.method, choices=SHAPINGS).needs_step_ends  # a PRM's step rewards
        self.settings = TokenRewardSettings(None if self.steps else options.method, options.beta_c, options.abc_beta)
        self.tokenizer = tokenizer
        self._rm = None
        self._service = None
        self._closing_cache: tuple | None = None

    # local model

    @property
    def rm(self):
        """The local reward model, loaded (once per process) on first use; the vocabulary is checked then."""
        if self._rm is None:
            from rewardlab.modeling.loader import load_for_scoring

            source, normalize = self.options.reward_model, self.options.normalize
            if isinstance(source, str | os.PathLike):
                rm = shared_reward_model(str(source), self.options.device, self.options.dtype, normalize)
            else:  # an already loaded RewardModel (Python callers, tests): normalize switches its normalisation on
                rm = load_for_scoring(source, normalize=normalize, where="reward_kwargs.reward_model")
            if self.options.check_tokenizer and self.tokenizer is not None:
                check_same_vocabulary(self.tokenizer, rm.tokenizer)
            self._rm = rm
        return self._rm

    @property
    def service(self):
        """The scoring service over the local model: `micro_batch_size` sequences per forward pass, these settings."""
        if self._service is None:
            from rewardlab.modeling.service import ScoringService

            self._service = ScoringService(self.rm, batch_size=self.options.micro_batch_size, settings=self.settings)
        return self._service

    # a chat turn that stops at EOS, closed as the template closes it

    def _closing(self) -> tuple[str, list[int]] | None:
        if self._closing_cache is None:
            tokenizer = self.tokenizer if self.tokenizer is not None else (None if self.options.server_url else self.rm.tokenizer)
            self._closing_cache = (closing_after_eos(tokenizer) if tokenizer is not None else None,)
        return self._closing_cache[0]

    def close_turns(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        """Rows whose response stops at EOS after a chat prompt get the rest of the template's closing (ChatML: "\n"
        after <|im_end|>), where rewardlab reads the reward in training; returns the rows and how many ids each got."""
        closing = self._closing()
        if closing is None:
            return list(rows), [0] * len(rows)
        header, extra = closing
        tokenizer = self.tokenizer if self.tokenizer is not None else self.rm.tokenizer
        eos, out, added = tokenizer.eos_token_id, [], []
        for prompt, response in rows:
            chat = bool(response) and response[-1] == eos and header in tokenizer.decode(prompt[-64:])
            out.append((prompt, response + extra) if chat else (prompt, response))
            added.append(len(extra) if chat else 0)
        return out, added

    @staticmethod
    def fold_added(score: RowScore, added: int) -> RowScore:
        """The closing ids are not the policy's: their token rewards go to the EOS the policy generated
        (`fold_closing_scores`, as PPO's rollouts fold them; in float64, the precision of the lists)."""
        if not added:
            return score
        rewards = torch.tensor([score.token_rewards], dtype=torch.float64)
        kept = torch.ones(1, rewards.shape[1] - added, dtype=torch.float64)
        return RowScore(score.reward, score.prompt_reward, fold_closing_scores(rewards, kept, added)[0].tolist())

    def _local(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[list, list[int]]:
        rows, added = self.close_turns(rows)
        return [self.service.encode_ids(prompt, response) for prompt, response in rows], added

    def _folded(self, scores: Sequence, added: Sequence[int]) -> list[RowScore]:
        return [
            self.fold_added(RowScore(s.reward, s.prompt_reward, s.token_rewards), n) for s, n in zip(scores, added, strict=True)
        ]

    def score_steps(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[RowScore]:
        """`step`: a PRM's sigmoid(s_k) - 1/2 at each step's last token, as `rewardlab ppo` computes them
        (`rl.rollout.step_row_scores`, the server's too: EOS ends the final step); `reward` is their sum, `prompt_reward`
        0."""
        from rewardlab.rl.rollout import step_row_scores

        rm = self.rm
        tokenizer = self.tokenizer if self.tokenizer is not None else rm.tokenizer
        scores = step_row_scores(rm, rows, tokenizer, self.options.micro_batch_size)
        return [RowScore(s.reward, s.prompt_reward, s.token_rewards) for s in scores]

    def score_local(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[RowScore]:
        """The service's synchronous entry: length-sorted batches of `micro_batch_size`."""
        if self.steps:
            return self.score_steps(rows)
        sequences, added = self._local(rows)
        return self._folded(self.service.score_encoded(sequences), added)

    async def score_local_async(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[RowScore]:
        """The service's asynchronous entry: concurrent calls on this event loop share forward passes."""
        if self.steps:
            return self.score_steps(rows)
        sequences, added = self._local(rows)
        return self._folded(await self.service.score_async(sequences), added)

    # server

    def _server_rows(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        """Rows as sent to the server: chat turns closed (`close_turns`), except for `step`, which the local path scores
        unclosed (a PRM reads a finished response's EOS as its final step's end), so that both give the same numbers."""
        return (list(rows), [0] * len(rows)) if self.steps else self.close_turns(rows)

    def _request(self, rows: Sequence[tuple[list[int], list[int]]]) -> tuple[str, dict, dict]:
        url = self.options.server_url.rstrip("/") + "/score"
        key = self.options.api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {
            "items": _server_items(rows),
            "token_rewards": self.options.method if self.steps else self.settings.method,
            "beta_c": self.settings.beta_c,
            "abc_beta": self.settings.abc_beta,
        }
        return url, body, headers

    def score_server(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[RowScore]:
        import httpx

        rows, added = self._server_rows(rows)
        out: list[RowScore] = []
        size = self.options.micro_batch_size
        with httpx.Client(timeout=self.options.timeout) as client:
            for lo in range(0, len(rows), size):
                chunk = rows[lo : lo + size]
                url, body, headers = self._request(chunk)
                reply = client.post(url, json=body, headers=headers)
                if reply.status_code != 200:
                    raise RuntimeError(f"rewardlab serve at {url}: HTTP {reply.status_code}: {reply.text[:300]}")
                out += _server_scores(reply.json(), len(chunk), self.options.normalize)
        return [self.fold_added(score, n) for score, n in zip(out, added, strict=True)]

    async def score_server_async(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[RowScore]:
        import httpx

        rows, added = self._server_rows(rows)
        url, body, headers = self._request(rows)
        async with httpx.AsyncClient(timeout=self.options.timeout) as client:
            reply = await client.post(url, json=body, headers=headers)
        if reply.status_code != 200:
            raise RuntimeError(f"rewardlab serve at {url}: HTTP {reply.status_code}: {reply.text[:300]}")
        scores = _server_scores(reply.json(), len(rows), self.options.normalize)
        return [self.fold_added(score, n) for score, n in zip(scores, added, strict=True)]

    def score(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[RowScore]:
        return self.score_server(rows) if self.options.server_url else self.score_local(rows)


def closing_after_eos(tokenizer: Any) -> tuple[str, list[int]] | None:
    """(assistant header text, ids the chat template puts after EOS when it closes an assistant turn), or None when the
    template closes turns with EOS alone (or there is no template). ChatML: ("<|im_start|>assistant\n", ids of "\n")."""
    from rewardlab.data.templates import assistant_turn_text, closing_ids_after_eos

    extra = closing_ids_after_eos(tokenizer)
    return (assistant_turn_text(tokenizer)[0], extra) if extra else None


def check_same_vocabulary(policy_tokenizer: Any, reward_tokenizer: Any) -> None:
    if policy_tokenizer.get_vocab() != reward_tokenizer.get_vocab():
        raise UserError(
            "the reward model's tokenizer differs from the policy's; token rewards are computed on the policy's "
            "token ids, so both must share one vocabulary (check_tokenizer=False to override)"
        )


def score_verl_batch(scorer: TokenRewardScorer, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """A verl batch (prompts, responses, input_ids, attention_mask[, response_mask]) -> ((B, L) float32 token rewards
    on the responses' device, {"rm_score": [R(x, y)], "rm_prompt_score": [R(x)]}). Rewards that fall on tokens outside
    `response_mask` are folded onto the policy's tokens (`fold_to_policy_tokens`)."""
    keys = set(batch.keys())  # verl's batch is a TensorDict: `in` on it raises, its keys() does not
    prompt_length = batch["prompts"].shape[-1]
    responses = batch["responses"]
    input_ids = batch["input_ids"] if "input_ids" in keys else torch.cat([batch["prompts"], responses], dim=-1)
    attention = batch["attention_mask"]
    scores = scorer.score(verl_rows(input_ids, attention, prompt_length))
    rewards = place_token_rewards([s.token_rewards for s in scores], attention[:, prompt_length:])
    if "response_mask" in keys:
        rewards = fold_to_policy_tokens(rewards, batch["response_mask"].cpu())
    extra: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        extra["rm_score"].append(s.reward)
        extra["rm_prompt_score"].append(s.prompt_reward)
    return rewards.to(responses.device), dict(extra)


# --- verl's legacy reward-manager interface (verl <= 0.7, reward_model.use_reward_loop=False) ---------------------------


class TokenRewardManager:
    """verl's legacy reward manager (`AbstractRewardManager`'s interface): dense token rewards from rewardlab.

    verl builds it inside its TaskRunner actor from the config alone (no registration in your process):

        reward_manager.source=importlib reward_manager.name=TokenRewardManager
        reward_manager.module.path=pkg://rewardlab.integrations.verl reward_model.use_reward_loop=False
        +reward_model.reward_kwargs.reward_model=/path/to/rm +reward_model.reward_kwargs.method=r3hf

    The constructor takes verl's arguments (tokenizer, num_examine, compute_score, reward_fn_key) and the reward kwargs
    (`VerlRewardOptions`). The reward model loads on the first call, once per process (verl builds a training and a
    validation manager; with the reward loop on, neither is called and nothing loads).
    """

    def __init__(
        self,
        tokenizer: Any = None,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        **reward_kwargs: Any,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.options = VerlRewardOptions.from_kwargs(reward_kwargs)
        self.scorer = TokenRewardScorer(self.options, tokenizer)
        if not isinstance(self.options.reward_model, str | os.PathLike | None):
            _ = self.scorer.rm  # a model object: check the vocabulary now

    def __call__(self, data: Any, return_dict: bool = False) -> torch.Tensor | dict[str, Any]:
        """verl's call: `data` is a DataProto with batch['prompts' | 'responses' | 'input_ids' | 'attention_mask' ...]."""
        rewards, extra = score_verl_batch(self.scorer, data.batch)
        if self.num_examine and self.tokenizer is not None:
            prompt_length = data.batch["prompts"].shape[-1]
            for i in range(min(self.num_examine, len(rewards))):
                valid = int(data.batch["attention_mask"][i, prompt_length:].sum())
                response = self.tokenizer.decode(data.batch["responses"][i, :valid])
                print("[response]", response, "[rm_score]", extra["rm_score"][i], "[sum]", float(rewards[i].sum()))
        if return_dict:
            return {"reward_tensor": rewards, "reward_extra_info": extra}
        return rewards
