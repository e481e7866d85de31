"""PPO / RLOO / REINFORCE trainer (rewardlab.rl.ppo) on a random tiny Llama policy and a tiny reward model.

Alignment (log-probs, values, token rewards) is checked against forward passes on unpadded prefixes; advantages against
naive loops; training runs end to end for one or two steps on every algorithm and both a sparse and a dense reward.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import typer
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from rewardlab.commands.ppo import ppo
from rewardlab.generation import Sample
from rewardlab.modeling.loader import load_reward_model
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.tiny import build_tiny_llama
from rewardlab.rl.models import make_critic
from rewardlab.rl.ppo import PPOTrainer, train_ppo
from rewardlab.rl.ppo_config import PPOConfig
from rewardlab.rl.ppo_math import (
    RunningMoments,
    add_missing_eos_penalty,
    compute_advantages,
    explained_variance,
    explained_variance_moments,
)
from rewardlab.rl.rollout import (
    ResponseBatch,
    build_response_batch,
    gather_logprobs,
    response_logits,
    response_potential,
    response_token_scores,
    response_values,
)
from rewardlab.rl.scorers import FunctionScorer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: extra threads only add overhead

PROMPTS = [
    [{"role": "user", "content": "copy: abc"}],
    [{"role": "user", "content": "please reverse abcdefg"}],
    [{"role": "user", "content": "sort: hgf"}],
    [{"role": "user", "content": "rotate: bcda"}],
]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm")
    build_reward_model("tiny-llama", head_dropout=0.0, seed=3).save_pretrained(path)
    return path


def small_config(tmp_path, **overrides) -> PPOConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        steps=1,
        batch_size=4,
        minibatch_size=2,
        ppo_epochs=1,
        max_new_tokens=6,
        lr=1e-3,
        critic_lr=1e-3,
        progress=False,
        save_policy=False,
        sample_every=1,
    )
    return PPOConfig(**(values | overrides))


def make_trainer(tmp_path, rm_dir, **overrides) -> PPOTrainer:
    return PPOTrainer(
        small_config(tmp_path, **overrides),
        policy=build_tiny_llama(seed=1),
        reward_model=load_reward_model(rm_dir, device="cpu"),
        prompts=PROMPTS,
    )


def samples_of(rows: list[tuple[list[int], list[int], bool]]) -> list[Sample]:
    return [Sample(0, p, r, f, "") for p, r, f in rows]


# ------------------------------------------------------------------------------------------------ tensor alignment


def test_logprobs_and_values_match_unpadded_prefixes(rm_dir) -> None:
    """Token t's log-prob and value read from the padded batch equal those of a forward pass on prompt + y<t alone."""
    torch.manual_seed(0)
    policy, _ = build_tiny_llama(seed=1)
    critic = load_reward_model(rm_dir, device="cpu")
    rows = [([5, 9, 40, 41], [50, 51, 2], True), ([7, 8], [60, 61, 62, 63], False)]  # different prompt/response widths
    batch = build_response_batch(samples_of(rows), pad_id=0)
    assert batch.context_width == 4 and batch.response_ids.shape == (2, 4)
    temperature = 0.7
    with torch.no_grad():
        logp = gather_logprobs(response_logits(policy, batch, temperature), batch.response_ids)
        values = response_values(critic, batch)
        for b, (prompt, response, _) in enumerate(rows):
            for t, token in enumerate(response):
                prefix = torch.tensor([prompt + response[:t]])
                logits = policy(input_ids=prefix).logits[0, -1] / temperature
                expected = torch.log_softmax(logits, -1)[token]
                assert logp[b, t].item() == pytest.approx(expected.item(), abs=1e-4)
                expected_value = critic(prefix, torch.ones_like(prefix)).sequence_rewards[0]
                assert values[b, t].item() == pytest.approx(expected_value.item(), abs=1e-4)
    assert batch.mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_missing_eos_penalty_on_last_token_only() -> None:
    scores = torch.tensor([[0.1, 0.2, 0.3], [1.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    finished = torch.tensor([False, False])
    out = add_missing_eos_penalty(scores, mask, finished, 0.5)
    assert torch.allclose(out, torch.tensor([[0.1, 0.2, -0.2], [1.0, 1.5, 0.0]]))
    finished = torch.tensor([True, False])
    out = add_missing_eos_penalty(scores, mask, finished, 0.5)
    assert torch.allclose(out, torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.5, 0.0]]))


