from __future__ import annotations

import json
import random

import pytest

from rewardlab.errors import UserError
from rewardlab.tasks.steps import (
    ID_STEP_FAMILIES,
    SEMANTICS,
    STEP_FAMILIES,
    StepGoldReward,
    StepTask,
    corrupt_step,
    first_error,
    gold_step_labels,
    join_steps,
    make_step_data,
    make_step_tasks,
    outcome_correct,
    outcome_gold,
    parse_step_prompt,
    sample_step_solutions,
    split_steps,
    step_preference_pairs,
    write_step_data,
    write_step_prompts,
)
from rewardlab.tasks.world import ID_STYLES, OOD_FAMILIES, OOD_STYLES, STYLES, parse_prompt

# shift then dedup then rotate of abca, by hand: shift abca = bcdb, dedup bcdb = bcd, rotate bcd = cdb
TASK = StepTask(("shift", "dedup", "rotate"), "colon", "abca")
HAND = [
    # steps, value labels, local labels, prefix labels, first error, outcome gold
    (["bcdb", "bcd", "cdb"], [1, 1, 1], [1, 1, 1], [1, 1, 1], -1, 1.0),
    # wrong first step, then dedup removes the wrong symbol: right answer, wrong process
    (["bcdc", "bcd", "cdb"], [0, 1, 1], [0, 1, 1], [0, 0, 0], 0, 1.0),
    # wrong first step, propagated: later steps follow from it (valid in context, wrong in value)
    (["bceb", "bce", "ceb"], [0, 0, 0], [0, 1, 1], [0, 0, 0], 0, 2 / 3),
    # isolated error at step 1: step 2 is the correct value but does not follow from the written step 1
    (["bcdb", "bdc", "cdb"], [1, 0, 1], [1, 0, 0], [1, 0, 0], 1, 1.0),
    # the last operation skipped
    (["bcdb", "bcd", "bcd"], [1, 1, 0], [1, 1, 0], [1, 1, 0], 2, 0.0),
    # stops early: the last line is the final answer, and it comes too soon
    (["bcdb", "bcd"], [1, 0], [1, 0], [1, 0], 1, 0.0),
    # a step with no operation
    (["bcdb", "bcd", "cdb", "cdb"], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], 3, 1.0),
    # the style cue on the final answer is style, not content
    (["bcdb", "bcd", "cdb."], [1, 1, 1], [1, 1, 1], [1, 1, 1], -1, 1.0),
    # a cue on an intermediate step is not
    (["bcdb.", "bcd", "cdb"], [0, 1, 1], [0, 0, 1], [0, 0, 0], 0, 1.0),
    # empty response: one empty, wrong step
    ([""], [0], [0], [0], 0, 0.0),
]


@pytest.mark.parametrize(("steps", "value", "local", "prefix", "error", "outcome"), HAND)
def test_hand_worked_examples(steps, value, local, prefix, error, outcome):
    assert TASK.values == ["bcdb", "bcd", "cdb"]
    for semantics, expected in zip(SEMANTICS, (value, local, prefix), strict=True):
        assert gold_step_labels(TASK, steps, semantics) == [bool(v) for v in expected], semantics
    text = join_steps(steps)
    assert split_steps(text) == steps
    for prompt in (TASK, TASK.prompt_text, TASK.messages):
        assert gold_step_labels(prompt, text) == [bool(v) for v in value]
        assert first_error(prompt, steps) == error
        assert outcome_gold(prompt, text) == pytest.approx(outcome)
        assert outcome_correct(prompt, steps) == (outcome == 1.0)


def test_second_hand_example_question_style():
    # reverse dbca = acbd, sort acbd = abcd
    prompt = "<|user|>what is reverse then sort of dbca?</s><|assistant|>"
    assert parse_step_prompt(prompt) == StepTask(("reverse", "sort"), "question", "dbca")
    assert gold_step_labels(prompt, "acbd\nabcd") == [True, True]
    assert gold_step_labels(prompt, "abcd\nabcd") == [False, True]  # sorted at once: right answer, step 0 wrong
    assert first_error(prompt, "abcd\nabcd") == 0
    assert first_error(prompt, "acbd\nabdc") == 1
    assert StepGoldReward().score([prompt, prompt], ["acbd\nabcd", "acbd\nabdc"]) == pytest.approx([1.0, 0.5])
    assert StepGoldReward().step_labels([prompt], [[{"role": "assistant", "content": "acbd\nabcd"}]]) == [[True, True]]


