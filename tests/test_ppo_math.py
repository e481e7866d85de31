"""Tests for rewardlab.rl.ppo_math against hand-computed numbers and naive loops."""

from __future__ import annotations

import math

import pytest
import torch

from rewardlab.rl.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    entropy_from_logits,
    kl_per_token,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    reinforce_advantages,
    reward_to_go,
    rloo_advantages,
    shape_rewards,
    value_loss,
)

GARBAGE = 1e3  # value placed on padding positions: any leak into a result is obvious


def right_padded_mask(lengths: list[int], num_tokens: int) -> torch.Tensor:
    return (torch.arange(num_tokens)[None, :] < torch.tensor(lengths)[:, None]).float()


def assert_close(actual: torch.Tensor, expected: list | torch.Tensor, atol: float = 1e-6) -> None:
    expected_t = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected_t, atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------------- masked statistics


def test_masked_mean_var_match_selected_elements() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([7, 3, 5, 1], 7)
    x = torch.where(mask.bool(), x, torch.full_like(x, GARBAGE))
    selected = x[mask.bool()]
    assert_close(masked_mean(x, mask), selected.mean())
    assert_close(masked_mean(x, mask.bool()), selected.mean())
    assert_close(masked_var(x, mask), selected.var(unbiased=True))
    assert_close(masked_var(x, mask, unbiased=False), selected.var(unbiased=False))
    row_means = torch.stack([x[i, : int(mask[i].sum())].mean() for i in range(4)])
    assert_close(masked_mean(x, mask, dim=1), row_means)


def test_masked_mean_empty_row_is_zero_and_var_needs_two_elements() -> None:
    x = torch.tensor([[1.0, 2.0], [GARBAGE, GARBAGE]])
    mask = right_padded_mask([2, 0], 2)
    assert_close(masked_mean(x, mask, dim=1), [1.5, 0.0])
    with pytest.raises(ValueError):
        masked_var(x, right_padded_mask([1, 0], 2))


def test_masked_whiten() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, GARBAGE, GARBAGE]], dtype=torch.float64)
    mask = right_padded_mask([3, 1], 3)
    # real elements 1, 2, 3, 4: mean 2.5, unbiased var 5/3
    std = math.sqrt(5 / 3)
    expected = [[-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]]
    assert_close(masked_whiten(x, mask), expected, atol=1e-6)
    unshifted = [
        [v + 2.5 if m else 0.0 for v, m in zip(row, mrow, strict=True)] for row, mrow in zip(expected, mask.tolist(), strict=True)
    ]
    assert_close(masked_whiten(x, mask, shift_mean=False), unshifted, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------- KL


def test_kl_estimators_exact_values() -> None:
    logp, ref_logp = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])  # log ratios 0.5 and -1.0
    assert_close(kl_per_token(logp, ref_logp, "k1"), [0.5, -1.0])
    assert_close(kl_per_token(logp, ref_logp, "k2"), [0.125, 0.5])
    assert_close(kl_per_token(logp, ref_logp, "k3"), [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0])
    with pytest.raises(ValueError):
        kl_per_token(logp, ref_logp, "k4")  # type: ignore[arg-type]


def test_k3_is_nonnegative() -> None:
    gen = torch.Generator().manual_seed(1)
    logp, ref_logp = 5 * torch.randn(1000, generator=gen), 5 * torch.randn(1000, generator=gen)
    assert (kl_per_token(logp, ref_logp, "k3") >= 0).all()
    assert (kl_per_token(logp, ref_logp, "k2") >= 0).all()
    assert (kl_per_token(logp, ref_logp, "k1") < 0).any()  # k1 is only unbiased, not pointwise >= 0


def test_kl_estimators_are_unbiased_for_known_categoricals() -> None:
    pi = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    true_kl = float((pi * (pi / ref).log()).sum())
    logp_all, ref_all = pi.log(), ref.log()
    # Exact expectation under pi: k1 and k3 are unbiased, k2 is not.
    for estimator in ("k1", "k3"):
        expectation = float((pi * kl_per_token(logp_all, ref_all, estimator)).sum())
        assert expectation == pytest.approx(true_kl, abs=1e-12)
    assert float((pi * kl_per_token(logp_all, ref_all, "k2")).sum()) != pytest.approx(true_kl, abs=1e-3)
    # Monte-Carlo with a fixed seed.
    gen = torch.Generator().manual_seed(0)
    samples = torch.multinomial(pi, 200_000, replacement=True, generator=gen)
    for estimator in ("k1", "k3"):
        estimate = float(kl_per_token(logp_all[samples], ref_all[samples], estimator).mean())
        assert estimate == pytest.approx(true_kl, abs=0.01)


