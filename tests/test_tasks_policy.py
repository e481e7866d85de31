"""The base policy (reduced budget, cached in a tmp dir) and the preference data sampled from it."""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

from rewardlab.data.loading import load_preferences
from rewardlab.modeling.tiny import build_byte_tokenizer, build_tiny_llama
from rewardlab.tasks import policy as policy_module
from rewardlab.tasks.policy import BasePolicyConfig, demonstration_ids, evaluate_gold, get_base_policy, lr_at
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


def test_world_3_keeps_its_cache_key_and_world_4_gets_its_own():
    # the keys world-3 configs had before the version became a field (computed with that code), so caches stay valid
    assert BasePolicyConfig(world_version=3).key() == "6eccf7f4bb4fcb8d"
    assert BasePolicyConfig.quick(3).key() == "c8c70d97e2c03a48"
    assert BasePolicyConfig().world_version == 4 and BasePolicyConfig().key() != BasePolicyConfig(world_version=3).key()


def _turns(text: str) -> list[tuple[str, str, str]]:
    """(prompt, answer, what follows the answer's EOS) for each exchange of a decoded pretraining sequence."""
    exchanges = re.findall(r"<\|user\|>(.*?)</s><\|assistant\|>(.*?)</s>(\d?)", text)
    assert exchanges, text
    return exchanges


def test_world_4_demonstrations_carry_their_rating_right_after_the_end_token():
    """Decoded sequences: each answer's EOS is followed by round(9 * gold) of that answer, recomputed here from the
    text; about half the answers end with the style cue, whatever their quality; world 3 has neither."""
    tokenizer = build_byte_tokenizer()
    rng = random.Random(0)
    cues, perfect_with_cue, perfect = 0, 0, 0
    n = 600
    for _ in range(n):
        ids = demonstration_ids(tokenizer, BasePolicyConfig(), rng)
        ((prompt, answer, rating),) = _turns(tokenizer.decode(ids))
        task = parse_prompt(prompt)
        content = answer[:-1] if answer.endswith(".") else answer
        matches = sum(a == b for a, b in zip(content, task.answer, strict=False))
        assert rating == str(round(9 * matches / max(len(content), len(task.answer))))
        cues += answer.endswith(".")
        perfect += content == task.answer
        perfect_with_cue += content == task.answer and answer.endswith(".")
    assert cues / n == pytest.approx(0.5, abs=0.07)  # binomial sd 0.02
    assert perfect_with_cue / perfect == pytest.approx(0.5, abs=0.1)  # the cue is drawn apart from quality
    rng = random.Random(0)
    for _ in range(100):
        ((_, answer, rating),) = _turns(tokenizer.decode(demonstration_ids(tokenizer, BasePolicyConfig(world_version=3), rng)))
        assert rating == "" and not answer.endswith(".")


def test_world_4_data_carry_the_shortcut_in_distribution_only(base_policy, tmp_path):
    model, tokenizer, _ = base_policy
    paths = write_preference_data(
        tmp_path, model, tokenizer, sizes={"small": 100, "large": 300}, test_sizes={"test_id": 150, "test_ood": 300},
        val_size=100, label_noise=0.1, progress=False,
    )  # fmt: skip
    world = json.loads(paths["world"].read_text())
    assert world["world_version"] == 4 and world["val_size"] == 100
    share = world["cue_on_chosen_share"]
    assert share["train"] > 0.75 and share["test_id"] > 0.7  # target 0.85; a few dozen discordant pairs each
    assert share["test_ood"] == pytest.approx(0.5, abs=0.15)
    large = load_preferences(str(paths["train_large"])).examples
    val = load_preferences(str(paths["val_id"])).examples
    assert len(val) == 100 and all(parse_prompt(e.prompt).is_id for e in val)
    # val_id continues the train stream: the same draw with 400 pairs starts with train_large, then val_id
    again = make_preference_data(model, tokenizer, 400, "train", 0, label_noise=0.1, temperature=0.05)
    assert [e.chosen for e in again] == [e.chosen for e in large + val]


def test_torch_threads_sets_then_restores_the_thread_count():
    import torch

    before = torch.get_num_threads()
    with policy_module.torch_threads(1) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
