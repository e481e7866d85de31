"""Listwise data: the RewardBench 2, RM-Bench, UltraFeedback and generic adapters, format detection, rated lists to pairs
(--pairs all | best-worst | best-random), and loading with counts (fixtures in each real schema)."""

from __future__ import annotations

import copy
import itertools
import json
import random
import sys
import types
from pathlib import Path

import pytest

from rewardlab.data.errors import DataError
from rewardlab.data.listwise import (
    ListwiseDataset,
    detect_listwise_format,
    from_listwise,
    from_rewardbench2,
    from_rm_bench,
    from_ultrafeedback,
    pair_rng,
    preference_pairs,
    tied_pair_count,
)
from rewardlab.data.loading import load_dataset, load_preferences

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def records(name: str) -> list[dict]:
    path = FIXTURES / name
    if name.endswith(".json"):
        return json.loads(path.read_text())
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


RB2 = records("rewardbench2.jsonl")[0]
RMB = records("rm_bench.json")[0]
UF = records("ultrafeedback.jsonl")[0]
LW = records("listwise.jsonl")[0]


# ----------------------------------------------------------------------------------------------------------------------
# detection


def test_detect_each_listwise_format():
    assert detect_listwise_format(RB2) == "rewardbench2"
    assert detect_listwise_format(RMB) == "rm-bench"
    assert detect_listwise_format(UF) == "ultrafeedback"
    assert detect_listwise_format(LW) == "listwise"


def test_pairwise_records_are_not_listwise():
    trl_conversational = {"prompt": user("Q"), "chosen": assistant("a"), "rejected": assistant("b")}
    rewardbench = {"prompt": "Q", "chosen": "a", "rejected": "b", "subset": "math-prm"}
    assert detect_listwise_format(trl_conversational) is None  # chosen is a list of messages, not of completions
    assert detect_listwise_format(rewardbench) is None


# ----------------------------------------------------------------------------------------------------------------------
# evaluation adapters


def test_rewardbench2_adapter():
    ex = from_rewardbench2(RB2)
    assert ex.prompt == user(RB2["prompt"]) and ex.subset == "Factuality"
    assert ex.chosen == [assistant(c) for c in RB2["chosen"]] and ex.rejected == [assistant(r) for r in RB2["rejected"]]
    assert ex.metadata == {"id": "1", "models": RB2["models"]}


def test_rewardbench2_keeps_empty_completions():
    """A benchmark scores what it holds: the fixture's Math prompt has an empty rejected completion."""
    math = next(r for r in records("rewardbench2.jsonl") if r["subset"] == "Math")
    assert from_rewardbench2(math).rejected[-1] == assistant("")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"chosen": "a"}, "chosen", "expected a list of strings"),
        ({"chosen": []}, "chosen", "at least 1"),
        ({"rejected": ["a", 3]}, "rejected", "item 1: expected a string"),
        ({"num_correct": 2}, "num_correct", "says 2 but there are 1 chosen"),
        ({"total_completions": 5}, "total_completions", "says 5 but there are 4 completions"),
        ({"subset": None}, "subset", "missing field"),
        ({"subset": "Ties", "id": "12"}, "id", "'ref:N' or 'tied:N'"),
    ],
)
def test_rewardbench2_validation(changes, field, message):
    record = copy.deepcopy(RB2) | changes
    with pytest.raises(DataError, match=message) as err:
        from_rewardbench2(record)
    assert err.value.field == field


def test_rm_bench_adapter_and_validation():
    ex = from_rm_bench(RMB)
    assert ex.domain == "chat" and len(ex.chosen) == len(ex.rejected) == 3 and ex.metadata == {"id": 1}
    with pytest.raises(DataError, match="expected 3 completions") as err:
        from_rm_bench(RMB | {"rejected": RMB["rejected"][:2]})
    assert err.value.field == "rejected"
    with pytest.raises(DataError, match="missing field") as err:
        from_rm_bench({k: v for k, v in RMB.items() if k != "domain"})
    assert err.value.field == "domain"


# ----------------------------------------------------------------------------------------------------------------------
# training adapters


def test_ultrafeedback_adapter_uses_fine_grained_score():
    rated = from_ultrafeedback(UF)
    assert rated.prompt == user(UF["instruction"]) and rated.source == "evol_instruct"
    assert rated.responses == [assistant(c["response"]) for c in UF["completions"]]
    assert rated.scores == [c["fine-grained_score"] for c in UF["completions"]]
    assert rated.scores != [c["overall_score"] for c in UF["completions"]]