def test_fixed_kl_controller() -> None:
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=1000)
    assert controller.value == 0.05


def test_adaptive_kl_controller() -> None:
    controller = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=12.0, n_steps=256)  # error 1.0 clipped to 0.2
    expected = 0.1 * (1 + 0.2 * 256 / 10_000)
    assert controller.value == pytest.approx(expected, rel=1e-12)
    controller.update(current_kl=6.6, n_steps=100)  # error 0.1, inside the clip range
    expected *= 1 + 0.1 * 100 / 10_000
    assert controller.value == pytest.approx(expected, rel=1e-12)
    controller.update(current_kl=0.0, n_steps=100)  # error -1 clipped to -0.2
    expected *= 1 - 0.2 * 100 / 10_000
    assert controller.value == pytest.approx(expected, rel=1e-12)
    controller.update(current_kl=6.0, n_steps=100)  # on target: unchanged
    assert controller.value == pytest.approx(expected, rel=1e-12)


def test_shape_rewards() -> None:
    scores = torch.tensor([[0.0, 0.0, 2.0], [0.5, GARBAGE, GARBAGE]])
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, GARBAGE, GARBAGE]])
    ref_logp = torch.tensor([[-1.5, -1.0, -0.5], [-0.8, -GARBAGE, -GARBAGE]])
    mask = right_padded_mask([3, 1], 3)
    rewards, kl = shape_rewards(scores, logp, ref_logp, mask, kl_coef=0.1, estimator="k1")
    assert_close(kl, [[0.5, -1.0, 0.0], [-0.2, 0.0, 0.0]])
    assert_close(rewards, [[-0.05, 0.1, 2.0], [0.52, 0.0, 0.0]])
    _, kl_k2 = shape_rewards(scores, logp, ref_logp, mask, kl_coef=0.1, estimator="k2")
    assert_close(kl_k2, [[0.125, 0.5, 0.0], [0.02, 0.0, 0.0]])


# --------------------------------------------------------------------------------------------------------------- GAE


def test_gae_hand_computed_right_padded() -> None:
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, GARBAGE]], dtype=torch.float64)
    values = torch.tensor([[0.5, 1.0, -0.5], [0.2, 0.4, GARBAGE]], dtype=torch.float64)
    mask = right_padded_mask([3, 2], 3)
    # Row 0:  t=2: delta = 2 + 0.9*0 - (-0.5) = 2.5;            A = 2.5
    #         t=1: delta = 0 + 0.9*(-0.5) - 1.0 = -1.45;        A = -1.45 + 0.72*2.5 = 0.35
    #         t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4;             A = 1.4 + 0.72*0.35 = 1.652
    # Row 1 (2 real tokens; V after the last real token is 0, padding ignored):
    #         t=1: delta = 1.0 + 0 - 0.4 = 0.6;                 A = 0.6
    #         t=0: delta = 0.5 + 0.9*0.4 - 0.2 = 0.66;          A = 0.66 + 0.72*0.6 = 1.092
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    assert_close(advantages, [[1.652, 0.35, 2.5], [1.092, 0.6, 0.0]], atol=1e-12)
    assert_close(returns, [[2.152, 1.35, 2.0], [1.292, 1.0, 0.0]], atol=1e-12)


def test_gae_limits() -> None:
    gen = torch.Generator().manual_seed(3)
    rewards = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    values = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([5, 2, 4], 5)
    # lambda = 1: A_t = G_t - V_t (Monte-Carlo); returns = G_t.
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.7, lam=1.0)
    mc_returns = reward_to_go(rewards, mask, gamma=0.7)
    assert_close(advantages, (mc_returns - values) * mask, atol=1e-12)
    assert_close(returns, mc_returns, atol=1e-12)
    # lambda = 0: one-step TD error, with V = 0 after the last real token.
    advantages, _ = compute_gae(rewards, values, mask, gamma=0.7, lam=0.0)
    for b in range(3):
        n = int(mask[b].sum())
        for t in range(5):
            next_value = float(values[b, t + 1]) if t + 1 < n else 0.0
            expected = float(rewards[b, t] + 0.7 * next_value - values[b, t]) if t < n else 0.0
            assert float(advantages[b, t]) == pytest.approx(expected, abs=1e-12)


