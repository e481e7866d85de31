"""Token-reward methods on hand-made tensors (left and right padding), checked against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from rewardlab.errors import UserError
from rewardlab.masks import response_mask
from rewardlab.redistribution import (
    DEFAULT_ABC_BETA,
    DEFAULT_BETA_C,
    METHODS,
    POTENTIAL_METHODS,
    SHAPINGS,
    TOKEN_REWARD_METHODS,
    final_token_attention,
    prompt_rewards,
    redistribute,
    sequence_rewards,
    shaping_potential,
    token_reward_method,
)

PAD_VALUE = 99.0  # reward-head output at padding positions: must never leak into any result


def pad_batch(rows: list[tuple[list[float], int]], side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """rows of (position rewards of the real tokens, prompt length) -> padded (rewards, mask, response_start)."""
    length = max(len(values) for values, _ in rows)
    rewards, masks, starts = [], [], []
    for values, prompt_len in rows:
        n_pad = length - len(values)
        if side == "right":
            rewards.append(values + [PAD_VALUE] * n_pad)
            masks.append([1] * len(values) + [0] * n_pad)
            starts.append(prompt_len)
        else:
            rewards.append([PAD_VALUE] * n_pad + values)
            masks.append([0] * n_pad + [1] * len(values))
            starts.append(n_pad + prompt_len)
    return torch.tensor(rewards), torch.tensor(masks), torch.tensor(starts)


def unpad(token_rewards: torch.Tensor, mask: torch.Tensor, starts: torch.Tensor) -> list[list[float]]:
    """The response part of each row, and a check that everything outside it is exactly zero."""
    out = []
    for row, row_mask, start in zip(token_rewards, mask, starts, strict=True):
        last = int(row_mask.nonzero().max())
        response = row[int(start) : last + 1]
        outside = torch.cat([row[: int(start)], row[last + 1 :]])
        assert torch.all(outside == 0), outside
        out.append(response.tolist())
    return out


# Row 0: prompt of 2 tokens, response of 3. Row 1: prompt of 3, response of 1. Row 2: prompt of 1, response of 2.
ROWS = [
    ([0.5, 1.0, 3.0, 2.0, 6.0], 2),
    ([0.2, 0.1, -1.0, 4.0], 3),
    ([-2.0, 1.5, -0.5], 1),
]
# Hand-computed responses per method (R(x) = 1.0, -1.0, -2.0; R(x, y) = 6.0, 4.0, -0.5).
EXPECTED = {
    "sparse": [[0.0, 0.0, 6.0], [4.0], [0.0, -0.5]],
    "r3hf": [[2.0, -1.0, 4.0], [5.0], [3.5, -2.0]],
    "r3hf-paper": [[0.0, -1.0, 6.0], [4.0], [0.0, -0.5]],
    "uniform": [[2.0, 2.0, 2.0], [4.0], [-0.25, -0.25]],
}


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_methods_match_hand_computed_values(method: str, side: str) -> None:
    rewards, mask, starts = pad_batch(ROWS, side)
    token_rewards = redistribute(method, rewards, mask, starts)
    assert token_rewards.shape == rewards.shape
    for got, want in zip(unpad(token_rewards, mask, starts), EXPECTED[method], strict=True):
        assert got == pytest.approx(want)


@pytest.mark.parametrize("side", ["left", "right"])
def test_prompt_and_sequence_rewards(side: str) -> None:
    rewards, mask, starts = pad_batch(ROWS, side)
    assert prompt_rewards(rewards, mask, starts).tolist() == pytest.approx([1.0, -1.0, -2.0])
    assert sequence_rewards(rewards, mask).tolist() == pytest.approx([6.0, 4.0, -0.5])


@pytest.mark.parametrize("side", ["left", "right"])
def test_mix_is_eq7_and_sums(side: str) -> None:
    rewards, mask, starts = pad_batch(ROWS, side)
    beta_c = 0.25
    mixed = redistribute("mix", rewards, mask, starts, beta_c=beta_c)
    # Row 0 by hand: 0.25 * [2, -1, 4] + 0.75 * [0, 0, 6].
    assert unpad(mixed, mask, starts)[0] == pytest.approx([0.5, -0.25, 5.5])
    # Sum = R(x, y) - beta_c * R(x).
    assert mixed.sum(-1).tolist() == pytest.approx([6.0 - 0.25 * 1.0, 4.0 + 0.25 * 1.0, -0.5 + 0.25 * 2.0])
    # Default beta_c = 1 is plain r3hf; beta_c = 0 is sparse.
    assert torch.equal(redistribute("mix", rewards, mask, starts), redistribute("r3hf", rewards, mask, starts))
    assert torch.allclose(redistribute("mix", rewards, mask, starts, beta_c=0.0), redistribute("sparse", rewards, mask, starts))


def naive_r3hf(values: list[float], prompt_len: int) -> list[float]:
    """Loop version of r_t = R(x, y<=t) - R(x, y<t) with R(x, y<1) = R(x)."""
    previous = values[prompt_len - 1] if prompt_len > 0 else 0.0
    out = []
    for value in values[prompt_len:]:
        out.append(value - previous)
        previous = value
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_r3hf_random_batch_matches_loop_and_telescopes(side: str) -> None:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(6):
        prompt_len = int(torch.randint(1, 6, (1,), generator=generator))
        response_len = int(torch.randint(1, 9, (1,), generator=generator))
        rows.append((torch.randn(prompt_len + response_len, generator=generator).tolist(), prompt_len))
    rewards, mask, starts = pad_batch(rows, side)
    token_rewards = redistribute("r3hf", rewards, mask, starts)
    for got, (values, prompt_len) in zip(unpad(token_rewards, mask, starts), rows, strict=True):
        assert got == pytest.approx(naive_r3hf(values, prompt_len), abs=1e-6)
    telescoped = sequence_rewards(rewards, mask) - prompt_rewards(rewards, mask, starts)
    assert torch.allclose(token_rewards.sum(-1), telescoped, atol=1e-5)
    # The paper reading: sum = R(x, y) + R(x, y<n) - R(x, y<=1) for n >= 2 (every row here has n >= 2 or is n = 1).
    paper = redistribute("r3hf-paper", rewards, mask, starts).sum(-1)
    for row_sum, (values, prompt_len) in zip(paper.tolist(), rows, strict=True):
        n = len(values) - prompt_len
        want = values[-1] + values[-2] - values[prompt_len] if n >= 2 else values[-1]
        assert row_sum == pytest.approx(want, abs=1e-5)


def test_no_prompt_takes_r_of_x_as_zero_under_left_padding() -> None:
    # Empty prompt, left padded: the position before the response is padding (PAD_VALUE), not R(x).
    rewards, mask, starts = pad_batch([([1.0, 2.0], 0), ([0.5, 1.0, 3.0, 5.0], 1)], "left")
    assert prompt_rewards(rewards, mask, starts).tolist() == pytest.approx([0.0, 0.5])
    assert unpad(redistribute("r3hf", rewards, mask, starts), mask, starts)[0] == pytest.approx([1.0, 1.0])


def test_empty_response_gets_no_reward() -> None:
    rewards, mask, starts = pad_batch([([1.0, 2.0, 3.0], 3), ([1.0, 2.0], 1)], "right")
    for method in ("sparse", "r3hf", "r3hf-paper", "uniform", "mix"):
        assert torch.all(redistribute(method, rewards, mask, starts)[0] == 0), method
    assert not response_mask(mask, starts)[0].any()


# ABC: pre-averaged attention of the final token over row 0's 5 real positions (prompt .1 .2; response .3 .1 .3).
ABC_ATTENTION = [0.1, 0.2, 0.3, 0.1, 0.3]


def abc_by_hand(beta: float) -> list[float]:
    weights = [0.3 / 0.7, 0.1 / 0.7, 0.3 / 0.7]
    out = [beta * w * 6.0 for w in weights]
    out[-1] += (1 - beta) * 6.0
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_abc_pre_averaged_attention(side: str) -> None:
    rewards, mask, starts = pad_batch(ROWS[:1] + [([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0], 4)], side)
    attention = torch.zeros_like(rewards)
    real = mask.bool()
    attention[0][real[0]] = torch.tensor(ABC_ATTENTION)
    attention[1][real[1]] = torch.full((7,), 1 / 7)
    token_rewards = redistribute("abc", rewards, mask, starts, attention=attention, abc_beta=0.8)
    responses = unpad(token_rewards, mask, starts)
    assert responses[0] == pytest.approx(abc_by_hand(0.8))
    # Equal attention on the response: beta * R / n on each token plus (1 - beta) * R on the last.
    assert responses[1] == pytest.approx([0.8 * 7 / 3, 0.8 * 7 / 3, 0.8 * 7 / 3 + 0.2 * 7])
    assert token_rewards.sum(-1).tolist() == pytest.approx([6.0, 7.0])


@pytest.mark.parametrize("side", ["left", "right"])
def test_abc_full_attention_reads_final_token_row_and_averages_heads(side: str) -> None:
    rewards, mask, starts = pad_batch(ROWS[:1], side)
    length = rewards.shape[1]
    generator = torch.Generator().manual_seed(1)
    attention = torch.rand(1, 2, length, length, generator=generator)  # every other row is noise
    last = int(mask[0].nonzero().max())
    row = torch.zeros(length)
    row[mask[0].bool()] = torch.tensor(ABC_ATTENTION)
    attention[0, 0, last] = row + 0.05 * mask[0]  # heads differ; their mean is `row`
    attention[0, 1, last] = row - 0.05 * mask[0]
    assert torch.allclose(final_token_attention(attention, mask)[0], row)
    token_rewards = redistribute("abc", rewards, mask, starts, attention=attention)  # default beta 0.8
    assert unpad(token_rewards, mask, starts)[0] == pytest.approx(abc_by_hand(0.8))


def test_abc_requires_attention_and_unknown_method_is_rejected() -> None:
    rewards, mask, starts = pad_batch(ROWS, "right")
    with pytest.raises(ValueError, match="attention"):
        redistribute("abc", rewards, mask, starts)
    with pytest.raises(ValueError, match="unknown token-reward method"):
        redistribute("nope", rewards, mask, starts)
    assert set(METHODS) == {"sparse", "r3hf", "r3hf-paper", "mix", "uniform", "abc"}


@pytest.mark.parametrize("method", METHODS)
def test_padding_side_does_not_change_response_rewards(method: str) -> None:
    outputs = []
    attention_right = None
    for side in ("right", "left"):
        rewards, mask, starts = pad_batch(ROWS, side)
        attention = torch.where(mask.bool(), torch.linspace(0.1, 1.0, rewards.shape[1]), 0.0)
        attention = attention / attention.sum(-1, keepdim=True)
        if attention_right is not None:  # left: the same per-token attention values, shifted with the tokens
            attention = torch.stack(
                [torch.roll(a, shifts=int((m == 0).sum())) for a, m in zip(attention_right, mask, strict=True)]
            )
        else:
            attention_right = attention
        token_rewards = redistribute(method, rewards, mask, starts, attention=attention, beta_c=0.5)
        outputs.append(unpad(token_rewards, mask, starts))
    for left, right in zip(*outputs, strict=True):
        assert left == pytest.approx(right)


@pytest.mark.parametrize("side", ["left", "right"])
def test_shaping_potential_is_the_prefix_score(side: str) -> None:
    """r3hf's potential at response token y_t is R(x, y<t) (R(x) for the first token); mix scales it by beta_c; sparse has
    none; and r_t = sparse_t + Phi_{t+1} - Phi_t with Phi = 0 after the last token (hand values, ROWS above)."""
    rewards, mask, starts = pad_batch(ROWS, side)
    r3hf = unpad(shaping_potential("r3hf", rewards, mask, starts), mask, starts)
    assert r3hf == [[1.0, 3.0, 2.0], [-1.0], [-2.0, 1.5]]
    mix = unpad(shaping_potential("mix", rewards, mask, starts, beta_c=0.25), mask, starts)
    assert mix == [[0.25, 0.75, 0.5], [-0.25], [-0.5, 0.375]]
    assert unpad(shaping_potential("sparse", rewards, mask, starts), mask, starts) == [[0.0] * 3, [0.0], [0.0] * 2]
    for method, kwargs in (("r3hf", {}), ("mix", {"beta_c": 0.25})):
        phi = unpad(shaping_potential(method, rewards, mask, starts, **kwargs), mask, starts)
        shaped = unpad(redistribute(method, rewards, mask, starts, **kwargs), mask, starts)
        for row, sparse_row, phi_row in zip(shaped, EXPECTED["sparse"], phi, strict=True):
            following = phi_row[1:] + [0.0]
            assert row == pytest.approx([s + b - a for s, a, b in zip(sparse_row, phi_row, following, strict=True)])
    for method in ("r3hf-paper", "uniform", "abc"):
        with pytest.raises(ValueError, match="state potential"):
            shaping_potential(method, rewards, mask, starts)


# --- the registry: each method's declared properties hold on random tensors -------------------------------------------


def random_batch(side: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random position rewards (R(x) far from 0), rows of different prompt / response lengths, and random attention."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(8):
        prompt_len = int(torch.randint(1, 6, (1,), generator=generator))
        response_len = int(torch.randint(2, 9, (1,), generator=generator))
        rows.append(((torch.randn(prompt_len + response_len, generator=generator) + 2.0).tolist(), prompt_len))
    rewards, mask, starts = pad_batch(rows, side)
    attention = torch.rand(rewards.shape, generator=generator) * mask
    return rewards, mask, starts, attention


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", METHODS)
def test_declared_telescoping_holds_numerically(name: str, side: str) -> None:
    """telescopes=True: sum_t r_t = R(x, y) - R(x) on every row (at the method's default coefficients); False: not in
    general (some row misses it by far more than float error)."""
    method = TOKEN_REWARD_METHODS[name]
    rewards, mask, starts, attention = random_batch(side)
    token_rewards = redistribute(name, rewards, mask, starts, attention=attention)
    gaps = (token_rewards.sum(-1) - (sequence_rewards(rewards, mask) - prompt_rewards(rewards, mask, starts))).abs()
    if method.telescopes:
        assert method.telescopes_with() and gaps.max() < 1e-5, gaps
    else:
        assert not method.telescopes_with() and gaps.max() > 0.1, gaps


@pytest.mark.parametrize("side", ["left", "right"])
def test_coefficients_off_their_defaults_break_telescoping_where_declared(side: str) -> None:
    rewards, mask, starts, _ = random_batch(side, seed=1)
    mix = TOKEN_REWARD_METHODS["mix"]
    assert mix.coefficients == {"beta_c": DEFAULT_BETA_C} and not mix.telescopes_with(beta_c=0.5)
    gap = redistribute("mix", rewards, mask, starts, beta_c=0.5).sum(-1) - (
        sequence_rewards(rewards, mask) - prompt_rewards(rewards, mask, starts)
    )
    assert gap.abs().max() > 0.1
    assert TOKEN_REWARD_METHODS["r3hf"].telescopes_with(beta_c=0.5, abc_beta=0.1)  # r3hf reads neither coefficient


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", METHODS)
def test_declared_potential_reproduces_the_rewards(name: str, side: str) -> None:
    """uses_potential: r_t = sparse_t + Phi_{t+1} - Phi_t (Phi = 0 after the last token); otherwise no potential."""
    method = TOKEN_REWARD_METHODS[name]
    rewards, mask, starts, attention = random_batch(side, seed=2)
    if not method.uses_potential:
        with pytest.raises(ValueError, match="state potential"):
            shaping_potential(name, rewards, mask, starts)
        return
    phi = shaping_potential(name, rewards, mask, starts, beta_c=0.3)
    following = torch.nn.functional.pad(phi[:, 1:], (0, 1)) * response_mask(mask, starts)  # Phi_{t+1}, 0 after the end
    sparse = redistribute("sparse", rewards, mask, starts)
    shaped = redistribute(name, rewards, mask, starts, beta_c=0.3, attention=attention)
    assert torch.allclose(shaped, sparse + following - phi, atol=1e-5)


def test_needs_attention_is_declared_and_checked() -> None:
    rewards, mask, starts, attention = random_batch("right")
    for name, method in TOKEN_REWARD_METHODS.items():
        if method.needs_step_ends:
            continue  # a PRM's step scores (tests/test_step_rl.py)
        if method.needs_attention:
            with pytest.raises(ValueError, match="attention"):
                redistribute(name, rewards, mask, starts)
        else:  # attention is never read: any tensor, or none, gives the same rewards
            assert torch.equal(
                redistribute(name, rewards, mask, starts), redistribute(name, rewards, mask, starts, attention=attention)
            )
    assert [n for n, m in TOKEN_REWARD_METHODS.items() if m.needs_attention] == ["abc"]
    assert TOKEN_REWARD_METHODS["abc"].coefficients == {"abc_beta": DEFAULT_ABC_BETA}


def test_registry_names_and_the_one_validation() -> None:
    assert SHAPINGS == tuple(TOKEN_REWARD_METHODS) == tuple(m.name for m in TOKEN_REWARD_METHODS.values())
    assert METHODS == tuple(n for n, m in TOKEN_REWARD_METHODS.items() if m.objective == "preference") == SHAPINGS[:-1]
    assert POTENTIAL_METHODS == ("sparse", "r3hf", "mix")
    assert token_reward_method("r3hf") is TOKEN_REWARD_METHODS["r3hf"]
    with pytest.raises(UserError) as err:
        token_reward_method("nope", "--token-rewards")
    message = str(err.value)
    assert message.startswith("--token-rewards 'nope': unknown token-reward method") and "\n" not in message
    assert message.endswith("choose one of " + ", ".join(METHODS))
    assert token_reward_method("step", choices=SHAPINGS).objective == "prm"
    with pytest.raises(UserError, match="unknown token-reward method"):
        token_reward_method("step", "--token-rewards")  # a sequence reward model's methods do not include it
