"""The base policy (reduced budget, cached in a tmp dir) and the preference data sampled from it."""

from __future__ import annotations

import itertools
import json

import pytest

from rewardlab.data.loading import load_preferences
from rewardlab.modeling.tiny import build_tiny_llama
from rewardlab.tasks import policy as policy_module
from rewardlab.tasks.policy import BasePolicyConfig, evaluate_gold, get_base_policy, lr_at
from rewardlab.tasks.preferences import (
    make_preference_data,
    measured_flip_rate,
    write_preference_data,
    write_prompts,
)
from rewardlab.tasks.world import ID_FAMILIES, ID_STYLES, GoldReward, parse_prompt

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: extra threads only add overhead

QUICK = BasePolicyConfig.quick()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rewardlab-cache")


@pytest.fixture(scope="module")
def base_policy(cache_dir):
    return get_base_policy(QUICK, cache_dir=cache_dir, progress=False)


def test_base_policy_is_saved_like_a_hub_model_and_reused(base_policy, cache_dir, monkeypatch):
    model, tokenizer, path = base_policy
    assert path == cache_dir / "base-policy" / QUICK.key()
    assert (path / "config.json").exists() and (path / "tokenizer_config.json").exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp dir left behind
    assert (
        tokenizer.apply_chat_template([{"role": "user", "content": "sort: ba"}], add_generation_prompt=True, tokenize=False)
        == "<|user|>sort: ba</s><|assistant|>"
    )
    stats = json.loads((path / "rewardlab_base_policy.json").read_text())
    assert stats["config"]["steps"] == QUICK.steps and stats["train_seconds"] > 0

    def fail(*args, **kwargs):
        raise AssertionError("a cached policy must not be retrained")

    monkeypatch.setattr(policy_module, "pretrain_base_policy", fail)
    _, _, again = get_base_policy(QUICK, cache_dir=cache_dir, progress=False)
    assert again == path


def test_config_key_changes_with_any_field():
    assert QUICK.key() == BasePolicyConfig.quick().key()
    assert QUICK.key() != BasePolicyConfig(**{**QUICK.__dict__, "seed": 1}).key()
    assert BasePolicyConfig().key() != QUICK.key()


def test_lr_schedule_warms_up_then_decays():
    config = BasePolicyConfig(lr=1.0, warmup_steps=10, steps=110)
    assert lr_at(0, config) == pytest.approx(0.1) and lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.55) and lr_at(110, config) == pytest.approx(0.1)


def test_trained_policy_beats_a_random_policy(base_policy):
    model, tokenizer, _ = base_policy
    random_model, random_tokenizer = build_tiny_llama(seed=0)
    trained = evaluate_gold(model, tokenizer, "test_id", 128, seed=0)
    untrained = evaluate_gold(random_model, random_tokenizer, "test_id", 128, seed=0)
    assert untrained["mean_gold"] < 0.05
    assert trained["mean_gold"] > untrained["mean_gold"] + 0.1
    assert trained["finished"] > 0.9  # learned to close its answers with EOS


def test_preference_data_is_deterministic_nested_and_well_formed(base_policy):
    model, tokenizer, _ = base_policy
    kwargs = {"split": "train", "seed": 0, "label_noise": 0.0, "temperature": 0.0}
    data = make_preference_data(model, tokenizer, 48, **kwargs)
    assert len(data) == 48
    assert make_preference_data(model, tokenizer, 48, **kwargs) == data
    assert make_preference_data(model, tokenizer, 20, **kwargs) == data[:20]  # small is a prefix of large
    gold = GoldReward()
    for ex in data:
        chosen, rejected = ex.chosen[0]["content"], ex.rejected[0]["content"]
        assert chosen != rejected and chosen.strip() and rejected.strip()
        g_c, g_r = gold.score([ex.prompt, ex.prompt], [chosen, rejected])
        assert (g_c, g_r) == (ex.metadata["gold_chosen"], ex.metadata["gold_rejected"])
        assert g_c > g_r and ex.margin == pytest.approx(g_c - g_r)  # noiseless labels follow the gold ordering
        task = parse_prompt(ex.prompt)
        assert task.family in ID_FAMILIES and task.style in ID_STYLES
        assert ex.source == task.family and ex.subset == f"{task.family}/{task.style}"


def test_label_noise_flips_the_configured_share(base_policy):
    model, tokenizer, _ = base_policy
    data = make_preference_data(model, tokenizer, 400, "test_ood", seed=1, label_noise=0.25, temperature=0.0)
    assert all(not parse_prompt(ex.prompt).is_id for ex in data)
    assert measured_flip_rate(data) == pytest.approx(0.25, abs=0.07)  # binomial sd ~0.022


def test_write_preference_data_round_trip(base_policy, tmp_path):
    model, tokenizer, _ = base_policy
    paths = write_preference_data(
        tmp_path,
        model,
        tokenizer,
        sizes={"small": 10, "large": 30},
        test_sizes={"test_id": 8, "test_ood": 8},
        seed=2,
        label_noise=0.1,
        progress=False,
    )
    assert set(paths) == {"train_small", "train_large", "test_id", "test_ood", "world"}

    def rows(path):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    small, large = rows(paths["train_small"]), rows(paths["train_large"])
    assert len(small) == 10 and len(large) == 30 and small == large[:10]
    record = json.loads(paths["test_ood"].read_text().splitlines()[0])
    assert set(record) == {"prompt", "chosen", "rejected", "source", "subset", "margin", "gold_chosen", "gold_rejected"}
    assert record["prompt"][0]["role"] == "user" and record["chosen"][0]["role"] == "assistant"
    assert all(r["gold_chosen"] > r["gold_rejected"] for r in rows(paths["test_id"]))
    assert json.loads(paths["world"].read_text())["label_noise"] == 0.1
    for name in ("train_large", "test_id", "test_ood"):  # readable like user data, with source and subset kept
        dataset = load_preferences(str(paths[name]))
        assert len(dataset) == len(rows(paths[name])) and dataset.format == "trl"
        assert dataset.examples[0].subset.startswith(dataset.examples[0].source + "/")
    prompts = write_prompts(tmp_path / "prompts.jsonl", "test_ood", 5)
    assert len(prompts.read_text().splitlines()) == 5


def test_training_threads_follow_idle_cores_not_the_lagging_load_average(monkeypatch):
    samples = itertools.cycle([(100, 1000), (100 + 150, 1000 + 200)])  # 150 of 200 jiffies idle, 2 cores -> 1.5 idle
    monkeypatch.setattr(policy_module, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(policy_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(policy_module.os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # stale: a job that just ended
    monkeypatch.setattr(policy_module.time, "sleep", lambda s: None)
    assert policy_module.idle_cores() == pytest.approx(1.5)
    assert policy_module.training_threads() == 2

    monkeypatch.setattr(policy_module, "_cpu_times", lambda: None)  # no /proc/stat: fall back on the load average
    assert policy_module.idle_cores() == pytest.approx(0.0)
    assert policy_module.training_threads() == 1
