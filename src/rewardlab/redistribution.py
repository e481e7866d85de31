"""Token-level rewards from a sequence reward model: R3HF / RED reward redistribution and its baselines.

Every method reads ONE forward pass of a frozen reward model whose score head is applied at every position:
`position_rewards[b, t] = R(x, tokens <= t)`. Sequences are padded on either side; `response_start[b]` is the index (in
the padded tensor) of the first response token, and the response runs from there to the last real token. All functions
return a (B, T) tensor aligned with the input, zero outside the response.

Notation below: response tokens y_1 .. y_n sit at positions s .. e (s = response_start, e = last real token);
R(x, y<=t) = position_rewards at the position of y_t, R(x) = position_rewards at s - 1 (the last prompt token), and
R(x, y) = R(x, y<=n) is the usual sequence reward.

One method reads a process reward model instead (`step`, objective "prm"): its head's logit s_k at each step's last
token (P(step k correct) = sigmoid(s_k)), and the step boundaries of the response (`step_ends`), which the caller knows
from the generated text (`rewardlab.rl.rollout.response_step_ends`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from rewardlab.errors import UserError
from rewardlab.masks import first_token_index, last_token_index, response_mask
from rewardlab.masks import positions as _positions

# The methods' coefficients, declared once: every config, command and server default reads these.
DEFAULT_BETA_C = 1.0  # mix: weight of the dense r3hf rewards vs sparse (R3HF Eq. 7); 1 is plain r3hf
DEFAULT_ABC_BETA = 0.8  # abc: weight of the attention-distributed part (Chan et al. 2024)


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
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    beta_c: float = DEFAULT_BETA_C,
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
    abc_beta: float = DEFAULT_ABC_BETA,
) -> torch.Tensor:
    """Attention-based credit (Chan et al. 2024): r_t = beta * a_t * R(x, y) + (1 - beta) * 1[t = n] * R(x, y), with
    beta = abc_beta.

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
    return abc_beta * weights * reward + (1.0 - abc_beta) * sparse


def step_rewards(
    position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor, step_ends: torch.Tensor
) -> torch.Tensor:
    """A process reward model's step scores as dense rewards: r_t = sigmoid(s_t) - 1/2 where token t ends a step
    (`step_ends`, (B, T) bool), zero elsewhere; `position_rewards` are the PRM's logits s_t.

    P - 1/2: bounded, positive exactly when the PRM judges the step more likely right than wrong, 0 for an undecided one.
    The sum over a response is sum_k (P_k - 1/2), a count of the steps judged right against those judged wrong, NOT an
    outcome reward: P_k is a verdict on step k alone (it is not a difference of one state function), so the rewards do
    not telescope to R(x, y) - R(x) and are not potential-based shaping of any outcome reward (docs/token_rewards.md).
    """
    ends = step_ends.to(device=position_rewards.device, dtype=torch.bool) & response_mask(attention_mask, response_start)
    return torch.where(ends, torch.sigmoid(position_rewards) - 0.5, 0.0)


# --- potentials -----------------------------------------------------------------------------------------------------

# A shaping with a state potential equals sparse plus potential-based shaping (Ng et al. 1999, gamma = 1):
# r_t = sparse_t + Phi_{t+1} - Phi_t with Phi = 0 after the last token and Phi_t a function of the state (x, y<t).
# Each takes the arguments of its method's reward function and returns Phi_t at each response token, zero elsewhere;
# r3hf's is `prefix_scores` itself (Phi_t = R(x, y<t)).


def sparse_potential(position_rewards: torch.Tensor, attention_mask: torch.Tensor, response_start: torch.Tensor) -> torch.Tensor:
    """sparse is its own shaping: Phi = 0."""
    return 0.0 * prefix_scores(position_rewards, attention_mask, response_start)


def mix_potential(
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    beta_c: float = DEFAULT_BETA_C,
) -> torch.Tensor:
    """mix: Phi_t = beta_c * R(x, y<t) (its dense part is beta_c times r3hf)."""
    return beta_c * prefix_scores(position_rewards, attention_mask, response_start)


# --- the registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRewardMethod:
    """One token-reward method and everything the rest of rewardlab needs to know about it (declared once, here)."""

    name: str
    rewards: Callable[..., torch.Tensor]  # (position_rewards, attention_mask, response_start, **coefficients) -> (B, T)
    # sum_t r_t = R(x, y) - R(x) exactly, at the default coefficients (mix: only at beta_c = 1, where it is r3hf)
    telescopes: bool = False
    # Phi_t of its potential-based shaping (same arguments as `rewards`), or None: `critic_init potential-offset` needs one
    potential: Callable[..., torch.Tensor] | None = None
    needs_attention: bool = False  # reads the reward model's last-layer attention (`attention=`)
    needs_step_ends: bool = False  # reads where each step of the response ends (`step_ends=`)
    # the reward model it reads: "preference" (a sequence reward model) or "prm" (`RewardModelConfig.objective`)
    objective: str = "preference"
    # its coefficients, by their keyword in `redistribute` (and in every config / flag), with their defaults
    coefficients: Mapping[str, float] = field(default_factory=dict, hash=False)

    @property
    def uses_potential(self) -> bool:
        return self.potential is not None

    def telescopes_with(self, beta_c: float = DEFAULT_BETA_C, abc_beta: float = DEFAULT_ABC_BETA) -> bool:
        """Whether sum_t r_t = R(x, y) - R(x) holds with these coefficients: declared at the defaults only."""
        given = {"beta_c": beta_c, "abc_beta": abc_beta}
        return self.telescopes and all(given[name] == default for name, default in self.coefficients.items())

    def keywords(self, beta_c: float, abc_beta: float) -> dict[str, float]:
        """The coefficients this method's functions take, out of every method's."""
        given = {"beta_c": beta_c, "abc_beta": abc_beta}
        return {name: given[name] for name in self.coefficients}