def test_running_moments_match_all_values_seen() -> None:
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, generator=gen) * 3 + 1 for n in (5, 1, 17, 8)]
    moments = RunningMoments()
    assert moments.std == 1.0  # nothing seen: no scaling
    for chunk in chunks:
        moments.update(chunk)
    everything = torch.cat(chunks).double()
    assert moments.count == 31
    assert moments.mean == pytest.approx(everything.mean().item(), abs=1e-9)
    assert moments.std == pytest.approx(everything.std().item(), abs=1e-9)


# ------------------------------------------------------------------------------------------------ advantages


def naive_returns(rewards: list[list[float]], lengths: list[int]) -> list[list[float]]:
    out = []
    for row, n in zip(rewards, lengths, strict=True):
        out.append([sum(row[t:n]) if t < n else 0.0 for t in range(len(row))])
    return out


def test_rloo_and_reinforce_use_per_token_returns() -> None:
    # Two prompts x two samples; dense rewards, sample 1 shorter (padding must not count).
    rewards = [[1.0, -2.0, 0.5], [0.3, 0.7, 9.9], [0.0, 0.0, 2.0], [-1.0, 1.0, 1.0]]
    lengths = [3, 2, 3, 3]
    mask = torch.tensor([[1.0] * n + [0.0] * (3 - n) for n in lengths])
    returns = naive_returns(rewards, lengths)
    sequence_returns = [r[0] for r in returns]  # -0.5, 1.0, 2.0, 1.0
    adv, ret = compute_advantages("rloo", torch.tensor(rewards), mask, group_size=2, whiten=False)
    for b in range(4):
        other = b ^ 1  # the other sample of the same prompt
        for t in range(3):
            expected = returns[b][t] - sequence_returns[other] if t < lengths[b] else 0.0
            assert adv[b, t].item() == pytest.approx(expected, abs=1e-6)
            assert ret[b, t].item() == pytest.approx(returns[b][t], abs=1e-6)
    adv, _ = compute_advantages("reinforce", torch.tensor(rewards), mask, baseline=0.25, whiten=False)
    for b in range(4):
        for t in range(lengths[b]):
            assert adv[b, t].item() == pytest.approx(returns[b][t] - 0.25, abs=1e-6)
    # whitened: centred and scaled over the real tokens, so a scalar REINFORCE baseline drops out
    real = [returns[b][t] for b in range(4) for t in range(lengths[b])]
    mean = sum(real) / len(real)
    std = math.sqrt(sum((v - mean) ** 2 for v in real) / (len(real) - 1))
    for baseline in (0.0, 0.25):
        adv, _ = compute_advantages("reinforce", torch.tensor(rewards), mask, baseline=baseline)
        for b in range(4):
            for t in range(3):
                expected = (returns[b][t] - mean) / std if t < lengths[b] else 0.0
                assert adv[b, t].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("algo", ["rloo", "reinforce"])
def test_redistribution_does_not_cancel(algo: str) -> None:
    """Same sequence totals, different token split -> different per-token advantages (a sequence-level return
    would give identical ones)."""
    mask = torch.ones(2, 3)
    sparse = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    dense = torch.tensor([[0.5, 0.25, 0.25], [-1.0, 0.5, -0.5]])
    a_sparse, _ = compute_advantages(algo, sparse, mask, group_size=2, baseline=0.0, whiten=False)
    a_dense, _ = compute_advantages(algo, dense, mask, group_size=2, baseline=0.0, whiten=False)
    assert torch.allclose(a_sparse[:, 0], a_dense[:, 0])  # the first token sees the whole sequence in both
    assert not torch.allclose(a_sparse, a_dense)
    assert torch.allclose(a_sparse, a_sparse[:, :1].expand(2, 3))  # sparse, gamma 1: one advantage per sequence


