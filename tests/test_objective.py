"""The objective and one training step, against an independent computation: every sequence through the causal LM on its
own (no padding, no packing), rewards from the head at its last token, log pi(y|x) summed from the LM logits by hand,
and the papers' formulas written out here."""

import copy
import math

import pytest
import torch
from accelerate import Accelerator

from rewardlab.config import RewardObjectiveSpec
from rewardlab.data.pairs import collate_pairs, encode_pairs
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.objective import compute_loss
from rewardlab.rm_trainer.loop import training_step
from rewardlab.tasks.easy import easy_preferences
from rewardlab.train_rm import RewardTrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-4  # float32: the objective runs packed, the reference computation one sequence at a time
BETA = 0.5  # larger than the default 0.1, so a swapped chosen/rejected moves the regulariser well beyond TOL


def neg_log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(-x))


def make_model(seed: int = 0):
    """The tiny model with a frozen reference copy, then moved away from it, so dpo's reference log-ratio is not 0."""
    model = build_reward_model("tiny-llama", head_dropout=0.0, reference_copy=True, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.causal_lm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def make_batch(model, n_pairs: int = 4) -> dict[str, torch.Tensor]:
    pairs, _ = encode_pairs(model.tokenizer, easy_preferences(n_pairs, 3), max_length=256)
    return collate_pairs(pairs, model.tokenizer.pad_token_id)


def by_hand(model, batch, lm=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, summed response log-probs) of every row, each sequence alone through `lm` (default the model's own)."""
    lm = lm or model.causal_lm
    rewards, logps = [], []
    for ids, mask, response in zip(batch["input_ids"], batch["attention_mask"], batch["response_mask"], strict=True):
        length = int(mask.sum())
        ids, response = ids[:length], response[:length]
        out = lm(input_ids=ids[None], output_hidden_states=True)
        rewards.append(model.head(out.hidden_states[-1][0, length - 1]).squeeze())
        token_logp = torch.log_softmax(out.logits[0, :-1].float(), -1).gather(1, ids[1:, None]).squeeze(1)
        logps.append(token_logp[response[1:]].sum())  # token t is predicted at t-1; only response tokens count
    return torch.stack(rewards), torch.stack(logps)


def regularizer_by_hand(reg: str, lp_c, lp_r, ref_c, ref_r) -> torch.Tensor:
    """GRM's regularisers, chosen first as the paper writes them."""
    if reg == "sft":  # -log sigmoid(beta * log pi(y_c|x))
        return neg_log_sigmoid(BETA * lp_c).mean()
    if reg == "sft-nll":  # -log pi(y_c|x)
        return -lp_c.mean()
    if reg == "dpo":  # -log sigmoid(beta * ((log pi(y_c) - log pi(y_r)) - (log pi_ref(y_c) - log pi_ref(y_r))))
        return neg_log_sigmoid(BETA * ((lp_c - lp_r) - (ref_c - ref_r))).mean()
    assert reg == "dpo-noref"  # the same with the reference terms 0
    return neg_log_sigmoid(BETA * (lp_c - lp_r)).mean()


@pytest.fixture(scope="module")
def setup():
    model = make_model()
    batch = make_batch(model)
    n = batch["margin"].shape[0]
    with torch.no_grad():
        rewards, logps = by_hand(model, batch)
        _, ref = by_hand(model, batch, lm=model.reference)
    return model, batch, n, rewards, logps, ref


@pytest.mark.parametrize("reg", ["sft", "sft-nll", "dpo", "dpo-noref"])
def test_each_regulariser_reads_the_chosen_side_as_chosen(setup, reg):
    """Fails if chosen and rejected are swapped anywhere in a regulariser's call: the model's log-probs, the reference's,
    or both."""
    model, batch, n, rewards, logps, ref = setup
    with torch.no_grad():
        stats = compute_loss(model, batch, RewardObjectiveSpec(reg=reg, beta=BETA, alpha=0.3), True)
    lp_c, lp_r, ref_c, ref_r = logps[:n], logps[n:], ref[:n], ref[n:]
    expected = regularizer_by_hand(reg, lp_c, lp_r, ref_c, ref_r)
    swaps = {
        "model": regularizer_by_hand(reg, lp_r, lp_c, ref_c, ref_r),
        "reference": regularizer_by_hand(reg, lp_c, lp_r, ref_r, ref_c),
        "both": regularizer_by_hand(reg, lp_r, lp_c, ref_r, ref_c),
    }
    torch.testing.assert_close(stats["reg_loss"], expected, atol=TOL, rtol=TOL)
    for where, swapped in swaps.items():
        if reg != "dpo" and where == "reference":
            continue  # no reference in the formula: nothing to swap
        assert (swapped - expected).abs() > 50 * TOL, f"{reg}: swapping the {where} log-probs must change the value"
        assert (stats["reg_loss"] - swapped).abs() > 10 * TOL, f"{reg}: the {where} log-probs are swapped"


@pytest.mark.parametrize("reg", ["none", "sft", "dpo"])
def test_objective_is_bt_plus_alpha_times_the_regulariser(setup, reg):
    model, batch, n, rewards, logps, ref = setup
    alpha = 0.3
    with torch.no_grad():
        stats = compute_loss(model, batch, RewardObjectiveSpec(reg=reg, beta=BETA, alpha=alpha), True)
    bt = neg_log_sigmoid(rewards[:n] - rewards[n:]).mean()  # -log sigmoid(r_c - r_r)
    torch.testing.assert_close(stats["reward_loss"], bt, atol=TOL, rtol=TOL)
    if reg == "none":
        expected = bt
        assert "reg_loss" not in stats
    else:
        expected = (1 - alpha) * bt + alpha * regularizer_by_hand(reg, logps[:n], logps[n:], ref[:n], ref[n:])
    torch.testing.assert_close(stats["loss"], expected, atol=TOL, rtol=TOL)
    accuracy = ((rewards[:n] > rewards[n:]).float() + 0.5 * (rewards[:n] == rewards[n:]).float()).mean()
    torch.testing.assert_close(stats["accuracy"], accuracy)
    torch.testing.assert_close(stats["margin"], (rewards[:n] - rewards[n:]).mean(), atol=TOL, rtol=TOL)
    values = rewards.tolist()  # the 2B rewards of the batch, chosen and rejected
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    assert stats["reward_mean"].item() == pytest.approx(mean, abs=TOL)
    assert stats["reward_std"].item() == pytest.approx(std, abs=TOL)


def test_one_training_step_matches_a_step_by_hand():
    """training_step (objective, backward, clipping, optimiser step) on one batch against the same step written out:
    the hand-computed loss BT + sft, its gradients, clipped to half their norm, and one SGD step."""
    model = make_model(seed=1)
    twin = copy.deepcopy(model)
    batch = make_batch(model)
    n, alpha, lr = batch["margin"].shape[0], 0.3, 0.1

    rewards, logps = by_hand(twin, batch)
    bt, sft = neg_log_sigmoid(rewards[:n] - rewards[n:]).mean(), neg_log_sigmoid(BETA * logps[:n]).mean()
    hand_loss = (1 - alpha) * bt + alpha * sft
    hand_loss.backward()
    trainable = [p for p in twin.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(trainable, float("inf"))  # measure only
    max_norm = float(norm) / 2  # so that the step has to clip
    torch.nn.utils.clip_grad_norm_(trainable, max_norm)
    torch.optim.SGD(trainable, lr=lr).step()

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen = []
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    stats = training_step(
        model, batch, RewardTrainingConfig(train_data="-", reg="sft", beta=BETA, alpha=alpha, max_grad_norm=max_norm),
        Accelerator(cpu=True), optimizer,
        before_update=lambda s: seen.append({k: float(v.detach()) for k, v in s.items()}),
    )  # fmt: skip
    torch.testing.assert_close(stats["loss"].detach(), hand_loss.detach(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(stats["grad_norm"], norm, atol=TOL, rtol=TOL)
    assert len(seen) == 1 and seen[0]["grad_norm"] == pytest.approx(float(norm), rel=TOL)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=f"{name} after the step")
        assert torch.equal(p, before[name]) is not p.requires_grad, f"{name}: trained iff trainable"


# ----------------------------------------------------------------------------------------------------------------------
# the regulariser's strength: each loss term's gradient norm at the last hidden layer


def terms_and_hidden_by_hand(model, batch, reg: str, alpha: float, reference=None):
    """((1 - alpha) * L_reward, alpha * L_reg or None, [h_i]) with every sequence alone through the decoder: h_i (L_i, H) its
    last hidden layer (after the final norm), the reward from the head at its last token, log pi(y|x) from the LM head's
    logits on h_i. `reference`: the reference's summed log-probs (dpo)."""
    n = batch["margin"].shape[0]
    hidden, rewards, logps = [], [], []
    for ids, mask, response in zip(batch["input_ids"], batch["attention_mask"], batch["response_mask"], strict=True):
        length = int(mask.sum())
        ids, response = ids[:length], response[:length]
        h = model.decoder(input_ids=ids[None]).last_hidden_state[0]  # (L, H)
        hidden.append(h)
        rewards.append(model.head(h[length - 1]).squeeze())
        token_logp = torch.log_softmax(model.lm_head(h[:-1]).float(), -1).gather(1, ids[1:, None]).squeeze(1)
        logps.append(token_logp[response[1:]].sum())
    rewards, logps = torch.stack(rewards), torch.stack(logps)
    bt = neg_log_sigmoid(rewards[:n] - rewards[n:]).mean()
    if reg == "none":
        return bt, None, hidden
    ref_c, ref_r = (None, None) if reference is None else (reference[:n], reference[n:])
    return (1 - alpha) * bt, alpha * regularizer_by_hand(reg, logps[:n], logps[n:], ref_c, ref_r), hidden


def norm_by_hand(term, hidden) -> float:
    """||d term / d h|| over every token of every sequence (0 for no term)."""
    if term is None:
        return 0.0
    grads = torch.autograd.grad(term, hidden, retain_graph=True, allow_unused=True)
    return float(sum((g**2).sum() for g in grads if g is not None) ** 0.5)


def lora_model():
    """The tiny model with LoRA adapters moved away from zero (so the adapters matter, and dpo's reference differs)."""
    from rewardlab.modeling.reward_model import LoraSettings

    model = build_reward_model("tiny-llama", head_dropout=0.0, lora=LoraSettings(r=4, alpha=8, dropout=0.0), seed=2)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model


@pytest.mark.parametrize(
    "reg, lora, packed",
    [("none", False, True), ("sft", False, True), ("sft", False, False), ("sft-nll", False, True), ("dpo", False, True),
     ("dpo-noref", False, True), ("sft", True, True), ("dpo", True, True)],
)  # fmt: skip
def test_gradient_norms_match_each_term_differentiated_by_hand(setup, reg, lora, packed):
    """The logged reward_grad_norm and reg_grad_norm (packed, or padded) against each term's gradient with respect to every
    sequence's last hidden states, each sequence alone through the decoder and both terms written out here."""
    model, batch = (lora_model(), None) if lora else (setup[0], setup[1])
    if batch is None:
        batch = make_batch(model)
    alpha = 0.3
    reference = None
    if reg == "dpo":
        with torch.no_grad():
            if lora:
                with model.lm.disable_adapter():
                    reference = by_hand(model, batch)[1]
            else:
                reference = by_hand(model, batch, lm=model.reference)[1]
    reward_term, reg_term, hidden = terms_and_hidden_by_hand(model, batch, reg, alpha, reference)
    stats = compute_loss(model, batch, RewardObjectiveSpec(reg=reg, beta=BETA, alpha=alpha), packed, measure_gradients=True)
    expected_reward, expected_reg = norm_by_hand(reward_term, hidden), norm_by_hand(reg_term, hidden)
    assert expected_reward > 1e-3 and (reg == "none" or expected_reg > 1e-3)  # both far from the tolerance
    assert float(stats["reward_grad_norm"]) == pytest.approx(expected_reward, rel=1e-5, abs=1e-7)
    assert float(stats["reg_grad_norm"]) == pytest.approx(expected_reg, rel=1e-5, abs=1e-7)
    # the loss terms: as written out, and summing to the loss
    torch.testing.assert_close(stats["reward_term"], reward_term.detach(), atol=TOL, rtol=TOL)
    expected_reg_term = torch.tensor(0.0) if reg_term is None else reg_term.detach()
    torch.testing.assert_close(stats["reg_term"], expected_reg_term, atol=TOL, rtol=TOL)
    torch.testing.assert_close(stats["reward_term"] + stats["reg_term"], stats["loss"].detach(), atol=1e-6, rtol=1e-6)
    # measuring leaves the parameters' gradients alone and the graph usable for the training backward
    assert all(p.grad is None for p in model.parameters())
    stats["loss"].backward()
    model.zero_grad(set_to_none=True)


def test_at_alpha_zero_the_regulariser_pulls_nothing(setup):
    """alpha = 0: the regulariser's gradient norm is 0 and the reward term's is that of a plain reward model."""
    model, batch = setup[0], setup[1]
    zero = compute_loss(model, batch, RewardObjectiveSpec(reg="sft", beta=BETA, alpha=0.0), True, measure_gradients=True)
    plain = compute_loss(model, batch, RewardObjectiveSpec(reg="none"), True, measure_gradients=True)
    some = compute_loss(model, batch, RewardObjectiveSpec(reg="sft", beta=BETA, alpha=0.3), True, measure_gradients=True)
    assert float(zero["reg_grad_norm"]) == 0.0 and float(zero["reg_term"]) == 0.0 and float(plain["reg_grad_norm"]) == 0.0
    assert float(zero["reward_grad_norm"]) == pytest.approx(float(plain["reward_grad_norm"]), rel=1e-6)
    assert float(some["reg_grad_norm"]) > 1e-3  # the same regulariser does pull at alpha > 0
    model.zero_grad(set_to_none=True)


def test_gradient_norms_are_measured_only_when_asked(setup, monkeypatch):
    """Without measure_gradients the objective makes no autograd.grad call and reports no gradient norms."""
    model, batch = setup[0], setup[1]
    calls = []
    original = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or original(*a, **k))
    stats = compute_loss(model, batch, RewardObjectiveSpec(reg="dpo-noref", beta=BETA, alpha=0.3), True)
    assert not calls and "reward_grad_norm" not in stats and "reg_grad_norm" not in stats
    compute_loss(model, batch, RewardObjectiveSpec(reg="dpo-noref", beta=BETA, alpha=0.3), True, measure_gradients=True)
    assert len(calls) == 2  # one per term


@pytest.mark.parametrize("reg", ["sft", "dpo"])
def test_measuring_leaves_the_training_gradients_unchanged(reg):
    """The parameters' gradients of a step that measures equal those of one that does not, with the LM head's log-probs in
    chunks checkpointed for the backward (recomputed once for the measurement, again for the training backward)."""
    model = make_model(seed=3)
    model.kernels.logprob_chunk_tokens = 4  # several chunks per batch
    batch = make_batch(model)
    objective = RewardObjectiveSpec(reg=reg, beta=BETA, alpha=0.3)
    grads = []
    for measure in (False, True):
        stats = compute_loss(model, batch, objective, True, measure_gradients=measure)
        assert ("reg_grad_norm" in stats) is measure and (not measure or float(stats["reg_grad_norm"]) > 1e-3)
        stats["loss"].backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    assert grads[0].keys() == grads[1].keys() and any("lm_head" in name for name in grads[0])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-7, rtol=1e-6, msg=name)
