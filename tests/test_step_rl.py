"""Step tasks in RL: the step policy (its pretraining mix and cache key), the `builtin-steps` specs, and PPO with a process
reward model's step scores as dense rewards (`--reward-shaping step`) on a tiny PRM trained here on the world's step data."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.step_encoding import encode_steps
from rewardlab.errors import UserError
from rewardlab.generation import Sample, prompt_token_ids
from rewardlab.modeling.loader import load_reward_model
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.modeling.tiny import build_byte_tokenizer, build_tiny_llama
from rewardlab.redistribution import METHODS, SHAPINGS, TOKEN_REWARD_METHODS, redistribute
from rewardlab.rl import sources
from rewardlab.rl.ppo import PPOTrainer
from rewardlab.rl.ppo_config import PPOConfig
from rewardlab.rl.rollout import (
    build_response_batch,
    prm_view,
    response_step_ends,
    response_step_scores,
    separator_token_id,
)
from rewardlab.rl.scorers import resolve_scorer
from rewardlab.rl.sources import resolve_prompts
from rewardlab.tasks import policy as policy_module
from rewardlab.tasks.policy import (
    STEP_MAX_NEW_TOKENS,
    BasePolicyConfig,
    demonstration_ids,
    get_base_policy,
    get_step_policy,
    lr_at,
)
from rewardlab.tasks.steps import StepGoldReward, make_step_tasks, parse_step_prompt, write_step_data

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


# ------------------------------------------------------------------------------------------------ the step policy


def test_step_policy_config_has_its_own_key_and_generation_length():
    world = BasePolicyConfig()
    assert world.key() == "1c6a25f8e8e60a7a" and BasePolicyConfig(world_version=3).key() == "6eccf7f4bb4fcb8d"  # as before
    steps = world.with_steps()
    assert steps.step_share == 0.5 and steps.key() not in (world.key(), world.with_steps(0.25).key())
    assert world.max_new_tokens == 16 and steps.max_new_tokens == STEP_MAX_NEW_TOKENS == 32


def test_step_policy_demonstrations_mix_step_answers_into_the_worlds():
    tokenizer = build_byte_tokenizer(model_max_length=128)
    world = [demonstration_ids(tokenizer, BasePolicyConfig(), random.Random(i)) for i in range(50)]
    again = [demonstration_ids(tokenizer, BasePolicyConfig().with_steps(0.0), random.Random(i)) for i in range(50)]
    assert world == again  # step_share 0 draws nothing extra: the world's demonstrations are unchanged
    texts = [
        tokenizer.decode(demonstration_ids(tokenizer, BasePolicyConfig().with_steps(), random.Random(i))) for i in range(400)
    ]
    step_texts = [t for t in texts if " then " in t]
    assert 0.4 < len(step_texts) / len(texts) < 0.6 and max(len(tokenizer(t).input_ids) for t in texts) <= 128
    prompt, answer = step_texts[0].removeprefix("<|user|>").split("</s><|assistant|>")
    task = parse_step_prompt(prompt)
    assert answer.endswith("</s>" + answer.rsplit("</s>", 1)[1]) and len(answer.split("</s>")[0].split("\n")) == len(task.ops)


def test_step_policy_is_pretrained_and_cached_under_its_own_key(tmp_path):
    config = BasePolicyConfig(hidden_size=32, num_layers=1, steps=3, batch_size=4, warmup_steps=1).with_steps()
    _, _, path = get_step_policy(config, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "base-policy" / config.key()
    assert json.loads((path / "rewardlab_base_policy.json").read_text())["config"]["step_share"] == 0.5


def test_a_warm_started_step_policy_goes_on_from_the_cached_base_policy(tmp_path):
    tiny = BasePolicyConfig(hidden_size=32, num_layers=1, steps=3, batch_size=4, warmup_steps=1)
    config = tiny.with_steps(warm_start_steps=4)
    assert config.base_config() == tiny and config.key() not in (tiny.key(), tiny.with_steps().key())
    assert tiny.with_steps(warm_start_steps=0).key() == tiny.with_steps().key()  # earlier step policies keep their keys
    model, _, path = get_step_policy(config, cache_dir=tmp_path, progress=False)
    base, _, base_path = get_base_policy(tiny, cache_dir=tmp_path, progress=False)  # trained on the way, and cached
    assert path == tmp_path / "base-policy" / config.key() and base_path == tmp_path / "base-policy" / tiny.key()
    recorded = json.loads((path / "rewardlab_base_policy.json").read_text())["config"]
    assert recorded["warm_start_steps"] == 4 and recorded["steps"] == 3
    moved = [not torch.equal(a, b) for a, b in zip(model.parameters(), base.parameters(), strict=True)]
    assert all(moved)  # every weight went on training from the base policy's (AdamW moves each one)
    with pytest.raises(ValueError, match="step_share"):
        BasePolicyConfig(warm_start_steps=4).key()


def test_a_warm_start_warms_up_over_a_tenth_of_its_steps_then_decays():
    config = BasePolicyConfig(lr=1.0, warmup_steps=100, steps=1500).with_steps(warm_start_steps=200)
    assert lr_at(0, config) == pytest.approx(1 / 20) and lr_at(19, config) == pytest.approx(1.0)
    assert lr_at(110, config) == pytest.approx(0.55) and lr_at(200, config) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ builtin-steps specs


def test_builtin_steps_specs_give_step_prompts_the_step_gold_and_the_step_policy(monkeypatch):
    prompts = resolve_prompts("builtin-steps:test_ood", limit=5)
    assert prompts == [t.messages for t in make_step_tasks("test_ood", 5, 0)]
    assert len(resolve_prompts("builtin-steps", default_count=3)) == 3 and parse_step_prompt(resolve_prompts("builtin-steps")[0])
    assert resolve_prompts("builtin:test_id", limit=2)[0][0]["content"].count(" then ") == 0  # the world's are unchanged
    gold = resolve_scorer("builtin-steps")
    assert isinstance(gold, StepGoldReward)
    task = make_step_tasks("test_id", 1, 0)[0]
    assert gold.score([task.messages], ["\n".join(task.values)]) == [1.0]
    called = []
    monkeypatch.setattr(policy_module, "get_step_policy", lambda: called.append(1) or (*build_tiny_llama(seed=0), None))
    sources.resolve_policy("builtin-steps", device="cpu")
    assert called == [1]


# ------------------------------------------------------------------------------------------------ step rewards


def test_step_rewards_are_p_minus_half_at_step_ends_only():
    logits = torch.tensor([[0.0, 1.0, 2.0, -3.0, 4.0]])
    mask = torch.ones_like(logits, dtype=torch.long)
    ends = torch.tensor([[True, False, True, True, False]])  # column 0 is the prompt: never a step's
    rewards = redistribute("step", logits, mask, torch.tensor([1]), step_ends=ends)
    expected = torch.tensor([[0.0, 0.0, torch.sigmoid(torch.tensor(2.0)) - 0.5, torch.sigmoid(torch.tensor(-3.0)) - 0.5, 0.0]])
    assert torch.allclose(rewards, expected)
    with pytest.raises(ValueError, match="step_ends"):
        redistribute("step", logits, mask, torch.tensor([1]))
    assert "step" in SHAPINGS and "step" not in METHODS and TOKEN_REWARD_METHODS["step"].objective == "prm"
    assert not TOKEN_REWARD_METHODS["step"].telescopes and not TOKEN_REWARD_METHODS["step"].uses_potential


def test_step_ends_come_from_the_text_and_eos_ends_the_final_step():
    tokenizer = build_byte_tokenizer()
    sep, eos = separator_token_id(tokenizer), tokenizer.eos_token_id
    a, b = tokenizer("ab", add_special_tokens=False).input_ids
    rows = [([7, 8], [a, sep, b, eos], True), ([7], [a, sep, b, b, a], False)]  # the second was cut mid-line
    batch = build_response_batch([Sample(0, p, r, f, "") for p, r, f in rows], tokenizer.pad_token_id)
    finished = torch.tensor([True, False])
    ends = response_step_ends(batch, finished, tokenizer)
    assert ends.tolist() == [[False, True, False, True, False], [False, True, False, False, False]]
    viewed = prm_view(batch, finished, sep)
    assert viewed.response_ids[0].tolist()[:4] == [a, sep, b, sep] and torch.equal(viewed.response_ids[1], batch.response_ids[1])
    assert torch.equal(viewed.input_ids[:, batch.context_width :], viewed.response_ids)


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    """A tiny PRM: a few training steps on the world's step data (tiny-llama, the byte tokenizer)."""
    data = write_step_data(tmp_path_factory.mktemp("steps"), sizes={"train": 48}, seed=0)
    out = tmp_path_factory.mktemp("prm") / "run"
    result = runner.invoke(app, [
        "train-rm", "--objective", "prm", "--no-progress", "--train-data", str(data["train_stepwise"]),
        "--max-steps", "3", "--batch-size", "8", "--lr", "1e-3", "--output-dir", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_step_scores_are_the_prms_scores_where_training_reads_them(prm_dir):
    """The reward at each step's end equals sigmoid(the PRM's logit) - 1/2 at that step's separator in the PRM's own
    training encoding (prompt, then each step followed by the separator), the final step's read where EOS stood."""
    prm = load_reward_model(prm_dir, device="cpu")
    tokenizer = prm.tokenizer
    task = make_step_tasks("test_id", 1, 0)[0]
    steps = [task.values[0], "abc", task.values[-1]]
    prompt_ids = prompt_token_ids(tokenizer, task.messages)  # as generation renders it
    response = tokenizer("\n".join(steps), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    batch = build_response_batch([Sample(0, prompt_ids, response, True, "")], tokenizer.pad_token_id)
    with torch.no_grad():
        total, scores = response_step_scores(prm, batch, torch.tensor([True]), tokenizer, separator_token_id(tokenizer))
        encoded = encode_steps(tokenizer, task.messages, steps)
        logits = prm(torch.tensor([encoded.input_ids]), torch.ones(1, len(encoded.input_ids), dtype=torch.long)).position_rewards
    expected = torch.sigmoid(logits[0, encoded.step_ends]) - 0.5
    got = scores[0][scores[0] != 0]
    assert len(got) == 3 and torch.allclose(got, expected, atol=1e-5) and torch.isclose(total[0], expected.sum(), atol=1e-5)


def ppo_config(tmp_path, reward_model, **overrides) -> PPOConfig:
    values = dict(
        output_dir=str(tmp_path / "run"), reward_model=str(reward_model), reward_shaping="step", steps=1, batch_size=4,
        minibatch_size=2, ppo_epochs=1, max_new_tokens=8, progress=False, save_policy=False, sample_every=1,
    )  # fmt: skip
    return PPOConfig(**(values | overrides))


def test_a_prm_needs_step_shaping_and_step_shaping_needs_a_prm_in_one_line(prm_dir, tmp_path):
    preference = tmp_path / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=3).save_pretrained(preference)
    for model, shaping, said in ((prm_dir, "sparse", "process reward model"), (preference, "step", "sequence reward model")):
        with pytest.raises(UserError, match=said) as err:
            ppo_config(tmp_path, model, reward_shaping=shaping).validate()
        assert "\n" not in str(err.value)
    result = runner.invoke(
        app, ["ppo", "--reward-model", str(prm_dir), "--reward-shaping", "r3hf", "--output", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and "process reward model" in result.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("algo", ["ppo", "rloo", "reinforce"])
def test_step_rewards_train_ppo_rloo_and_reinforce_on_step_prompts_with_a_prm(prm_dir, tmp_path, algo):
    cfg = ppo_config(tmp_path, prm_dir, algo=algo, steps=2, gold="builtin-steps", max_new_tokens=10, rloo_k=2)
    prompts = resolve_prompts("builtin-steps:train", limit=8)
    trainer = PPOTrainer(cfg, policy=build_tiny_llama(seed=1), prompts=prompts)
    rollout = trainer.rollout(trainer.next_prompts())
    ends = response_step_ends(rollout.batch, rollout.finished, trainer.tokenizer)
    raw = rollout.token_scores
    assert torch.all(raw[~ends] == 0) and torch.all(raw.abs() <= 0.5)  # P - 1/2 at step ends, nothing elsewhere
    assert torch.allclose(rollout.sequence_scores, raw.sum(1), atol=1e-6)
    summary = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary and len([r for r in rows if "kind" not in r]) >= 2
    assert all(isinstance(v, (int, float)) for r in rows for v in r.values() if not isinstance(v, (str, type(None))))


def test_bon_runs_on_step_prompts_with_the_step_gold(tmp_path):
    build_reward_model("tiny-llama", head_dropout=0.0, seed=0).save_pretrained(tmp_path / "rm")
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "bon", "--policy", "tiny-llama", "--proxy", f"rm={tmp_path / 'rm'}", "--gold", "builtin-steps",
        "--prompts", "builtin-steps:test_id", "--limit", "3", "--n", "2", "--max-new-tokens", "4", "--output", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and all(" then " in json.dumps(row) for row in samples[:1])


def test_verls_reward_manager_gives_the_same_step_rewards_as_ppo(prm_dir, tmp_path):
    from types import SimpleNamespace

    from rewardlab.integrations.verl import TokenRewardManager, VerlRewardOptions

    prm = load_reward_model(prm_dir, device="cpu")
    tokenizer = prm.tokenizer
    tasks = make_step_tasks("test_id", 2, 0)
    responses = ["\n".join(tasks[0].values), "abc\nbc"]  # the second is cut mid-line (no EOS)
    rows = [
        (
            prompt_token_ids(tokenizer, t.messages),
            tokenizer(r, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] * (i == 0),
        )
        for i, (t, r) in enumerate(zip(tasks, responses, strict=True))
    ]
    samples = [Sample(0, p, r, i == 0, "") for i, (p, r) in enumerate(rows)]
    batch = build_response_batch(samples, tokenizer.pad_token_id)
    with torch.no_grad():
        total, expected = response_step_scores(prm, batch, torch.tensor([True, False]), tokenizer, separator_token_id(tokenizer))
    width_p, width_r = batch.context_width, batch.response_ids.shape[1]
    mask = torch.cat([batch.attention_mask[:, :width_p], batch.mask.long()], dim=1)
    data = SimpleNamespace(
        batch={
            "prompts": batch.input_ids[:, :width_p],
            "responses": batch.response_ids,
            "input_ids": batch.input_ids,
            "attention_mask": mask,
        }  # fmt: skip
    )
    out = TokenRewardManager(tokenizer, reward_model=str(prm_dir), method="step", device="cpu", micro_batch_size=1)(
        data, return_dict=True
    )
    assert out["reward_tensor"].shape == (2, width_r) and torch.allclose(out["reward_tensor"], expected, atol=1e-6)
    assert out["reward_extra_info"]["rm_score"] == pytest.approx(total.tolist(), abs=1e-6)
    assert VerlRewardOptions(server_url="http://localhost:1", method="step").method == "step"  # served: test_serve_steps.py
    with pytest.raises(UserError, match="process reward model"):
        VerlRewardOptions(reward_model=str(prm_dir), method="r3hf")