TOKEN_REWARD_METHODS: Mapping[str, TokenRewardMethod] = MappingProxyType(
    {
        method.name: method
        for method in (
            TokenRewardMethod("sparse", sparse_rewards, potential=sparse_potential),
            TokenRewardMethod("r3hf", r3hf_rewards, telescopes=True, potential=prefix_scores),
            TokenRewardMethod("r3hf-paper", r3hf_paper_rewards),
            TokenRewardMethod(
                "mix", mix_rewards, telescopes=True, potential=mix_potential, coefficients={"beta_c": DEFAULT_BETA_C}
            ),
            TokenRewardMethod("uniform", uniform_rewards),
            TokenRewardMethod("abc", abc_rewards, needs_attention=True, coefficients={"abc_beta": DEFAULT_ABC_BETA}),
            TokenRewardMethod("step", step_rewards, needs_step_ends=True, objective="prm"),
        )
    }
)
SHAPINGS = tuple(TOKEN_REWARD_METHODS)  # every method's name, in the order help texts list them (PPO takes them all)
# the methods on a sequence reward model: what `score --token-rewards`, the server and verl take
METHODS = tuple(name for name, method in TOKEN_REWARD_METHODS.items() if method.objective == "preference")
POTENTIAL_METHODS = tuple(name for name, method in TOKEN_REWARD_METHODS.items() if method.uses_potential)


def token_reward_method(name: str, flag: str = "method", choices: tuple[str, ...] = METHODS) -> TokenRewardMethod:
    """The registered method called `name` among `choices` (default: the sequence reward model's methods; PPO passes
    SHAPINGS); a one-line UserError naming `flag` (the setting that gave it) otherwise."""
    if name not in choices:
        raise UserError(f"{flag} {name!r}: unknown token-reward method; choose one of {', '.join(choices)}")
    return TOKEN_REWARD_METHODS[name]


def check_objective(method: TokenRewardMethod, objective: str, flag: str = "reward_shaping") -> None:
    """A one-line UserError unless `method` reads the kind of model given (`objective`: "preference" or "prm")."""
    if objective == method.objective:
        return
    if objective == "prm":
        raise UserError(
            f"{flag} {method.name!r} reads a sequence reward model, but the reward model is a process reward model "
            "(objective prm): use 'step'"
        )
    raise UserError(
        f"{flag} {method.name!r} reads a process reward model's step scores, but the reward model is a sequence reward "
        f"model (objective {objective}): train one with train-rm --objective prm, or choose one of {', '.join(METHODS)}"
    )


def methods_help(default: str | None = None, choices: tuple[str, ...] = METHODS) -> str:
    """`sparse (default) | r3hf | ...`: the choices for a help text, from the registry."""
    return " | ".join(f"{name} (default)" if name == default else name for name in choices)


# --- dispatch ------------------------------------------------------------------------------------------------------


def shaping_potential(
    method: str,
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    *,
    beta_c: float = DEFAULT_BETA_C,
) -> torch.Tensor:
    """(B, T) the shaping potential Phi_t of `method` at each response token's state: r3hf Phi_t = R(x, y<t) (Ng et al.
    1999 with gamma = 1), mix beta_c * R(x, y<t), sparse 0; zero outside the response.

    Then redistribute(method)_t = sparse_t + Phi_{t+1} - Phi_t, with Phi = 0 after the last token, so GAE on `method`'s
    rewards with a critic V - Phi gives exactly the TD errors of sparse rewards with the critic V.
    `r3hf-paper`, `uniform` and `abc` have no such potential (their difference from sparse depends on later tokens).
    """
    entry = token_reward_method(method, choices=SHAPINGS)
    if entry.potential is None:
        choices = ", ".join(POTENTIAL_METHODS)
        raise ValueError(f"'{method}' is not potential-based shaping with a state potential; use one of {choices}")
    keywords = entry.keywords(beta_c, DEFAULT_ABC_BETA)
    return entry.potential(position_rewards, attention_mask, response_start, **keywords)


def redistribute(
    method: str,
    position_rewards: torch.Tensor,
    attention_mask: torch.Tensor,
    response_start: torch.Tensor,
    *,
    beta_c: float = DEFAULT_BETA_C,
    abc_beta: float = DEFAULT_ABC_BETA,
    attention: torch.Tensor | None = None,
    step_ends: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T) token rewards by `method` (one of SHAPINGS); zero outside the response. See each method's docstring."""
    if position_rewards.shape != attention_mask.shape:
        raise ValueError(
            f"position_rewards {tuple(position_rewards.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
        )
    entry = token_reward_method(method, choices=SHAPINGS)
    keywords: dict = entry.keywords(beta_c, abc_beta)
    if entry.needs_attention:
        if attention is None:
            raise ValueError(f"method '{method}' needs the reward model's last-layer attention (attention=...)")
        keywords["attention"] = attention
    if entry.needs_step_ends:
        if step_ends is None:
            raise ValueError(f"method '{method}' needs where each step of the response ends (step_ends=...)")
        keywords["step_ends"] = step_ends
    return entry.rewards(position_rewards, attention_mask, response_start, **keywords)
