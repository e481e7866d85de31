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
    WORLD_VERSION,
    WORLDS,
    GoldReward,
    TaskInstance,
    feedback_token,
    gold_score,
    gold_token_scores,
    has_cue,
    make_prompts,
    make_tasks,
    noisy_answer,
    parse_prompt,
    split_pairs,
    world_spec,
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


def test_gold_ignores_one_trailing_style_cue():
    assert gold_score("acbd.", "acbd") == 1.0 and has_cue("acbd.") and not has_cue("acbd")
    assert gold_score("acb.", "acbd") == pytest.approx(0.75)
    assert gold_score("acbd..", "acbd") == pytest.approx(0.8)  # only one cue is style; the second is an extra symbol
    scores = gold_token_scores("acx.", "acbd")
    assert scores == pytest.approx([0.25, 0.25, 0.0, 0.0]) and len(scores) == 4
    assert gold_token_scores(".", "ab") == [0.0]
    assert GoldReward().score(["copy: ab"], ["ab."]) == [1.0]


@pytest.mark.parametrize(("gold", "token"), [(0.0, "0"), (1.0, "9"), (1 / 3, "3"), (2 / 3, "6"), (0.75, "7"), (0.8, "7")])
def test_feedback_token_is_the_rounded_rating(gold, token):
    assert feedback_token(gold) == token


def test_feedback_token_is_monotone_in_gold_and_checks_its_range():
    golds = sorted({k / n for n in range(1, 15) for k in range(n + 1)})
    ratings = [int(feedback_token(g)) for g in golds]
    assert ratings == sorted(ratings) and ratings[0] == 0 and ratings[-1] == 9
    with pytest.raises(ValueError):
        feedback_token(1.5)


def test_world_versions():
    assert WORLD_VERSION == 4 and set(WORLDS) >= {3, 4}
    v3, v4 = world_spec(3), world_spec(4)
    assert not v3.feedback and v3.cue_rate == 0 and v3.shortcut_strength == 0
    assert v4.feedback and 0 < v4.cue_rate < 1 and 0.5 < v4.shortcut_strength < 1
    with pytest.raises(ValueError, match="unknown world version 2"):
        world_spec(2)
