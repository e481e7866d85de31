"""The tensors of a rollout: a batch of sampled responses (`ResponseBatch`), reading model outputs at its response tokens,
and everything one rollout computes (`Rollout`).

Layout: prompt (left padded, width P) + response (right padded, width R), so response token t of every row sits at column
P + t; a causal LM's logits at column P + t - 1 predict it, and a critic's value there is V_t on the state (x, y<t).
Chat turns that a policy stopped at EOS are scored closed as the template closes them (`with_closing_tokens`).
A process reward model reads the response as it was trained to (`prm_view`: the steps, each ended by the separator) at
each step's last token (`response_step_ends`), for `--reward-shaping step`; `step_row_scores` does the same on
(prompt ids, response ids) rows, as RL engines hold them (verl's local scorer and the server's `/score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rewardlab.data.types import DEFAULT_STEP_SEPARATOR, Text
from rewardlab.errors import UserError
from rewardlab.generation import Sample
from rewardlab.masks import pad_rows, position_ids_from_mask
from rewardlab.modeling.reward_model import RewardModel
from rewardlab.modeling.service import SequenceScore
from rewardlab.redistribution import DEFAULT_ABC_BETA, DEFAULT_BETA_C, redistribute, shaping_potential
from rewardlab.rl.ppo_math import RunningMoments


@dataclass
class ResponseBatch:
    """prompt (left padded, width P) + response (right padded, width R): response token t sits at column P + t."""

    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    response_ids: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) float: 1 on response tokens, EOS included
    context_width: int  # P

    def to(self, device: torch.device) -> ResponseBatch:
        return ResponseBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.response_ids.to(device),
            self.mask.to(device),
            self.context_width,
        )

    def response_start(self) -> torch.Tensor:
        """(B,) the column of every row's first response token: P."""
        return torch.full((self.input_ids.shape[0],), self.context_width, device=self.input_ids.device)

    def rows(self, index: torch.Tensor | slice) -> ResponseBatch:
        return ResponseBatch(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_ids[index],
            self.mask[index],
            self.context_width,
        )


def build_response_batch(samples: list[Sample], pad_id: int) -> ResponseBatch:
    prompt_ids, prompt_mask = pad_rows([s.prompt_ids for s in samples], pad_id, "left")
    response_ids, mask = pad_rows([s.response_ids for s in samples], pad_id, "right", min_width=1)
    return ResponseBatch(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, mask], dim=1),
        response_ids=response_ids,
        mask=mask.float(),
        context_width=prompt_ids.shape[1],
    )


def response_logits(model: nn.Module, batch: ResponseBatch, temperature: float) -> torch.Tensor:
    """(B, R, V) logits / temperature that predict the response tokens (the columns P - 1 .. P + R - 2)."""
    width = batch.response_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids_from_mask(batch.attention_mask),  # as generate() numbers left-padded rows
        use_cache=False,
        logits_to_keep=width + 1,
    )
    return out.logits[:, :-1].float() / temperature


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: (B, R, V), (B, R) -> (B, R)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_values(critic: RewardModel, batch: ResponseBatch) -> torch.Tensor:
    """(B, R) V_t = the critic's head at the position before response token t (state = prompt + y<t)."""
    width = batch.response_ids.shape[1]
    positions = critic(batch.input_ids, batch.attention_mask).position_rewards
    return positions[:, batch.context_width - 1 : batch.context_width - 1 + width].float()