def test_prompts_parse_back_in_every_style_and_stay_apart_from_world_prompts():
    for style in STYLES:
        task = StepTask(("sort", "shift", "rotate"), style, "hgab")
        assert parse_step_prompt(task.prompt_text) == task
        assert parse_step_prompt(task.messages) == task
        with pytest.raises(UserError):
            parse_prompt(task.prompt_text)  # the world's gold reward never grades a chain as one task
    assert parse_step_prompt("reverse: abc") == StepTask(("reverse",), "colon", "abc")  # a world task is a 1-step chain
    for bad in ("reverse then fly: abc", "hello", "shift then sort: abz", [{"role": "assistant", "content": "sort: ab"}]):
        with pytest.raises(UserError):
            parse_step_prompt(bad)
    with pytest.raises(UserError):
        gold_step_labels(TASK, ["bcdb"], "strict")
    with pytest.raises(UserError):
        gold_step_labels(TASK, [])


# ---------------------------------------------------------------- an independent labeller for generated data

_BY_HAND = {
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
    "rotate": lambda s: s[1:] + s[:1],
    "dedup": lambda s: "".join(c for i, c in enumerate(s) if c not in s[:i]),
    "shift": lambda s: s.translate(str.maketrans("abcdefgh", "bcdefgha")),
}


def _labels_by_hand(task: StepTask, steps: list[str]) -> list[bool]:
    value, correct = task.input, []
    for op in task.ops:
        value = _BY_HAND[op](value)
        correct.append(value)
    labels = [i < len(correct) and s == correct[i] for i, s in enumerate(steps[:-1])]
    last = steps[-1].removesuffix(".")
    return [*labels, len(steps) == len(correct) and last == correct[-1]]


def test_generated_labels_match_an_independent_labeller():
    for split in ("train", "test_ood"):
        for example in make_step_data(split, 300, seed=3):
            steps = list(example.steps)
            assert list(example.labels) == _labels_by_hand(example.task, steps)
            expected_error = next((i for i, ok in enumerate(example.labels) if not ok), -1)
            assert example.first_error == expected_error == first_error(example.task, steps)


def test_first_error_is_the_same_under_every_semantics():
    tasks = make_step_tasks("test_ood", 150, seed=0)
    for task, candidates in zip(tasks, sample_step_solutions(tasks, 6, 0.3, seed=1), strict=True):
        for steps in [*candidates, candidates[0][:-1], [*candidates[0], "abc"]]:
            errors = set()
            for semantics in SEMANTICS:
                labels = gold_step_labels(task, steps, semantics)
                errors.add(labels.index(False) if False in labels else -1)
            assert errors == {first_error(task, steps)}


def test_planted_errors_share_of_correct_and_propagation():
    examples = make_step_data("train", 400, seed=0, correct_share=0.3, propagate_rate=0.5)
    assert sum(e.first_error == -1 for e in examples) == 120  # exactly round(n * share)
    assert all(e.outcome == 1.0 for e in examples if e.first_error == -1)
    wrong = [e for e in examples if e.first_error >= 0]
    positions = {e.first_error for e in wrong}
    assert positions == {0, 1, 2}
    propagated = [e for e in wrong if e.propagated]
    assert 0.4 < len(propagated) / len(wrong) < 0.6
    for e in wrong:
        values, error = e.task.values, e.first_error
        assert list(e.steps[:error]) == values[:error] and e.steps[error] != values[error]
        after = gold_step_labels(e.task, e.steps, "local")[error + 1 :]
        if e.propagated:
            assert all(after)  # every later step follows from the wrong one
        else:
            assert list(e.steps[error + 1 :]) == values[error + 1 :]
    assert all(e.first_error >= 0 for e in make_step_data("test_id", 50, seed=0, correct_share=0.0))
    with pytest.raises(UserError):
        make_step_data("train", 10, correct_share=1.5)