def test_gae_does_not_track_gradients() -> None:
    values = torch.ones(1, 3, requires_grad=True)
    advantages, returns = compute_gae(torch.ones(1, 3), values, torch.ones(1, 3))
    assert not advantages.requires_grad and not returns.requires_grad


# ------------------------------------------------------------------------------------------------------------ losses


def test_policy_loss_hand_computed() -> None:
    # (advantage, ratio) per real token, clip 0.2; loss term = max(-A r, -A clip(r, 0.8, 1.2)):
    #   ( 1, 1.1): max(-1.1, -1.1) = -1.1  inside the range
    #   ( 1, 1.5): max(-1.5, -1.2) = -1.2  clipped
    #   (-1, 0.5): max( 0.5,  0.8) =  0.8  clipped
    #   (-1, 0.9): max( 0.9,  0.9) =  0.9  inside the range
    #   ( 1, 0.5): max(-0.5, -0.8) = -0.5  outside the range but the unclipped term is the pessimistic one
    # mean = (-1.1 - 1.2 + 0.8 + 0.9 - 0.5) / 5 = -0.22; clipfrac = 2/5
    ratios = torch.tensor([[1.1, 1.5, 0.5], [0.9, 0.5, 3.0]], dtype=torch.float64)
    advantages = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 1.0, GARBAGE]], dtype=torch.float64)
    mask = right_padded_mask([3, 2], 3)
    old_logp = torch.full_like(ratios, -2.0)
    logp = (old_logp + ratios.log()).requires_grad_(True)
    loss, stats = policy_loss(logp, old_logp, advantages, mask, clip=0.2)
    assert loss.item() == pytest.approx(-0.22, abs=1e-12)
    assert float(stats["clipfrac"]) == pytest.approx(0.4, abs=1e-12)
    # approx_kl: k3 of KL(pi_old || pi) = mean(r - 1 - log r) over real tokens
    expected_kl = sum(r - 1 - math.log(r) for r in [1.1, 1.5, 0.5, 0.9, 0.5]) / 5
    assert float(stats["approx_kl"]) == pytest.approx(expected_kl, abs=1e-12)
    # Gradient: d/dlogp of -A r / 5 = -A r / 5 on active unclipped tokens, 0 on clipped ones and padding.
    loss.backward()
    expected_grad = [[-1.1 / 5, 0.0, 0.0], [0.9 / 5, -0.5 / 5, 0.0]]
    assert_close(logp.grad, expected_grad, atol=1e-12)


def test_value_loss_hand_computed() -> None:
    # (V_old, V, R), clip 0.2, V_clip = V_old + clip(V - V_old, -0.2, 0.2):
    #   (0, 0.1, 1): (0.9)^2 = 0.81, V_clip = 0.1 -> 0.81; max 0.81       not clipped
    #   (0, 0.5, 1): 0.25, V_clip = 0.2 -> 0.64;           max 0.64       clipped
    #   (0, 0.5, 0): 0.25, V_clip = 0.2 -> 0.04;           max 0.25       not clipped
    #   (1, 0.5, 2): 2.25, V_clip = 0.8 -> 1.44;           max 2.25       not clipped
    #   (1, 0.5, 0): 0.25, V_clip = 0.8 -> 0.64;           max 0.64       clipped
    # loss = 0.5 * (0.81 + 0.64 + 0.25 + 2.25 + 0.64) / 5 = 0.459; clipfrac = 0.4
    old_values = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, GARBAGE]], dtype=torch.float64)
    values = torch.tensor([[0.1, 0.5, 0.5], [0.5, 0.5, -GARBAGE]], dtype=torch.float64)
    returns = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, GARBAGE]], dtype=torch.float64)
    mask = right_padded_mask([3, 2], 3)
    loss, clipfrac = value_loss(values, old_values, returns, mask, clip=0.2)
    assert float(loss) == pytest.approx(0.459, abs=1e-12)
    assert float(clipfrac) == pytest.approx(0.4, abs=1e-12)


def test_entropy_from_logits_matches_explicit_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 4, 11, generator=gen, dtype=torch.float64)
    probs = torch.softmax(logits, dim=-1)
    expected = -(probs * probs.log()).sum(-1)
    assert_close(entropy_from_logits(logits), expected, atol=1e-10)
    # uniform -> log V; shift invariance and large logits stay finite
    assert_close(entropy_from_logits(torch.zeros(1, 1, 11)), [[math.log(11)]], atol=1e-6)
    big = logits.float() * 1e3
    assert torch.isfinite(entropy_from_logits(big)).all()
    assert_close(entropy_from_logits(logits + 1e4), expected, atol=1e-8)