def response_token_scores(
    method: str,
    position_rewards: torch.Tensor,
    batch: ResponseBatch,
    *,
    beta_c: float = DEFAULT_BETA_C,
    abc_beta: float = DEFAULT_ABC_BETA,
    attention: torch.Tensor | None = None,
    step_ends: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, R) token scores on the response tokens from the reward model's (B, P + R) position rewards (what the scoring
    service's `forward_padded` gives PPO's reward pass in one go; `step`: a PRM's logits, with `step_ends` (B, P + R)
    where each step ends, as `response_step_scores` computes them)."""
    scores = redistribute(
        method,
        position_rewards,
        batch.attention_mask,
        batch.response_start().to(position_rewards.device),
        beta_c=beta_c,
        abc_beta=abc_beta,
        attention=attention,
        step_ends=step_ends,
    )
    return scores[:, batch.context_width :] * batch.mask


def response_potential(
    method: str, position_rewards: torch.Tensor, batch: ResponseBatch, *, beta_c: float = DEFAULT_BETA_C
) -> torch.Tensor:
    """(B, R) the shaping potential Phi_t on the state before each response token (r3hf: R(x, y<t)); see
    `redistribution.shaping_potential`. Read at the columns the critic's V_t is read at."""
    response_start = batch.response_start().to(position_rewards.device)
    potential = shaping_potential(method, position_rewards, batch.attention_mask, response_start, beta_c=beta_c)
    return potential[:, batch.context_width :] * batch.mask


def with_closing_tokens(batch: ResponseBatch, closing: list[int], rows: torch.Tensor) -> ResponseBatch:
    """`batch` with `closing` appended after the response of each row where `rows` (B,) is True, as the reward model
    saw such turns in training (`closing` from `rewardlab.data.templates.closing_ids_after_eos`). The response width
    grows by len(closing); other rows are unchanged."""
    k = len(closing)
    if k == 0 or not bool(rows.any()):
        return batch
    n, width = batch.response_ids.shape
    response_ids = torch.cat([batch.response_ids, batch.response_ids.new_zeros(n, k)], dim=1)
    mask = torch.cat([batch.mask, batch.mask.new_zeros(n, k)], dim=1)
    where = rows.nonzero().squeeze(1)
    columns = batch.mask[where].sum(1).long().unsqueeze(1) + torch.arange(k, device=where.device)  # just past the EOS
    response_ids[where.unsqueeze(1), columns] = torch.tensor(closing, device=response_ids.device)
    mask[where.unsqueeze(1), columns] = 1.0
    context = batch.context_width
    input_ids = torch.cat([batch.input_ids[:, :context], response_ids], dim=1)
    attention_mask = torch.cat([batch.attention_mask[:, :context], mask.to(batch.attention_mask.dtype)], dim=1)
    return ResponseBatch(input_ids, attention_mask, response_ids, mask, context)