def test_ppo_advantages_are_whitened_gae() -> None:
    rewards = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    values = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv, ret = compute_advantages("ppo", rewards, mask, values, gamma=1.0, lam=0.5, whiten=False)
    # Row 0: delta_1 = 1 - 0.5 = 0.5, delta_0 = 0 + 0.5 - 0.5 = 0; A_1 = 0.5, A_0 = 0 + 0.5 * 0.5 = 0.25
    # Row 1: one token: A_0 = 2 - 1 = 1
    assert torch.allclose(adv, torch.tensor([[0.25, 0.5], [1.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.75, 1.0], [2.0, 0.0]]))
    whitened, _ = compute_advantages("ppo", rewards, mask, values, gamma=1.0, lam=0.5)
    real = whitened[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std().item() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        compute_advantages("ppo", rewards, mask)


# ------------------------------------------------------------------------------------------------ rollouts


def test_kl_is_zero_before_the_first_update(tmp_path, rm_dir) -> None:
    trainer = make_trainer(tmp_path, rm_dir, reward_shaping="r3hf")
    ro = trainer.rollout(trainer.next_prompts(), step=0)
    assert torch.equal(ro.logprobs, ro.ref_logprobs)
    assert ro.kl.abs().max().item() == 0.0
    assert torch.equal(ro.rewards, ro.token_scores)  # no KL penalty yet
    assert ro.values is not None and torch.isfinite(ro.values).all()
    assert (ro.logprobs * (1 - ro.batch.mask)).abs().sum().item() == 0.0  # nothing outside the response


def test_dense_token_scores_telescope_and_sparse_sit_on_the_last_token(tmp_path, rm_dir) -> None:
    """r3hf token scores sum to R(x, y) - R(x), with R(x) from a separate pass over the prompt alone; sparse put
    R(x, y) on the last response token."""
    trainer = make_trainer(tmp_path, rm_dir, reward_shaping="r3hf")
    prompts = trainer.next_prompts()
    ro = trainer.rollout(prompts, step=0)
    rm = trainer.reward_model
    lengths = ro.batch.mask.sum(1).long()
    with torch.no_grad():
        for b in range(len(prompts)):
            row = ro.batch.attention_mask[b].bool()
            ids = ro.batch.input_ids[b][row]
            prompt_len = len(ids) - lengths[b].item()
            full = rm(ids[None], torch.ones(1, len(ids), dtype=torch.long)).sequence_rewards[0].item()
            prompt_only = rm(ids[None, :prompt_len], torch.ones(1, prompt_len, dtype=torch.long)).sequence_rewards[0]
            assert ro.sequence_scores[b].item() == pytest.approx(full, abs=1e-4)
            assert ro.token_scores[b].sum().item() == pytest.approx(full - prompt_only.item(), abs=1e-4)
    trainer.cfg.reward_shaping = "sparse"
    ro = trainer.rollout(prompts, step=0)
    last = lengths - 1
    rows = torch.arange(len(prompts))
    assert torch.allclose(ro.token_scores[rows, last], ro.sequence_scores)
    assert ro.token_scores.abs().sum().item() == pytest.approx(ro.sequence_scores.abs().sum().item(), abs=1e-5)


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("shaping", ["sparse", "r3hf"])
def test_ppo_steps_change_the_policy_and_write_outputs(tmp_path, rm_dir, shaping: str) -> None:
    policy, tokenizer = build_tiny_llama(seed=1)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    gold = FunctionScorer(lambda prompt, response: float(len(response)))
    cfg = small_config(tmp_path, reward_shaping=shaping, steps=2, save_policy=True)
    summary = train_ppo(
        cfg,
        policy=(policy, tokenizer),
        reward_model=load_reward_model(rm_dir, device="cpu"),
        gold=gold,
        prompts=PROMPTS,
    )
    changed = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the update did not change the policy"

    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert records[0]["kl"] == 0.0
    for key in ("policy_loss", "value_loss", "clipfrac", "approx_kl", "value_clipfrac", "update_entropy"):
        assert math.isfinite(records[0][key]) and math.isfinite(records[1][key]), key
    assert "policy_loss" not in records[2]  # the last rollout only measures the final policy
    for key in ("proxy_reward", "gold_reward", "kl", "entropy", "response_length", "eos_rate", "tokens_per_second"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert records[1]["kl"] != 0.0
    assert summary["final"]["step"] == 2 and "gold_reward_change" in summary
    assert json.loads((run / "config.json").read_text())["reward_shaping"] == shaping
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 1, 2} and all("gold_reward" in s for s in samples)
    assert (run / "gold_vs_kl.png").stat().st_size > 0 and (run / "reward_vs_step.png").stat().st_size > 0
    reloaded = AutoModelForCausalLM.from_pretrained(run / "policy")
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, policy.state_dict()[key]), key