def test_splits_follow_the_world_id_ood_split_and_share_no_task():
    tasks = {split: make_step_tasks(split, 300, seed=0) for split in ("train", "validation", "test_id", "test_ood")}
    keys = {split: {(t.ops, t.input) for t in ts} for split, ts in tasks.items()}
    for split in ("train", "validation", "test_id"):
        assert all(t.is_id and set(t.ops) <= set(ID_STEP_FAMILIES) and t.style in ID_STYLES for t in tasks[split])
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test_id"]
    assert not keys["validation"] & keys["test_id"]
    ood = tasks["test_ood"]
    assert not any(t.is_id for t in ood)
    kinds = [(any(op in OOD_FAMILIES for op in t.ops), t.style in OOD_STYLES) for t in ood]
    assert {k: kinds.count(k) for k in set(kinds)} == {(False, True): 100, (True, False): 100, (True, True): 100}
    assert all(set(t.ops) <= set(STEP_FAMILIES) and 2 <= len(t.ops) <= 3 for ts in tasks.values() for t in ts)
    assert all(a != b for ts in tasks.values() for t in ts for a, b in zip(t.ops, t.ops[1:], strict=False))
    assert all(len(set(t.input)) < len(t.input) for t in ood if "dedup" in t.ops)  # dedup always removes a symbol
    with pytest.raises(UserError):
        make_step_tasks("test", 1, 0)


def test_deterministic_by_seed():
    assert make_step_data("test_ood", 100, seed=5) == make_step_data("test_ood", 100, seed=5)
    assert make_step_data("test_ood", 100, seed=5) != make_step_data("test_ood", 100, seed=6)
    tasks = make_step_tasks("train", 40, seed=0)
    assert sample_step_solutions(tasks, 8, 0.2, seed=1) == sample_step_solutions(tasks, 8, 0.2, seed=1)
    assert sample_step_solutions(tasks, 8, 0.2, seed=1) != sample_step_solutions(tasks, 8, 0.2, seed=2)
    # the first candidates of a larger N are the same, and a task's candidates do not depend on the other tasks
    larger = sample_step_solutions(tasks, 16, 0.2, seed=1)
    assert [c[:8] for c in larger] == sample_step_solutions(tasks, 8, 0.2, seed=1)
    assert sample_step_solutions([t.prompt_text for t in tasks[:5]], 16, 0.2, seed=1) == larger[:5]


@pytest.mark.parametrize("error_rate", [0.0, 0.1, 0.3, 1.0])
def test_sampler_error_rate_is_near_its_setting(error_rate):
    tasks = make_step_tasks("test_ood", 250, seed=0)
    candidates = sample_step_solutions(tasks, 8, error_rate, seed=0)
    local = [ok for task, cs in zip(tasks, candidates, strict=True) for c in cs for ok in gold_step_labels(task, c, "local")]
    assert len(local) > 4_000
    assert 1 - sum(local) / len(local) == pytest.approx(error_rate, abs=0.025)  # binomial sd <= 0.008
    if error_rate == 0.0:
        assert all(c == task.values for task, cs in zip(tasks, candidates, strict=True) for c in cs)
    with pytest.raises(UserError):
        sample_step_solutions(tasks, 2, -0.1)


def test_corrupt_step_always_makes_a_different_nonempty_step():
    rng = random.Random(0)
    for task in make_step_tasks("test_ood", 300, seed=2):
        previous = task.input
        for op, target in zip(task.ops, task.values, strict=True):
            for _ in range(5):
                wrong = corrupt_step(target, previous, op, rng)
                assert wrong and wrong != target and set(wrong) <= set("abcdefgh")
            previous = target


