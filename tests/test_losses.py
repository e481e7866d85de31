import math

import pytest
import torch

from rewardlab.losses import (
    bradley_terry_loss,
    centering_penalty,
    dpo_regularizer,
    gather_steps,
    grm_stats,
    label_smoothing_loss,
    margin_loss,
    pairwise_accuracy,
    reward_loss,
    sft_nll_regularizer,
    sft_regularizer,
    step_bce_loss,
)

RC = [1.5, -0.3, 0.2]
RR = [0.5, 0.4, 0.2]


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def mean(xs):
    return sum(xs) / len(xs)


def t(xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_bradley_terry_matches_scalar_formula():
    expected = mean([-logsig(c - r) for c, r in zip(RC, RR, strict=True)])
    assert bradley_terry_loss(t(RC), t(RR)).item() == pytest.approx(expected, rel=1e-12)
    assert bradley_terry_loss(t([0.0]), t([0.0])).item() == pytest.approx(math.log(2))


def test_margin_loss_shifts_the_difference():
    m = [0.5, 1.0, 2.0]
    expected = mean([-logsig(c - r - mm) for c, r, mm in zip(RC, RR, m, strict=True)])
    assert margin_loss(t(RC), t(RR), t(m)).item() == pytest.approx(expected, rel=1e-12)
    # zero margin is plain Bradley-Terry
    assert margin_loss(t(RC), t(RR), t([0, 0, 0])).item() == pytest.approx(bradley_terry_loss(t(RC), t(RR)).item())


def test_label_smoothing():
    eps = 0.1
    expected = mean([-(1 - eps) * logsig(c - r) - eps * logsig(r - c) for c, r in zip(RC, RR, strict=True)])
    assert label_smoothing_loss(t(RC), t(RR), eps).item() == pytest.approx(expected, rel=1e-12)
    # label smoothing penalises very large margins, unlike BT: its minimiser is finite, at d = log((1-eps)/eps)
    d = torch.linspace(0, 10, 1001, dtype=torch.float64)
    best = d[torch.stack([label_smoothing_loss(x[None], torch.zeros(1, dtype=torch.float64), eps) for x in d]).argmin()]
    assert best.item() == pytest.approx(math.log(0.9 / 0.1), abs=0.01)


def test_centering_and_dispatch():
    c = centering_penalty(t(RC), t(RR)).item()
    assert c == pytest.approx(mean([(a + b) ** 2 for a, b in zip(RC, RR, strict=True)]))
    total = reward_loss("bt", t(RC), t(RR), center_coef=0.01).item()
    assert total == pytest.approx(bradley_terry_loss(t(RC), t(RR)).item() + 0.01 * c)
    with pytest.raises(ValueError, match="margin"):
        reward_loss("margin", t(RC), t(RR))
    with pytest.raises(ValueError, match="unknown"):
        reward_loss("hinge", t(RC), t(RR))


def test_grm_regularisers():
    logp_c, logp_r = [-12.0, -3.0], [-10.0, -7.0]
    ref_c, ref_r = [-11.0, -4.0], [-10.5, -6.0]
    beta = 0.1
    assert sft_regularizer(t(logp_c), beta).item() == pytest.approx(mean([-logsig(beta * x) for x in logp_c]))
    assert sft_nll_regularizer(t(logp_c)).item() == pytest.approx(7.5)
    dpo = mean([-logsig(beta * ((a - b) - (c - d))) for a, b, c, d in zip(logp_c, logp_r, ref_c, ref_r, strict=True)])
    assert dpo_regularizer(t(logp_c), t(logp_r), t(ref_c), t(ref_r), beta).item() == pytest.approx(dpo)
    noref = mean([-logsig(beta * (a - b)) for a, b in zip(logp_c, logp_r, strict=True)])
    assert dpo_regularizer(t(logp_c), t(logp_r), beta=beta).item() == pytest.approx(noref)


def test_grm_total_and_accuracy():
    stats = grm_stats(torch.tensor(2.0), torch.tensor(10.0), 0.01, {})
    assert stats["loss"].item() == pytest.approx(0.99 * 2 + 0.01 * 10)
    assert (stats["reward_term"].item(), stats["reg_term"].item()) == pytest.approx((0.99 * 2, 0.01 * 10))
    assert (stats["reward_loss"].item(), stats["reg_loss"].item()) == (2.0, 10.0)
    plain = grm_stats(torch.tensor(2.0), None, 0.5, {})  # no regulariser: alpha is ignored
    assert (plain["loss"].item(), plain["reg_term"].item()) == (2.0, 0.0) and "reg_loss" not in plain
    # a tie counts one half
    assert pairwise_accuracy(t([1.0, 0.0, 2.0, 1.0]), t([0.0, 1.0, 2.0, 0.5])).item() == pytest.approx(2.5 / 4)


def test_pairwise_accuracy_counts_ties_as_half_and_reports_exact_fractions():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0])
    assert pairwise_accuracy(chosen, rejected, torch.float64).item() == (1 + 0 + 0.5) / 3
    assert pairwise_accuracy(chosen[:2], rejected[:2]).dtype == torch.float32  # training stats stay in float32


def test_step_bce_matches_a_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    labelled = torch.tensor([[True, True, False], [True, False, False]])

    def bce(s, y):
        p = 1 / (1 + math.exp(-s))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    by_hand = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.3, 0)) / 3
    assert step_bce_loss(logits, labels, labelled).item() == pytest.approx(by_hand, rel=1e-6)


def test_no_labelled_step_gives_zero_with_a_gradient():
    logits = torch.zeros(2, 2, requires_grad=True)
    loss = step_bce_loss(logits, torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and logits.grad.abs().sum() == 0


def test_gather_steps_reads_each_step_end():
    rewards = torch.arange(12.0).reshape(2, 6)
    ends = torch.tensor([[1, 4, -1], [0, 2, 5]])
    assert gather_steps(rewards, ends).tolist() == [[1.0, 4.0, 0.0], [6.0, 8.0, 11.0]]