@pytest.mark.parametrize("algo", ["rloo", "reinforce"])
def test_critic_free_algorithms_run(tmp_path, rm_dir, algo: str) -> None:
    trainer = make_trainer(tmp_path, rm_dir, algo=algo, reward_shaping="r3hf", rloo_k=2, reinforce_baseline="batch")
    assert trainer.critic is None
    before = [p.clone() for p in trainer.policy.parameters()]
    summary = trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters(), strict=True))
    first = summary["initial"]
    assert math.isfinite(first["policy_loss"]) and "value_loss" not in first
    if algo == "rloo":  # 2 prompts per rollout, each sampled twice
        assert len(trainer.next_prompts()) == 2


def test_lora_reference_is_the_policy_with_adapters_disabled(tmp_path, rm_dir) -> None:
    trainer = make_trainer(tmp_path, rm_dir, lora=True, lora_r=4, lora_alpha=8, save_policy=True)
    assert trainer.reference is None
    ro = trainer.rollout(trainer.next_prompts(), step=0)
    assert ro.kl.abs().max().item() == 0.0
    trainer.update(ro)
    ro = trainer.rollout(trainer.next_prompts(), step=1)
    assert ro.kl.abs().max().item() > 0.0  # adapters moved away from the (disabled-adapter) reference
    trainer.save_policy(tmp_path / "policy")
    assert (tmp_path / "policy" / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    assert not any("lora" in k for k in merged.state_dict())


def test_adaptive_kl_coefficient_follows_the_measured_kl(tmp_path, rm_dir) -> None:
    """Ziegler et al.: beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon, after every update."""
    trainer = make_trainer(tmp_path, rm_dir, adaptive_kl=True, kl_coef=0.05, kl_target=0.01, kl_horizon=4, steps=2)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    coef = 0.05
    for record in records:
        assert record["kl_coef"] == pytest.approx(coef, rel=1e-9)
        error = min(max(record["kl"] / 0.01 - 1.0, -0.2), 0.2)
        coef *= 1.0 + error * 4 / 4
    assert records[1]["kl_coef"] == pytest.approx(0.04)  # step 0 had KL = 0: error -0.2


def test_reward_normalisation_and_missing_eos_penalty(tmp_path, rm_dir) -> None:
    trainer = make_trainer(tmp_path, rm_dir, normalize_reward=True, missing_eos_penalty=1.0, max_new_tokens=3)
    ro = trainer.rollout(trainer.next_prompts(), step=0)
    assert trainer.reward_moments.count == 0  # a rollout moves no training state ...
    trainer.commit(ro)  # ... the training loop adopts what it computed
    assert trainer.reward_moments.count == 4
    std = ro.sequence_scores.double().std().item()
    assert trainer.reward_moments.std == pytest.approx(std, rel=1e-6)
    last = ro.batch.mask.sum(1).long() - 1
    rows = torch.arange(4)
    expected = (ro.sequence_scores - 1.0 * (~ro.finished).float()) / std
    assert torch.allclose(ro.token_scores[rows, last], expected, atol=1e-5)
    assert (~ro.finished).any()  # a random tiny policy rarely stops within 3 tokens


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="algo"):
        PPOConfig(algo="dpo").validate()
    with pytest.raises(ValueError, match="reward_shaping"):
        PPOConfig(reward_shaping="dense").validate()
    with pytest.raises(ValueError, match="rloo"):
        PPOConfig(algo="rloo", batch_size=6, rloo_k=4).validate()
    with pytest.raises(ValueError, match="unknown config keys"):
        PPOConfig.from_dict({"learning_rate": 1.0})


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture()
def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("ppo")(ppo)
    app.command("noop")(lambda: None)  # two commands, so `ppo` stays a subcommand
    return app


def test_cli_ppo_runs(tmp_path, rm_dir, cli_app) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "cli-run"
    args = [
        "ppo", "--policy", "tiny-llama", "--reward-model", str(rm_dir), "--reward-shaping", "r3hf",
        "--gold", "builtin", "--prompts", str(prompts), "--output", str(out), "--steps", "1", "--batch-size", "2",
        "--minibatch-size", "2", "--ppo-epochs", "1", "--max-new-tokens", "4", "--no-progress",
    ]  # fmt: skip
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and "gold_reward" in records[0]
    assert (out / "policy" / "config.json").exists()