def test_ultrafeedback_validation_names_the_completion():
    bad = copy.deepcopy(UF)
    bad["completions"][2]["fine-grained_score"] = "N/A"
    with pytest.raises(DataError, match="expected a number") as err:
        from_ultrafeedback(bad)
    assert err.value.field == "completions[2].fine-grained_score"
    del bad["completions"][1]["response"]
    with pytest.raises(DataError) as err:
        from_ultrafeedback(bad)
    assert err.value.field == "completions[1].response"


def test_listwise_adapter_strings_and_messages():
    rated = from_listwise(LW)
    assert rated.prompt == LW["prompt"] and rated.responses == LW["responses"] and rated.scores == [9.0, 1.0, 8.0, 2.0]
    conversational = records("listwise.jsonl")[1]
    rated = from_listwise(conversational)
    assert rated.prompt == user("Suggest a name for a dog.") and rated.responses[1] == assistant("Table.")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"scores": [1, 2]}, "scores", "2 scores for 4 responses"),
        ({"scores": [1, 2, "x", 4]}, "scores[2]", "expected a number"),
        ({"responses": [" a", [{"role": "assistant", "content": "b"}], " c", " d"]}, "responses[1]", "like prompt"),
    ],
)
def test_listwise_validation(changes, field, message):
    with pytest.raises(DataError, match=message) as err:
        from_listwise(LW | changes)
    assert err.value.field == field


# ----------------------------------------------------------------------------------------------------------------------
# pairs from rated lists


def test_pairs_all_drops_ties_and_orders_by_score():
    scores = [3.0, 1.0, 3.0, 2.0]
    pairs = preference_pairs(scores, "all", random.Random(0))
    expected = {(i, j) for i, j in itertools.permutations(range(4), 2) if scores[i] > scores[j]}
    assert set(pairs) == expected and len(pairs) == len(expected) == 5  # 6 pairs minus the tie (0, 2)
    assert tied_pair_count(scores) == 1


def test_pairs_best_worst():
    assert preference_pairs([2.0, 5.0, 1.0, 5.0, 1.0], "best-worst", random.Random(0)) == [(1, 2)]  # first max, first min
    assert preference_pairs([2.0, 2.0], "best-worst", random.Random(0)) == []


def test_pairs_best_random_draws_only_strictly_lower_and_is_seeded():
    scores = [4.0, 1.0, 4.0, 2.0, 3.0]
    draws = {preference_pairs(scores, "best-random", pair_rng(seed, 0))[0] for seed in range(200)}
    assert {best for best, _ in draws} == {0}
    assert {rejected for _, rejected in draws} == {1, 3, 4}  # never the other 4.0 (a tie), all lower ones in 200 draws
    assert preference_pairs(scores, "best-random", pair_rng(7, 3)) == preference_pairs(scores, "best-random", pair_rng(7, 3))
    assert preference_pairs([1.0, 1.0], "best-random", random.Random(0)) == []


def test_unknown_pairs_mode():
    with pytest.raises(ValueError, match="best-worst"):
        preference_pairs([1.0, 2.0], "top2", random.Random(0))


def independent_pairs(rows: list[tuple[list[float], list]], mode: str) -> int:
    """Pair counts from the scores alone: all = pairs of different scores; best-worst/random = 1 per non-constant list."""
    if mode == "all":
        return sum(sum(a != b for a, b in itertools.combinations(scores, 2)) for scores, _ in rows)
    return sum(max(scores) != min(scores) for scores, _ in rows)


@pytest.mark.parametrize("mode", ["all", "best-worst", "best-random"])
def test_load_ultrafeedback_pairs_and_counts(mode):
    raw = records("ultrafeedback.jsonl")
    rows = [([c["fine-grained_score"] for c in r["completions"]], r) for r in raw]
    ds = load_preferences(fixture("ultrafeedback.jsonl"), pairs=mode, seed=3)
    assert ds.format == "ultrafeedback" and len(ds) == independent_pairs(rows, mode)
    assert ds.stats["loaded"] == len(ds) and ds.stats["read"] == 3
    assert ds.stats["excluded"] == 1 and ds.stats["prompts"] == 2  # the third prompt's two completions tie
    if mode == "all":
        assert ds.stats["tied_pairs"] == sum(tied_pair_count(s) for s, _ in rows)
    for ex in ds.examples:  # margin = score difference, chosen scored higher
        record = raw[[r["instruction"] for r in raw].index(ex.prompt[0]["content"])]
        i, j = ex.metadata["chosen_index"], ex.metadata["rejected_index"]
        scores = [c["fine-grained_score"] for c in record["completions"]]
        assert ex.margin == scores[i] - scores[j] > 0
        assert ex.chosen == assistant(record["completions"][i]["response"]) and ex.source == record["source"]