def separator_token_id(tokenizer, separator: str = DEFAULT_STEP_SEPARATOR) -> int:
    """The one token `separator` encodes to; a one-line UserError for a tokenizer that splits it (step rewards end the
    final step with it in place of EOS)."""
    ids = tokenizer(separator, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise UserError(f"step rewards need a tokenizer that writes the step separator {separator!r} as one token, got {ids}")
    return ids[0]


def response_step_ends(
    batch: ResponseBatch, finished: torch.Tensor, tokenizer, separator: str = DEFAULT_STEP_SEPARATOR
) -> torch.Tensor:
    """(B, R) bool: the last token of each complete step of each response, read off the generated text: every token
    whose text holds the separator, and the EOS of a finished response (which ends its final step). The final line of an
    unfinished response (cut at max_new_tokens) is no complete step and ends nowhere."""
    unique = batch.response_ids[batch.mask.bool()].unique().tolist()
    holding = [i for i in unique if separator in tokenizer.decode([i])]
    ends = torch.isin(batch.response_ids, torch.tensor(holding, dtype=batch.response_ids.dtype, device=batch.mask.device))
    ends &= batch.mask.bool()
    last = (batch.mask.sum(1).long() - 1).clamp_min(0)
    at_eos = torch.zeros_like(ends)
    at_eos[torch.arange(len(last), device=last.device), last] = True
    return ends | (at_eos & finished.bool().unsqueeze(1) & batch.mask.bool())


def prm_view(batch: ResponseBatch, finished: torch.Tensor, separator_id: int) -> ResponseBatch:
    """`batch` as a PRM was trained to read it: the response's steps each ended by the separator, i.e. a finished
    response's EOS replaced by the separator token (same width; the PRM's score at that token is its final step's).
    Causal, so no closing tokens matter: every score is read at or before the last step's end."""
    last = (batch.mask.sum(1).long() - 1).clamp_min(0)
    rows = torch.arange(len(last), device=last.device)[finished.bool()]
    response_ids = batch.response_ids.clone()
    response_ids[rows, last[rows]] = separator_id
    input_ids = torch.cat([batch.input_ids[:, : batch.context_width], response_ids], dim=1)
    return ResponseBatch(input_ids, batch.attention_mask, response_ids, batch.mask, batch.context_width)


def response_step_scores(
    reward_model: RewardModel, batch: ResponseBatch, finished: torch.Tensor, tokenizer, separator_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """((B,) return, (B, R) token scores) of `--reward-shaping step`: one PRM forward pass on `prm_view(batch)`; token t
    gets sigmoid(s_t) - 1/2 where it ends a step (`response_step_ends`), 0 elsewhere; the return is their sum."""
    ends = response_step_ends(batch, finished, tokenizer)
    viewed = prm_view(batch, finished, separator_id)
    logits = reward_model(viewed.input_ids, viewed.attention_mask).position_rewards.float()
    columns = torch.zeros_like(viewed.attention_mask, dtype=torch.bool)
    columns[:, batch.context_width :] = ends
    scores = response_token_scores("step", logits, viewed, step_ends=columns)
    return scores.sum(1), scores


def step_row_scores(
    reward_model: RewardModel, rows: Sequence[tuple[Sequence[int], Sequence[int]]], tokenizer, batch_size: int
) -> list[SequenceScore]:
    """`response_step_scores` on (prompt ids, response ids) rows, `batch_size` rows per forward pass, in input order: per
    row the return as `reward`, `prompt_reward` 0 (a PRM has no R(x)), and one token reward per response token. A
    response whose last token is the tokenizer's EOS is finished (EOS ends its final step); any other is cut mid-step.
    No chat closing is added: the PRM reads every step at or before its end (`prm_view`)."""
    separator, eos = separator_token_id(tokenizer), tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(reward_model.parameters()).device
    out: list[SequenceScore] = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        samples = [Sample(0, list(p), list(r), bool(r) and r[-1] == eos, "") for p, r in chunk]
        batch = build_response_batch(samples, pad).to(device)
        finished = torch.tensor([s.finished for s in samples], device=device)
        with torch.no_grad():
            total, scores = response_step_scores(reward_model, batch, finished, tokenizer, separator)
        out += [
            SequenceScore(float(total[i]), 0.0, s.response_ids, scores[i, : len(s.response_ids)].tolist())
            for i, s in enumerate(samples)
        ]
    return out


@dataclass
class Rollout:
    prompts: list[Text]  # one per response
    texts: list[str]
    batch: ResponseBatch
    finished: torch.Tensor  # (B,) bool
    logprobs: torch.Tensor  # (B, R) log pi_old
    ref_logprobs: torch.Tensor  # (B, R)
    entropy: torch.Tensor  # (B, R)
    values: torch.Tensor | None  # (B, R) V_t as GAE uses it: the critic's output minus `value_offset`
    sequence_scores: torch.Tensor  # (B,) R(x, y), raw
    token_scores: torch.Tensor  # (B, R) after penalty and normalisation
    kl: torch.Tensor  # (B, R) per-token KL estimate
    rewards: torch.Tensor  # (B, R) token_scores - beta * kl
    advantages: torch.Tensor  # (B, R)
    returns: torch.Tensor  # (B, R)
    gold: torch.Tensor | None = None  # (B,)
    timings: dict[str, float] = field(default_factory=dict)
    value_offset: torch.Tensor | None = None  # (B, R) potential-offset: the frozen Phi_t, in token-score units
    # training state as it would be after this rollout; `PPOTrainer.commit` adopts it (a measurement rollout does not)
    reward_moments: RunningMoments | None = None
    reinforce_baseline: float | None = None
