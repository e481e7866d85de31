"""Token-level rewards from a sequence reward model: R3HF / RED reward redistribution and its baselines.

Every method reads ONE forward pass of a frozen reward model whose score head is applied at every position:
`position_rewards[b, t] = R(x, tokens <= t)`. Sequences are padded on either side; `response_start[b]` is the index (in
the padded tensor) of the first response token, and the response runs from there to the last real token. All functions
return a (B, T) tensor aligned with the input, zero outside the response.

Notation below: response tokens y_1 .. y_n sit at positions s .. e (s = response_start, e = last real token);
R(x, y<=t) = position_rewards at the position of y_t, R(x) = position_rewards at s - 1 (the last prompt token), and
R(x, y) = R(x, y<=n) is the usual sequence reward.
"""

from __future__ import annotations

import torch

from rewardlab.errors import UserError
from rewardlab.masks import first_token_index, last_token_index, response_mask
from rewardlab.masks import positions as _positions

METHODS = ("sparse", "r3hf", "r3hf-paper", "mix", "uniform", "abc")


# --- positions -----------------------------------------------------------------------------------------------------


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b]] with index clamped into range (callers mask out the invalid rows)."""
    safe = index.clamp(0, values.shape[-1] - 1).long()
    return values.gather(-1, safe.unsqueeze(-1)).squeeze(-1)


def sequence_rewards(position_rewards: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) R(x, y): the reward head at the last real token."""
    return _gather(position_rewards, last_token_index(attention_mask))