def test_load_listwise_detected_and_limited():
    ds = load_preferences(fixture("listwise.jsonl"))
    assert ds.format == "listwise" and len(ds) == 6 + 2  # 4 responses: 6 pairs; 3 responses with one tie: 2 pairs
    assert ds.stats["tied_pairs"] == 1
    assert len(load_preferences(fixture("listwise.jsonl"), limit=7)) == 7


def test_best_random_pairs_do_not_depend_on_earlier_records(tmp_path):
    """Each record draws from its own generator: dropping an earlier record keeps the later records' draws."""
    lines = (FIXTURES / "ultrafeedback.jsonl").read_text().splitlines()
    full = load_preferences(fixture("ultrafeedback.jsonl"), pairs="best-random", seed=1)
    path = tmp_path / "uf.jsonl"
    path.write_text("\n".join(["{}", *lines[1:]]) + "\n")  # line 1 replaced by an invalid record, skipped
    partial = load_preferences(str(path), format="ultrafeedback", pairs="best-random", seed=1, skip_invalid=True)
    assert partial.examples[0].metadata == full.examples[1].metadata and partial.stats["invalid"] == 1


def test_listwise_errors_name_file_line_field(tmp_path):
    bad = copy.deepcopy(records("ultrafeedback.jsonl"))
    bad[1]["completions"][3]["response"] = 7
    path = tmp_path / "uf.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(DataError) as err:
        load_preferences(str(path))
    assert str(err.value).startswith(f"{path}:2: field 'completions[3].response': ")


def test_empty_answers_in_rated_lists_are_paired_and_counted(tmp_path):
    good = copy.deepcopy(records("ultrafeedback.jsonl"))
    good[1]["completions"][3]["response"] = "   "
    path = tmp_path / "uf.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    ds = load_preferences(str(path))
    empty = [ex for ex in ds.examples if ex.chosen == [{"role": "assistant", "content": "   "}] or
             ex.rejected == [{"role": "assistant", "content": "   "}]]  # fmt: skip
    assert empty and ds.stats["empty_responses"] == len(empty)


def test_identical_responses_scored_differently_are_invalid(tmp_path):
    path = tmp_path / "lw.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "responses": [" a", " a"], "scores": [1, 2]}) + "\n")
    with pytest.raises(DataError, match="identical to responses\\[1\\] but scored differently"):
        load_preferences(str(path))


def test_evaluation_sets_are_refused_as_training_pairs():
    with pytest.raises(DataError, match="listwise evaluation set"):
        load_preferences(fixture("rewardbench2.jsonl"))


def test_load_dataset_reads_evaluation_sets():
    rb2 = load_dataset(fixture("rewardbench2.jsonl"), listwise_eval=True)
    assert isinstance(rb2, ListwiseDataset) and rb2.format == "rewardbench2" and len(rb2) == len(records("rewardbench2.jsonl"))
    assert rb2.stats["completions"] == sum(len(r["chosen"]) + len(r["rejected"]) for r in records("rewardbench2.jsonl"))
    rmb = load_dataset("rmb=" + fixture("rm_bench.json"), listwise_eval=True)
    assert rmb.name == "rmb" and rmb.format == "rm-bench" and len(rmb) == 7
    trl = load_dataset(fixture("trl_standard.jsonl"), listwise_eval=True)
    assert trl.format == "trl"  # pairwise sets load as before


def test_hub_listwise_source_is_read_once(monkeypatch):
    rows = records("ultrafeedback.jsonl")
    calls = []

    def load_dataset_stub(path, name=None, split=None):
        calls.append(path)
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset_stub))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a stand-in hub that is on (conftest turns the real one off)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    ds = load_preferences("openbmb/UltraFeedback", pairs="best-worst")
    assert calls == ["openbmb/UltraFeedback"] and ds.format == "ultrafeedback" and len(ds) == 2


def test_train_rm_config_validates_pairs():
    from rewardlab.train_rm import RewardTrainingConfig

    with pytest.raises(ValueError, match="pairs = 'top'"):
        RewardTrainingConfig(train_data="x.jsonl", pairs="top").validate()