def test_files_round_trip_as_plain_json(tmp_path):
    sizes = {"train": 40, "validation": 10, "test_id": 10, "test_ood": 20}
    paths = write_step_data(tmp_path, sizes=sizes, seed=0, correct_share=0.25)
    assert set(paths) == {f"{s}_{f}" for s in sizes for f in ("stepwise", "processbench")} | {"settings"}
    for split, n in sizes.items():
        stepwise = [json.loads(line) for line in paths[f"{split}_stepwise"].read_text().splitlines()]
        bench = [json.loads(line) for line in paths[f"{split}_processbench"].read_text().splitlines()]
        examples = make_step_data(split, n, seed=0, correct_share=0.25)
        assert len(stepwise) == len(bench) == n
        for row, pb, example in zip(stepwise, bench, examples, strict=True):
            assert row["prompt"] == pb["problem"] == example.task.prompt_text
            assert row["completions"] == pb["steps"] == list(example.steps)
            assert all(isinstance(v, bool) for v in row["labels"]) and len(row["labels"]) == len(row["completions"])
            assert row["labels"] == gold_step_labels(row["prompt"], row["completions"])
            assert pb["label"] == (row["labels"].index(False) if False in row["labels"] else -1)
            assert pb["final_answer_correct"] == outcome_correct(pb["problem"], pb["steps"])
            assert all("\n" not in step and step for step in row["completions"])
            assert row["subset"] == pb["subset"] == example.task.subset
        assert sum(pb["label"] == -1 for pb in bench) == round(n * 0.25)
        assert len({pb["id"] for pb in bench}) == n
    settings = json.loads(paths["settings"].read_text())
    assert settings["sizes"] == sizes and settings["semantics"] == "value"
    assert settings["measured"]["train"]["all_correct_share"] == 0.25
    again = write_step_data(tmp_path / "again", sizes=sizes, seed=0, correct_share=0.25)
    assert all(again[k].read_bytes() == paths[k].read_bytes() for k in paths)


def test_chat_files_carry_the_same_tasks_steps_and_labels_as_messages(tmp_path):
    from rewardlab.data.steps import load_steps

    plain = write_step_data(tmp_path / "plain", sizes={"train": 12}, seed=0)
    chat = write_step_data(tmp_path / "chat", sizes={"train": 12}, seed=0, chat=True)
    assert chat["train_processbench"].read_bytes() == plain["train_processbench"].read_bytes()  # ProcessBench is plain
    rows = [[json.loads(line) for line in paths["train_stepwise"].read_text().splitlines()] for paths in (plain, chat)]
    for a, b in zip(*rows, strict=True):
        assert b["prompt"] == [{"role": "user", "content": a["prompt"]}] and b | {"prompt": a["prompt"]} == a
    loaded = load_steps(str(chat["train_stepwise"]))  # the trainer's reader takes the messages as the prompt
    assert [e.prompt for e in loaded.examples] == [r["prompt"] for r in rows[1]]
    pairs = step_preference_pairs("train", 6, seed=0)
    chat_pairs = step_preference_pairs("train", 6, seed=0, chat=True)
    for a, b in zip(pairs, chat_pairs, strict=True):
        assert b["prompt"][0]["content"] + "\n" == a["prompt"] and parse_step_prompt(b["prompt"]).chain in a["prompt"]
        assert b["chosen"] == [{"role": "assistant", "content": a["chosen"]}]
        assert b["rejected"] == [{"role": "assistant", "content": a["rejected"]}]


def test_files_can_carry_prefix_labels(tmp_path):
    paths = write_step_data(tmp_path, sizes={"train": 60}, seed=1, semantics="prefix")
    for line in paths["train_stepwise"].read_text().splitlines():
        labels = json.loads(line)["labels"]
        assert labels == sorted(labels, reverse=True)  # True ... True False ... False
    with pytest.raises(UserError):
        write_step_data(tmp_path / "x", sizes={"train": 1}, semantics="strict")


def test_prompt_file_parses_back(tmp_path):
    path = write_step_prompts(tmp_path / "prompts.jsonl", "test_ood", 12, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [parse_step_prompt(r["prompt"]) for r in rows] == make_step_tasks("test_ood", 12, seed=0)
    assert all(r["subset"] == parse_step_prompt(r["prompt"]).subset for r in rows)