def prompt_rewards(position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """(B,) R(x): the reward head at the last prompt token (response_start - 1); 0 for a row with no prompt token."""
    index = response_start.to(position_rewards.device) - 1
    has_prompt = index >= first_token_index(attention_mask)
    return torch.where(has_prompt, _gather(position_rewards, index), torch.zeros_like(position_rewards[:, 0]))


# --- methods -------------------------------------------------------------------------------------------------------


def sparse_rewards(position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """The usual RLHF reward: r_t = R(x, y) * 1[t = n], zero elsewhere. Sum = R(x, y)."""
    positions = _positions(attention_mask)
    on_last = positions == last_token_index(attention_mask).unsqueeze(-1)
    on_last &= response_mask(attention_mask, response_start)  # an empty response gets no reward anywhere
    return torch.where(on_last, sequence_rewards(position_rewards, attention_mask).unsqueeze(-1), 0.0)


def prefix_scores(position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """(B, T) R(x, y<t) at the position of each response token y_t (the score of the state it is chosen in), with
    R(x, y<1) = R(x); zero outside the response."""
    positions = _positions(attention_mask)
    previous = torch.nn.functional.pad(position_rewards[:, :-1], (1, 0))  # previous[:, t] = R(tokens <= t - 1)
    # Left padding puts pads right before an empty prompt; R(x) handles that case (0), so use it at the first token.
    at_start = positions == response_start.to(positions.device).unsqueeze(-1)
    previous = torch.where(at_start, prompt_rewards(position_rewards, attention_mask, response_start).unsqueeze(-1), previous)
    return torch.where(response_mask(attention_mask, response_start), previous, 0.0)


def r3hf_rewards(position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """R3HF reward redistribution: r_t = R(x, y<=t) - R(x, y<t), with R(x, y<1) = R(x) (the prompt-only score).

    The sum telescopes: sum_t r_t = R(x, y) - R(x). (The paper assumes R(x) = 0; we keep it, so the sum is exact.)
    """
    previous = prefix_scores(position_rewards, attention_mask, response_start)
    return torch.where(response_mask(attention_mask, response_start), position_rewards - previous, 0.0)


def r3hf_paper_rewards(
    position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor
) -> torch.Tensor:
    """The R3HF paper's pseudo-code reading: r_1 = 0, r_t = R(x, y<=t) - R(x, y<t) for 1 < t < n, r_n = R(x, y).

    The last difference is REPLACED by the full sequence reward (for n = 1 the single token gets R(x, y)). Sum:
    R(x, y) + R(x, y<n) - R(x, y<=1) for n >= 2, and R(x, y) for n = 1.
    """
    positions = _positions(attention_mask)
    differences = r3hf_rewards(position_rewards, attention_mask, response_start)
    at_start = positions == response_start.to(positions.device).unsqueeze(-1)
    at_end = positions == last_token_index(attention_mask).unsqueeze(-1)
    rewards = torch.where(at_start, 0.0, differences)
    rewards = torch.where(at_end, sequence_rewards(position_rewards, attention_mask).unsqueeze(-1), rewards)
    return torch.where(response_mask(attention_mask, response_start), rewards, 0.0)


def mix_rewards(
    position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor, beta_c: float = 1.0
) -> torch.Tensor:
    """R3HF Eq. 7: r_hat_t = beta_c * r_t + (1 - beta_c) * r_t^RM (r3hf mixed with sparse).

    Sum = beta_c * (R(x, y) - R(x)) + (1 - beta_c) * R(x, y) = R(x, y) - beta_c * R(x).
    """
    dense = r3hf_rewards(position_rewards, attention_mask, response_start)
    sparse = sparse_rewards(position_rewards, attention_mask, response_start)
    return beta_c * dense + (1.0 - beta_c) * sparse


def uniform_rewards(position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """Baseline: the sequence reward spread evenly, r_t = R(x, y) / n. Sum = R(x, y)."""
    mask = response_mask(attention_mask, response_start)
    n_tokens = mask.sum(-1, keepdim=True).clamp_min(1)
    share = sequence_rewards(position_rewards, attention_mask).unsqueeze(-1) / n_tokens
    return torch.where(mask, share, 0.0)


def final_token_attention(attention: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) attention FROM the last real token TO every position, averaged over heads.

    `attention` is the last layer's (B, heads, T, T) attention; a (B, T) tensor is taken as already reduced.
    """
    if attention.dim() == 2:
        return attention
    if attention.dim() != 4:
        raise ValueError(f"attention must be (B, heads, T, T) or (B, T), got shape {tuple(attention.shape)}")
    batch, heads, _, length = attention.shape
    query = last_token_index(attention_mask).clamp_min(0).view(batch, 1, 1, 1).expand(batch, heads, 1, length)
    return attention.gather(2, query).squeeze(2).mean(dim=1)


def abc_rewards(
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    attention: torch.Tensor,
    beta: float = 0.8,
) -> torch.Tensor:
    """Attention-based credit (Chan et al. 2024): r_t = beta * a_t * R(x, y) + (1 - beta) * 1[t = n] * R(x, y).

    a_t is the last-layer attention of the final token to response token t, averaged over heads, restricted to the
    response and renormalised to sum to 1 (uniform if no attention lands on the response). Sum = R(x, y).
    """
    mask = response_mask(attention_mask, response_start)
    weights = torch.where(mask, final_token_attention(attention, attention_mask).to(position_rewards.dtype), 0.0)
    total = weights.sum(-1, keepdim=True)
    uniform = mask.to(weights.dtype) / mask.sum(-1, keepdim=True).clamp_min(1)
    weights = torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), uniform)
    reward = sequence_rewards(position_rewards, attention_mask).unsqueeze(-1)
    sparse = sparse_rewards(position_rewards, attention_mask, response_start)
    return beta * weights * reward + (1.0 - beta) * sparse


# --- potentials -----------------------------------------------------------------------------------------------------

# Shapings that equal sparse plus potential-based shaping with a potential that is a function of the state (x, y<t):
# r_t = sparse_t + Phi_{t+1} - Phi_t with gamma = 1 and Phi = 0 after the last token. Value: Phi's weight on R(x, y<t).
POTENTIAL_METHODS = ("sparse", "r3hf", "mix")


def shaping_potential(
    method: str,
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    *,
    beta_c: float = 1.0,
) -> torch.Tensor:
    """(B, T) the shaping potential Phi_t of `method` at each response token's state: r3hf Phi_t = R(x, y<t) (Ng et al.
    1999 with gamma = 1), mix beta_c * R(x, y<t), sparse 0; zero outside the response.

    Then redistribute(method)_t = sparse_t + Phi_{t+1} - Phi_t, with Phi = 0 after the last token, so GAE on `method`'s
    rewards with a critic V - Phi gives exactly the TD errors of sparse rewards with the critic V.
    `r3hf-paper`, `uniform` and `abc` have no such potential (their difference from sparse depends on later tokens).
    """
    weights = {"sparse": 0.0, "r3hf": 1.0, "mix": beta_c}
    if method not in weights:
        choices = ", ".join(POTENTIAL_METHODS)
        raise ValueError(f"'{method}' is not potential-based shaping with a state potential; use one of {choices}")
    return weights[method] * prefix_scores(position_rewards, attention_mask, response_start)


def redistribute(
    method: str,
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    *,
    beta_c: float = 1.0,
    abc_beta: float = 0.8,
    attention: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T) token rewards by `method` (one of METHODS); zero outside the response. See each method's docstring."""
    if position_rewards.shape != attention_mask.shape:
        raise ValueError(
            f"position_rewards {tuple(position_rewards.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
        )
    args = (position_rewards, attention_mask, response_start)
    if method == "sparse":
        return sparse_rewards(*args)
    if method == "r3hf":
        return r3hf_rewards(*args)
    if method == "r3hf-paper":
        return r3hf_paper_rewards(*args)
    if method == "mix":
        return mix_rewards(*args, beta_c=beta_c)
    if method == "uniform":
        return uniform_rewards(*args)
    if method == "abc":
        if attention is None:
            raise ValueError("method 'abc' needs the reward model's last-layer attention (attention=...)")
        return abc_rewards(*args, attention=attention, beta=abc_beta)
    raise UserError(f"unknown token-reward method {method!r}; choose one of {', '.join(METHODS)}")
