import pytest
import torch
import torch.nn.functional as F

from helpers import perturb
from rewardlab.data.templates import encode_prompt_response, pad_sequences
from rewardlab.masks import last_token_index, response_mask
from rewardlab.modeling.ensemble import EnsembleRewardModel
from rewardlab.modeling.loader import load_for_scoring, load_reward_model, scoring_placement
from rewardlab.modeling.reward_model import LoraSettings, RewardModel, build_reward_model

PAIRS = [
    ([{"role": "user", "content": "reverse: abcd"}], "dcba"),
    ("hello", "world, a longer response"),
    ([{"role": "user", "content": "sort: ba"}], "ab"),
]


def encode(tok):
    return [encode_prompt_response(tok, p, r) for p, r in PAIRS]


@pytest.fixture(scope="module")
def rm():
    model = build_reward_model("tiny-llama", head_dropout=0.0)
    return model.eval()


def one_by_one(model, seqs):
    """Each sequence scored alone: no padding at all, an independent reference."""
    out = []
    for s in seqs:
        ids = torch.tensor([s.input_ids])
        out.append(model(ids, torch.ones_like(ids)).sequence_rewards[0])
    return torch.stack(out)


def test_last_token_index_any_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


@torch.no_grad()
@pytest.mark.parametrize("side", ["left", "right"])
def test_scores_do_not_depend_on_padding_or_batch(rm, side):
    seqs = encode(rm.tokenizer)
    ids, mask, _ = pad_sequences(seqs, rm.tokenizer.pad_token_id, side)
    batched = rm(ids, mask).sequence_rewards
    torch.testing.assert_close(batched, one_by_one(rm, seqs), atol=1e-5, rtol=0)


@torch.no_grad()
def test_position_rewards_are_prefix_scores(rm):
    """position_rewards[t] equals the sequence reward of the prefix ending at t (causal model, one pass)."""
    seq = encode(rm.tokenizer)[0]
    ids = torch.tensor([seq.input_ids])
    full = rm(ids, torch.ones_like(ids)).position_rewards[0]
    for t in (seq.response_start - 1, seq.response_start + 1, len(seq.input_ids) - 1):
        prefix = ids[:, : t + 1]
        assert rm(prefix, torch.ones_like(prefix)).sequence_rewards[0].item() == pytest.approx(full[t].item(), abs=1e-5)


@torch.no_grad()
def test_pad_equals_eos_reads_the_last_real_token():
    """With pad == eos, sequences end in EOS that looks like padding; the attention mask still finds it."""
    model = build_reward_model("tiny-llama", head_dropout=0.0).eval()
    tok = model.tokenizer
    tok.pad_token = tok.eos_token
    seqs = encode(tok)
    assert all(s.input_ids[-1] == tok.eos_token_id for s in seqs[:1])
    for side in ("left", "right"):
        ids, mask, _ = pad_sequences(seqs, tok.pad_token_id, side)
        torch.testing.assert_close(model(ids, mask).sequence_rewards, one_by_one(model, seqs), atol=1e-5, rtol=0)
    # reading at "last token that is not pad" would give a different (wrong) answer here
    ids, mask, _ = pad_sequences(seqs, tok.pad_token_id, "right")
    naive_last = ((ids != tok.pad_token_id).long() * torch.arange(ids.shape[1])).argmax(-1)
    assert not torch.equal(naive_last, last_token_index(mask))


