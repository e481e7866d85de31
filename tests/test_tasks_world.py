from __future__ import annotations

import random

import pytest

from rewardlab.tasks.world import (
    FAMILIES,
    ID_FAMILIES,
    ID_STYLES,
    OOD_FAMILIES,
    OOD_STYLES,
    STYLES,
    GoldReward,
    TaskInstance,
    gold_score,
    gold_token_scores,
    make_prompts,
    make_tasks,
    noisy_answer,
    parse_prompt,
    split_pairs,
)


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("acbd", "acbd", 1.0),  # perfect
        ("acxd", "acbd", 0.75),  # one wrong symbol
        ("acb", "acbd", 0.75),  # one missing at the end
        ("acbdd", "acbd", 0.8),  # too long: the extra symbol counts as a wrong position
        ("acbdxxxx", "acbd", 0.5),
        ("", "acbd", 0.0),  # empty
        ("cbd", "acbd", 0.0),  # shifted by one: every position wrong
        ("dbca", "acbd", 0.0),
        ("1o2", "102", 2 / 3),
    ],
)
def test_gold_score_hand_examples(response, answer, expected):
    assert gold_score(response, answer) == pytest.approx(expected)
    token_scores = gold_token_scores(response, answer)
    assert len(token_scores) == len(response)
    assert sum(token_scores) == pytest.approx(expected)


def test_gold_token_scores_mark_the_right_positions():
    assert gold_token_scores("axbdd", "abbd") == pytest.approx([0.2, 0.0, 0.2, 0.2, 0.0])


def test_solvers_hand_examples():
    cases = {
        "copy": ("dbca", "dbca"),
        "reverse": ("dbca", "acbd"),
        "sort": ("dbcab", "abbcd"),
        "dedup": ("abacbd", "abcd"),
        "shift": ("agh", "bha"),
        "rotate": ("dbca", "bcad"),
    }
    assert set(cases) == set(FAMILIES)
    for family, (x, answer) in cases.items():
        assert FAMILIES[family].solve(x) == answer


def test_gold_reward_accepts_every_prompt_shape():
    gold = GoldReward()
    messages = [{"role": "user", "content": "reverse: dbca"}]
    prompts = [messages, "reverse: dbca", "<|user|>reverse: dbca</s><|assistant|>", "what is rotate of dbca?"]
    responses = ["acbd", [{"role": "assistant", "content": "acbx"}], "", "bxa"]
    assert gold.score(prompts, responses) == pytest.approx([1.0, 0.75, 0.0, 0.5])
    assert [sum(t) for t in gold.token_scores(prompts, responses)] == pytest.approx([1.0, 0.75, 0.0, 0.5])
    with pytest.raises(ValueError, match="not a rewardlab task prompt"):
        gold.score(["tell me a joke"], ["no"])
    with pytest.raises(ValueError):
        gold.score(["reverse: ab"], [])


def test_prompts_parse_back_to_their_task():
    for task in make_tasks("all", 200, seed=0):
        assert parse_prompt(task.messages) == task
        assert parse_prompt(task.prompt_text) == task


def test_family_and_style_splits_are_disjoint_and_cover_the_world():
    assert not set(ID_FAMILIES) & set(OOD_FAMILIES) and set(ID_FAMILIES) | set(OOD_FAMILIES) == set(FAMILIES)
    assert not set(ID_STYLES) & set(OOD_STYLES) and set(ID_STYLES) | set(OOD_STYLES) == set(STYLES)
    train, ood = set(split_pairs("train")), set(split_pairs("test_ood"))
    assert train == set(split_pairs("test_id"))
    assert not train & ood
    assert train | ood == set(split_pairs("all"))
    assert all(f in ID_FAMILIES and s in ID_STYLES for f, s in train)


def test_split_tasks_respect_the_split():
    train = make_tasks("train", 3000, seed=0)
    test_id = make_tasks("test_id", 1000, seed=0)
    test_ood = make_tasks("test_ood", 1000, seed=0)
    assert all(t.is_id for t in train + test_id)
    assert not any(t.is_id for t in test_ood)
    # train and test_id never share a task (same family and input), whatever the style
    assert not {(t.family, t.input) for t in train} & {(t.family, t.input) for t in test_id}
    # every pair of the split shows up, evenly
    assert {(t.family, t.style) for t in test_ood} == set(split_pairs("test_ood"))


def test_prompts_are_deterministic_in_the_seed():
    assert make_prompts("train", 50, seed=1) == make_prompts("train", 50, seed=1)
    assert make_prompts("train", 50, seed=1) != make_prompts("train", 50, seed=2)
    assert make_prompts("train", 20, seed=1) == make_prompts("train", 50, seed=1)[:20]
    assert make_prompts("test_ood", 1, seed=0)[0][0]["role"] == "user"


def test_inputs_are_single_character_symbols():
    for task in make_tasks("all", 500, seed=3):
        x = task.input
        assert 3 <= len(x) <= 7 and set(x) <= set("abcdefgh")
        if task.family == "dedup":
            assert len(set(x)) < len(x)


def test_noisy_answer_error_rates():
    rng = random.Random(0)
    assert noisy_answer("abcdefgh", "abcdefgh", 0.0, rng) == "abcdefgh"
    # Answer "aaa...a" over alphabet "ab": 'b's come from substitutions (rate r) and half the insertions (rate r/4);
    # drops (r/4) and insertions (r/4) cancel in length on average.
    rate, n = 0.4, 20_000
    out = noisy_answer("a" * n, "ab", rate, rng)
    assert out.count("b") / n == pytest.approx(rate + rate / 8, abs=0.015)
    assert len(out) / n == pytest.approx(1.0, abs=0.015)


def test_task_instance_properties():
    task = TaskInstance("sort", "please", "dbca")
    assert task.prompt_text == "please sort dbca"
    assert task.messages == [{"role": "user", "content": "please sort dbca"}]
    assert task.answer == "abcd" and task.subset == "sort/please" and task.is_id
    assert not TaskInstance("sort", "arrow", "dbca").is_id and not TaskInstance("shift", "colon", "dbca").is_id