def test_entropy_with_banned_tokens_is_finite_with_finite_gradient() -> None:
    logits = torch.tensor([[[0.0, 0.0, float("-inf"), float("-inf")]]], requires_grad=True)
    entropy = entropy_from_logits(logits)
    assert_close(entropy.detach(), [[math.log(2)]])
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


# ------------------------------------------------------------------------------------------------ REINFORCE and RLOO


def test_reward_to_go_matches_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([6, 3, 1, 0], 6)
    rewards = torch.where(mask.bool(), rewards, torch.full_like(rewards, GARBAGE))
    gamma = 0.9
    result = reward_to_go(rewards, mask, gamma=gamma)
    for b in range(4):
        n = int(mask[b].sum())
        for t in range(6):
            expected = sum(gamma ** (k - t) * float(rewards[b, k]) for k in range(t, n)) if t < n else 0.0
            assert float(result[b, t]) == pytest.approx(expected, abs=1e-12)


def test_rloo_matches_naive_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    group_size, num_groups, num_tokens = 3, 2, 5
    rewards = torch.randn(group_size * num_groups, num_tokens, generator=gen, dtype=torch.float64)
    mask = right_padded_mask([5, 2, 4, 1, 5, 3], num_tokens)
    token_returns = reward_to_go(rewards, mask)
    result = rloo_advantages(token_returns, mask, group_size)
    for i in range(group_size * num_groups):
        group = range((i // group_size) * group_size, (i // group_size + 1) * group_size)
        others = [float(token_returns[j, 0]) for j in group if j != i]
        baseline = sum(others) / len(others)
        for t in range(num_tokens):
            expected = float(token_returns[i, t]) - baseline if mask[i, t] else 0.0
            assert float(result[i, t]) == pytest.approx(expected, abs=1e-12)


def test_rloo_rejects_bad_groups() -> None:
    with pytest.raises(ValueError):
        rloo_advantages(torch.zeros(4, 2), torch.ones(4, 2), group_size=3)
    with pytest.raises(ValueError):
        rloo_advantages(torch.zeros(4, 2), torch.ones(4, 2), group_size=1)


def test_redistribution_cancels_in_sequence_advantages_but_not_per_token() -> None:
    """R3HF is potential-based shaping: the same total reward spread over tokens gives the same sequence-level RLOO
    advantage as the sparse EOS reward; only per-token returns G_t carry the difference."""
    group_size = 2
    mask = right_padded_mask([3, 2], 3)
    sparse = torch.tensor([[0.0, 0.0, 1.0], [0.0, -0.5, 0.0]], dtype=torch.float64)  # sequence score on EOS
    dense = torch.tensor([[0.7, -0.2, 0.5], [-1.0, 0.5, 0.0]], dtype=torch.float64)  # same sums: 1.0 and -0.5
    assert_close(dense.sum(1), sparse.sum(1))
    sparse_returns, dense_returns = reward_to_go(sparse, mask), reward_to_go(dense, mask)
    sparse_adv = rloo_advantages(sparse_returns, mask, group_size)
    dense_adv = rloo_advantages(dense_returns, mask, group_size)
    # Sequence level (t = 0, G_0 - baseline): identical. Hand values: 1.0 - (-0.5) = 1.5 and -0.5 - 1.0 = -1.5.
    assert_close(sparse_adv[:, 0], [1.5, -1.5], atol=1e-12)
    assert_close(dense_adv[:, 0], sparse_adv[:, 0], atol=1e-12)
    # Per token: sparse G_t is constant over the response, dense G_t is not.
    assert_close(sparse_adv, [[1.5, 1.5, 1.5], [-1.5, -1.5, 0.0]], atol=1e-12)
    assert_close(dense_adv, [[1.5, 0.8, 1.0], [-1.5, -0.5, 0.0]], atol=1e-12)


def test_reinforce_advantages() -> None:
    returns = torch.tensor([[3.0, 2.0, 1.0], [1.0, GARBAGE, GARBAGE]])
    mask = right_padded_mask([3, 1], 3)
    assert_close(reinforce_advantages(returns, mask, 1.0), [[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    per_sequence = torch.tensor([2.0, -1.0])
    assert_close(reinforce_advantages(returns, mask, per_sequence), [[1.0, 0.0, -1.0], [2.0, 0.0, 0.0]])