@torch.no_grad()
def test_response_logprobs_match_full_logits(rm):
    seqs = encode(rm.tokenizer)
    ids, mask, start = pad_sequences(seqs, rm.tokenizer.pad_token_id, "left")
    rmask = response_mask(mask, start)
    got = rm(ids, mask, response_mask=rmask).logprobs
    # independent: the causal LM's own full-vocabulary logits, each sequence alone
    for i, s in enumerate(seqs):
        x = torch.tensor([s.input_ids])
        logp = F.log_softmax(rm.causal_lm(x).logits[0, :-1].float(), -1)
        targets = x[0, 1:]
        expected = logp[torch.arange(len(targets)), targets][s.response_start - 1 :].sum()
        assert got[i].item() == pytest.approx(expected.item(), abs=1e-3)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_chunked_logprobs_equal_one_pass_with_gradients(packed):
    """LM-head log-probs in chunks of 3 response tokens (checkpointed, logits recomputed in backward) give the one-pass
    values and the same gradients; without autograd the chunks are plain."""
    model = build_reward_model("tiny-llama", head_dropout=0.0)
    perturb(model)
    seqs = encode(model.tokenizer)
    ids, mask, start = pad_sequences(seqs, model.tokenizer.pad_token_id, "right")
    rmask = response_mask(mask, start)
    assert rmask.sum() > 3 * 2  # several chunks
    results = {}
    for chunk in (0, 3):
        model.zero_grad()
        model.kernels.logprob_chunk_tokens = chunk
        logprobs = model(ids, mask, response_mask=rmask, packed=packed).logprobs
        (logprobs * torch.tensor([1.0, -0.5, 2.0])).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            no_grad = model(ids, mask, response_mask=rmask, packed=packed).logprobs
        results[chunk] = (logprobs.detach(), grads, no_grad)
    (a, grads_a, ng_a), (b, grads_b, ng_b) = results[0], results[3]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ng_a, ng_b, atol=1e-5, rtol=0)
    assert grads_a.keys() == grads_b.keys() and any("lm_head" in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_lora_head_saved_and_restored(tmp_path):
    model = build_reward_model("tiny-llama", head_dropout=0.0, lora=LoraSettings(r=4, alpha=8))
    perturb(model)
    model.eval()
    seqs = encode(model.tokenizer)
    ids, mask, _ = pad_sequences(seqs, model.tokenizer.pad_token_id)
    before = model(ids, mask).sequence_rewards
    model.save_pretrained(tmp_path / "rm")
    assert (tmp_path / "rm" / "reward_head.safetensors").exists()
    assert (tmp_path / "rm" / "adapter_model.safetensors").exists()
    reloaded = load_reward_model(tmp_path / "rm")
    assert reloaded.uses_lora
    torch.testing.assert_close(reloaded(ids, mask).sequence_rewards, before, atol=1e-6, rtol=0)
    # the adapters matter: with them disabled the scores differ
    with reloaded.lm.disable_adapter():
        assert not torch.allclose(reloaded(ids, mask).sequence_rewards, before, atol=1e-4)


def test_full_finetune_and_mlp_head_round_trip(tmp_path):
    model = build_reward_model("tiny-llama", head="mlp", head_hidden=32, head_dropout=0.0)
    perturb(model, seed=3)
    model.eval()
    seqs = encode(model.tokenizer)
    ids, mask, _ = pad_sequences(seqs, model.tokenizer.pad_token_id)
    before = model(ids, mask).sequence_rewards
    model.save_pretrained(tmp_path / "rm")
    torch.testing.assert_close(RewardModel.from_pretrained(tmp_path / "rm")(ids, mask).sequence_rewards, before)


@torch.no_grad()
def test_reference_is_base_with_adapters_disabled():
    model = build_reward_model("tiny-llama", head_dropout=0.0, lora=LoraSettings(r=4, alpha=8)).eval()
    base = build_reward_model("tiny-llama", head_dropout=0.0).eval()  # same seed, same base weights
    perturb(model)
    seqs = encode(model.tokenizer)
    ids, mask, start = pad_sequences(seqs, model.tokenizer.pad_token_id)
    rmask = response_mask(mask, start)
    ref = model(ids, mask, rmask, reference=True).logprobs
    torch.testing.assert_close(ref, base(ids, mask, rmask).logprobs, atol=1e-5, rtol=0)
    assert not torch.allclose(model(ids, mask, rmask).logprobs, ref, atol=1e-3)


@torch.no_grad()
def test_full_finetune_reference_copy_is_frozen():
    model = build_reward_model("tiny-llama", head_dropout=0.0, reference_copy=True).eval()
    seqs = encode(model.tokenizer)
    ids, mask, start = pad_sequences(seqs, model.tokenizer.pad_token_id)
    rmask = response_mask(mask, start)
    before = model(ids, mask, rmask, reference=True).logprobs
    perturb(model.lm)
    assert all(not p.requires_grad for p in model.reference.parameters())
    torch.testing.assert_close(model(ids, mask, rmask, reference=True).logprobs, before)
    assert not torch.allclose(model(ids, mask, rmask).logprobs, before, atol=1e-3)


@torch.no_grad()
def test_ensemble_mean_and_min(tmp_path):
    members = [build_reward_model("tiny-llama", head_dropout=0.0, seed=s).eval() for s in (1, 2, 3)]
    seqs = encode(members[0].tokenizer)
    ids, mask, _ = pad_sequences(seqs, members[0].tokenizer.pad_token_id)
    each = torch.stack([m(ids, mask).sequence_rewards for m in members])
    ens = EnsembleRewardModel(members, "mean")
    torch.testing.assert_close(ens(ids, mask).sequence_rewards, each.mean(0))
    ens.save_pretrained(tmp_path / "ens")
    reloaded = load_reward_model(tmp_path / "ens", aggregate="min")
    torch.testing.assert_close(reloaded(ids, mask).sequence_rewards, each.min(0).values, atol=1e-6, rtol=0)


def test_load_reward_model_builds_tiny_llama_without_a_directory():
    loaded = load_reward_model("tiny-llama")
    built = build_reward_model("tiny-llama").eval()
    ids = torch.tensor([[5, 9, 40, 41, 2]])
    assert not loaded.training
    torch.testing.assert_close(
        loaded(ids, torch.ones_like(ids)).sequence_rewards, built(ids, torch.ones_like(ids)).sequence_rewards
    )


def test_load_for_scoring_places_the_model_and_passes_a_loaded_one_through():
    device, dtype = scoring_placement("cpu", "auto")
    assert (device, dtype) == (torch.device("cpu"), torch.float32)
    assert scoring_placement("cpu", "bf16", current_cuda=True) == (torch.device("cpu"), torch.bfloat16)
    loaded = load_for_scoring("tiny-llama", "cpu", "fp32")
    assert not loaded.training and loaded.device == torch.device("cpu")
    assert next(loaded.parameters()).dtype == torch.float32
    ids = torch.tensor([[5, 9, 40, 41, 2]])
    torch.testing.assert_close(
        loaded(ids, torch.ones_like(ids)).sequence_rewards,
        load_reward_model("tiny-llama")(ids, torch.ones_like(ids)).sequence_rewards,
    )
    model = build_reward_model("tiny-llama").train()
    assert load_for_scoring(model) is model and not model.training  # used where it is, in eval mode
    with pytest.raises(ValueError, match="my model"):  # no recorded statistics: normalize names it
        load_for_scoring(model, normalize=True, where="my model")