def test_cli_ppo_errors_are_one_line(tmp_path, cli_app) -> None:
    result = CliRunner().invoke(cli_app, ["ppo", "--policy", "tiny-llama", "--output", str(tmp_path / "x")])
    assert result.exit_code == 1 and "--reward-model" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli_app, ["ppo", "--reward-model", str(tmp_path), "--reward-shaping", "dense"])
    assert result.exit_code == 1 and "reward_shaping" in result.output
    result = CliRunner().invoke(cli_app, ["ppo", "--policy", "tiny-llama", "--reward-model", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "nope" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_critic_inits(tmp_path, head) -> None:
    """reward-model: V_t equals the reward model's prefix score R(x, y<t); zero-head: V_t = 0 everywhere and the backbone
    gets no gradient; fresh: V_t small but not zero, and the backbone learns from the first backward. All keep the reward
    model's backbone."""
    rm = build_reward_model("tiny-llama", head=head, head_dropout=0.0, seed=3).eval()
    rows = [([5, 9, 40, 41], [50, 51, 2], True), ([7, 8], [60, 61, 62, 63], False)]
    batch = build_response_batch(samples_of(rows), pad_id=0)
    prefix_scores = rm(batch.input_ids, batch.attention_mask).position_rewards[:, batch.context_width - 1 : -1]
    with torch.no_grad():
        same = response_values(make_critic(rm), batch)
    torch.testing.assert_close(same, prefix_scores)
    torch.testing.assert_close(response_values(make_critic(rm, "potential-offset"), batch).detach(), prefix_scores.detach())
    backbone_grads = {}
    for init in ("zero-head", "fresh"):
        critic = make_critic(rm, init, seed=5)
        values = response_values(critic, batch)
        assert all(p.requires_grad for p in critic.head.parameters())
        torch.testing.assert_close(critic.lm.get_input_embeddings().weight, rm.lm.get_input_embeddings().weight)
        (values * batch.mask).pow(2).sum().add((values * batch.mask).sum()).backward()
        backbone_grads[init] = sum(p.grad.abs().sum().item() for p in critic.decoder.parameters() if p.grad is not None)
        if init == "zero-head":
            assert values.abs().max() == 0.0
        else:
            assert 0.0 < values.abs().max() < 0.1 * prefix_scores.abs().max()  # small next to the reward model's scale
            again = response_values(make_critic(rm, "fresh", seed=5), batch)
            torch.testing.assert_close(again, values)  # seeded
            assert not torch.allclose(response_values(make_critic(rm, "fresh", seed=6), batch), values)
    assert prefix_scores.abs().max() > 1e-3
    assert backbone_grads["zero-head"] == 0.0 and backbone_grads["fresh"] > 0.0
    with pytest.raises(ValueError, match="critic_init"):
        PPOConfig(critic_init="random").validate()
    with pytest.raises(ValueError, match="potential-offset"):
        PPOConfig(critic_init="potential-offset", reward_shaping="uniform").validate()


# ------------------------------------------------------------------------------------------------ potential shaping


@pytest.mark.parametrize("method", ["r3hf", "mix"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_on_shaped_rewards_with_an_offset_critic_equals_sparse(method: str, lam: float) -> None:
    """Potential-based shaping (gamma = 1): GAE on r3hf (or mix) rewards with the critic V - Phi gives the advantages of
    sparse rewards with the critic V, for any lambda, KL term included; the value targets shift by -Phi. With the
    un-offset critic they differ."""
    gen = torch.Generator().manual_seed(0)
    batch_size, prompt_width, response_width = 6, 3, 7
    lengths = [7, 1, 4, 6, 2, 7]
    attention = torch.ones(batch_size, prompt_width + response_width, dtype=torch.long)
    for b, n in enumerate(lengths):
        attention[b, prompt_width + n :] = 0
    batch = ResponseBatch(
        torch.zeros_like(attention), attention, torch.zeros(batch_size, response_width, dtype=torch.long),
        attention[:, prompt_width:].float(), prompt_width,
    )  # fmt: skip
    position_rewards = torch.randn(batch_size, prompt_width + response_width, generator=gen, dtype=torch.float64)
    mask = batch.mask.double()
    kl_term = 0.1 * torch.randn(batch_size, response_width, generator=gen, dtype=torch.float64) * mask
    critic = torch.randn(batch_size, response_width, generator=gen, dtype=torch.float64) * mask
    kwargs = {"beta_c": 0.3} if method == "mix" else {}
    sparse = response_token_scores("sparse", position_rewards, batch) - kl_term
    shaped = response_token_scores(method, position_rewards, batch, **kwargs) - kl_term
    phi = response_potential(method, position_rewards, batch, **kwargs)
    assert phi.abs().max() > 0.1 and not torch.allclose(shaped, sparse)
    for whiten in (False, True):
        a_sparse, ret_sparse = compute_advantages("ppo", sparse, mask, critic, lam=lam, whiten=whiten)
        a_shaped, ret_shaped = compute_advantages("ppo", shaped, mask, critic - phi, lam=lam, whiten=whiten)
        torch.testing.assert_close(a_shaped, a_sparse, rtol=0, atol=1e-12)
        torch.testing.assert_close(ret_shaped, ret_sparse - phi, rtol=0, atol=1e-12)
        a_unshifted, _ = compute_advantages("ppo", shaped, mask, critic, lam=lam, whiten=whiten)
        assert (a_unshifted - a_sparse).abs().max() > 1e-2


def _rollout_pair(tmp_path, rm_dir, **overrides):
    """Two trainers with the same seed: sparse rewards with the reward-model critic, r3hf with the potential-offset one."""
    common = dict(steps=3, lr=1e-3, critic_lr=1e-3, batch_size=4, minibatch_size=2, ppo_epochs=2) | overrides
    sparse = make_trainer(tmp_path / "sparse", rm_dir, reward_shaping="sparse", critic_init="reward-model", **common)
    shaped = make_trainer(tmp_path / "r3hf", rm_dir, reward_shaping="r3hf", critic_init="potential-offset", **common)
    return sparse, shaped


@pytest.mark.parametrize("normalize", [False, True])
def test_potential_offset_r3hf_reproduces_sparse_ppo(tmp_path, rm_dir, normalize: bool) -> None:
    """Same seed: r3hf with the critic offset by the frozen prefix score gives sparse's advantages (float precision), the
    same losses, the same updated policy and critic, and so the same next rollouts; r3hf with the plain reward-model
    critic does not."""
    sparse, shaped = _rollout_pair(tmp_path, rm_dir, normalize_reward=normalize, missing_eos_penalty=0.5)
    plain = make_trainer(tmp_path / "plain", rm_dir, reward_shaping="r3hf", critic_init="reward-model", steps=3, lr=1e-3)
    ro_plain = plain.rollout(plain.next_prompts(), step=0)
    for step in range(3):
        ro_s = sparse.rollout(sparse.next_prompts(), step)
        ro_r = shaped.rollout(shaped.next_prompts(), step)
        assert torch.equal(ro_s.batch.input_ids, ro_r.batch.input_ids)  # the same responses
        assert ro_s.value_offset is None and ro_r.value_offset is not None and ro_r.value_offset.abs().max() > 1e-3
        assert not torch.allclose(ro_s.rewards, ro_r.rewards)  # different token rewards ...
        torch.testing.assert_close(ro_r.advantages, ro_s.advantages, rtol=0, atol=1e-5)  # ... the same advantages
        torch.testing.assert_close(ro_r.values, ro_s.values - ro_r.value_offset, rtol=0, atol=1e-5)
        torch.testing.assert_close(ro_r.returns, ro_s.returns - ro_r.value_offset, rtol=0, atol=1e-5)
        if step == 0:
            if not normalize:  # the offset critic starts at V - Phi = 0 (normalised: V - Phi / std)
                assert ro_r.values.abs().max() < 1e-5
            assert (ro_plain.advantages - ro_s.advantages).abs().max() > 1e-2  # the confound: not the same run
        stats_s, stats_r = sparse.update(ro_s), shaped.update(ro_r)
        for key in ("policy_loss", "value_loss", "clipfrac", "approx_kl"):
            assert stats_r[key] == pytest.approx(stats_s[key], rel=1e-4, abs=1e-6), key
        for a, b in zip(sparse.unwrapped.parameters(), shaped.unwrapped.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_cli_potential_offset_logs_the_same_rewards_as_sparse(tmp_path, rm_dir, cli_app) -> None:
    """Done-when of the equivalence: `--reward-shaping r3hf --critic-init potential-offset` logs the proxy and gold
    rewards of `--reward-shaping sparse --critic-init reward-model` with the same seed, step for step."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    logs = {}
    for shaping, init in (("sparse", "reward-model"), ("r3hf", "potential-offset"), ("r3hf", "reward-model")):
        out = tmp_path / f"{shaping}-{init}"
        args = [
            "ppo", "--policy", "tiny-llama", "--reward-model", str(rm_dir), "--reward-shaping", shaping,
            "--critic-init", init, "--gold", "builtin", "--prompts", str(prompts), "--output", str(out), "--steps", "4",
            "--batch-size", "4", "--minibatch-size", "2", "--ppo-epochs", "2", "--max-new-tokens", "6", "--lr", "1e-3",
            "--critic-lr", "1e-3", "--seed", "7", "--no-progress",
        ]  # fmt: skip
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        logs[shaping, init] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sparse, offset = logs["sparse", "reward-model"], logs["r3hf", "potential-offset"]
    assert len(sparse) == len(offset) == 5
    for a, b in zip(sparse, offset, strict=True):
        for key in ("proxy_reward", "gold_reward", "kl", "policy_loss", "value_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (a["step"], key)
    assert sparse[-1]["kl"] > 0  # the policy moved, so the later steps compare trained policies
    plain = logs["r3hf", "reward-model"]
    assert any(abs(p["value_loss"] - s["value_loss"]) > 1e-3 for p, s in zip(plain[:-1], sparse[:-1], strict=True))


def _critic_step(tmp_path, rm_dir, **overrides) -> torch.Tensor:
    """The critic's parameter change over one update (ppo_epochs x minibatches of Adam steps) on the first rollout."""
    trainer = make_trainer(tmp_path, rm_dir, **({"ppo_epochs": 2, "critic_lr": 1e-4} | overrides))
    before = [p.detach().clone() for p in trainer.critic.parameters() if p.requires_grad]
    trainer.update(trainer.rollout(trainer.next_prompts(), step=0))
    after = [p.detach() for p in trainer.critic.parameters() if p.requires_grad]
    return torch.cat([(a - b).flatten() for a, b in zip(after, before, strict=True)])


def test_vf_coef_is_mostly_undone_by_adam_and_critic_lr_sets_the_step(tmp_path, rm_dir) -> None:
    """What docs/ppo.md says about --vf-coef: the critic has its own parameters, so the coefficient only rescales their
    gradient, which Adam divides out (up to eps); --critic-lr scales the critic's steps directly."""
    base = _critic_step(tmp_path / "a", rm_dir, vf_coef=0.1)
    tenfold = _critic_step(tmp_path / "b", rm_dir, vf_coef=1.0)
    double_lr = _critic_step(tmp_path / "c", rm_dir, vf_coef=0.1, critic_lr=2e-4)
    assert base.norm() > 0
    assert (tenfold - base).norm() / base.norm() < 0.25  # x10 coefficient: nearly the same steps (measured 0.10)
    assert double_lr.norm() / base.norm() == pytest.approx(2.0, rel=0.1)


def test_explained_variance_from_moments_matches_direct_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.randn(5, 6, generator=gen)
    predictions = targets + 0.5 * torch.randn(5, 6, generator=gen)
    mask = (torch.rand(5, 6, generator=gen) > 0.3).float()
    real_t, real_p = targets[mask.bool()].double(), predictions[mask.bool()].double()
    expected = 1 - (real_t - real_p).var(unbiased=False) / real_t.var(unbiased=False)
    assert explained_variance(explained_variance_moments(predictions, targets, mask)) == pytest.approx(expected.item(), abs=1e-9)
    # moments of two halves (two processes) add up to those of the whole batch
    halves = explained_variance_moments(predictions[:2], targets[:2], mask[:2]) + explained_variance_moments(
        predictions[2:], targets[2:], mask[2:]
    )
    assert explained_variance(halves) == pytest.approx(expected.item(), abs=1e-9)
    assert explained_variance(explained_variance_moments(targets, targets, mask)) == pytest.approx(1.0)
    constant = torch.full_like(targets, targets[mask.bool()].mean().item())
    assert explained_variance(explained_variance_moments(constant, targets, mask)) == pytest.approx(0.0, abs=1e-6)


def test_a_measurement_rollout_moves_no_training_state(tmp_path, rm_dir) -> None:
    """An extra rollout (to measure a policy) must not change training: the EMA baseline and the reward normaliser
    move only when the training loop commits a rollout."""
    trainer = make_trainer(tmp_path, rm_dir, algo="reinforce", reinforce_baseline="ema", normalize_reward=True)
    first = trainer.rollout(trainer.next_prompts(), step=0)
    again = trainer.rollout(trainer.next_prompts(), step=0)
    assert trainer.reinforce_baseline is None and trainer.reward_moments.count == 0
    assert first.reinforce_baseline is not None and first.reward_moments.count == 4 == again.reward_moments.count
    trainer.commit(first)
    assert trainer.reinforce_baseline == first.reinforce_baseline and trainer.reward_moments.count == 4
    third = trainer.rollout(trainer.next_prompts(), step=1)
    assert third.reward_moments.count == 8  # built on the committed state


def test_held_out_evaluation_rows_at_fixed_steps_on_prompts_apart_from_training(tmp_path, rm_dir) -> None:
    from rewardlab.rl.ppo import eval_steps
    from rewardlab.rl.scorers import resolve_scorer
    from rewardlab.rl.sources import resolve_prompts

    assert eval_steps(5, 2) == [0, 2, 4, 5] and eval_steps(4, 2) == [0, 2, 4] and eval_steps(0, 3) == [0]
    train_prompts = resolve_prompts("builtin:train", limit=16)
    cfg = small_config(
        tmp_path, steps=3, gold="builtin", eval_prompts="builtin:test_id", eval_limit=3, eval_every=2, max_new_tokens=4
    )
    train_ppo(cfg, policy=build_tiny_llama(seed=1), reward_model=load_reward_model(rm_dir), gold=resolve_scorer("builtin"),
              prompts=train_prompts)  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("kind") == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 3]
    assert [r["step"] for r in rows if "kind" not in r] == [0, 1, 2, 3]
    assert all(r["n_prompts"] == 3 and math.isfinite(r["gold_reward"]) and math.isfinite(r["proxy_reward"]) for r in evals)
    assert evals[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the initial policy is its own reference
    assert evals[0]["kl_sampled"] == pytest.approx(0.0, abs=1e-5)
    assert all(r["kl"] >= 0.0 for r in evals) and evals[-1]["kl"] > 1e-6  # exact KL: never negative; lr 1e-3 moved it
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["num_eval_prompts"] == 3 and config["eval_prompts_in_training"] == 0
    held_out = {json.dumps(p, sort_keys=True) for p in resolve_prompts("builtin:test_id", limit=3)}
    assert not held_out & {json.dumps(p, sort_keys=True) for p in train_prompts}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eval"] == evals
    from rewardlab.errors import UserError

    with pytest.raises(UserError, match="eval_prompts needs a gold"):
        small_config(tmp_path, output_dir=str(tmp_path / "other"), eval_prompts="builtin:test_id").validate()


def test_exact_kl_per_token_matches_a_direct_sum() -> None:
    from rewardlab.rl.ppo_math import exact_kl_per_token

    logits, ref = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 3, 5)
    p = torch.softmax(logits, -1)
    direct = (p * (torch.log(p) - math.log(1 / 5))).sum(-1)  # KL against the uniform distribution
    assert torch.allclose(exact_kl_per_token(logits, ref), direct, atol=1e-6)
    assert torch.allclose(exact_kl_per_token(logits, logits), torch.zeros(2, 3), atol=1e-6)


def test_evaluation_leaves_the_training_run_unchanged(tmp_path, rm_dir) -> None:
    from rewardlab.rl.scorers import resolve_scorer

    logs = []
    for name, extra in (("plain", {}), ("eval", {"eval_prompts": "builtin:test_id", "eval_limit": 2, "eval_every": 1})):
        cfg = small_config(tmp_path / name, steps=2, gold="builtin", max_new_tokens=4, **extra)
        train_ppo(cfg, policy=build_tiny_llama(seed=1), reward_model=load_reward_model(rm_dir),
                  gold=resolve_scorer("builtin"), prompts=PROMPTS)  # fmt: skip
        rows = [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
        logs.append([(r["proxy_reward"], r["kl"]) for r in rows if "kind" not in r])
    assert logs[0] == logs[1]
