from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pytest

from rewardlab.data.errors import DataError
from rewardlab.data.loading import (
    PreferenceDataset,
    load_completions,
    load_named_preferences,
    load_preferences,
    load_prompts,
    preference_to_dict,
)
from rewardlab.data.types import PreferenceExample, PromptCompletion
from rewardlab.runtime import write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def stats(read: int, loaded: int, excluded: int = 0, invalid: int = 0, empty: int = 0) -> dict[str, int]:
    return {"read": read, "loaded": loaded, "excluded": excluded, "invalid": invalid, "empty_responses": empty}


# ----------------------------------------------------------------------------------------------------------------------
# every format from its fixture, auto-detected


@pytest.mark.parametrize(
    ("file", "fmt", "expected_stats"),
    [
        ("trl_standard.jsonl", "trl", stats(3, 3)),
        ("trl_implicit.json", "trl", stats(2, 2)),
        ("trl_conversational.jsonl", "trl", stats(2, 2)),
        ("hh.jsonl.gz", "hh", stats(3, 3)),
        ("unified_feedback.jsonl", "unified-feedback", stats(4, 3, excluded=1)),
        ("hhh.json", "hhh", stats(2, 2)),
        ("mt_bench_human.parquet", "mt-bench-human", stats(5, 3, excluded=2)),
        ("rewardbench.csv", "rewardbench", stats(4, 4)),
    ],
)
def test_fixture_formats_are_detected(file, fmt, expected_stats):
    dataset = load_preferences(fixture(file))
    assert isinstance(dataset, PreferenceDataset)
    assert dataset.format == fmt
    assert dataset.stats == expected_stats
    assert len(dataset) == expected_stats["loaded"] == len(list(dataset))


def test_trl_fixtures_content():
    standard = load_preferences(fixture("trl_standard.jsonl"))
    assert standard.name == "trl_standard"
    assert (standard[0].prompt, standard[0].chosen, standard[0].rejected, standard[0].margin) == (
        "What color is the sky?",
        " Blue.",
        " Green.",
        2.5,
    )
    assert standard[2].source == "handmade"
    implicit = load_preferences(fixture("trl_implicit.json"))
    assert (implicit[0].prompt, implicit[0].chosen, implicit[0].rejected) == (
        "Question: what is 6 times 7? Answer:",
        " 42.",
        " 420.",
    )
    conversational = load_preferences(fixture("trl_conversational.jsonl"))
    assert conversational[1].prompt == [user("2+2?"), assistant("4"), user("And 3+3?")]
    assert conversational[1].chosen == [assistant("6")] and conversational[1].rejected == [assistant("7")]


def test_hh_fixture_content():
    hh = load_preferences(fixture("hh.jsonl.gz"))
    assert hh[1].prompt == [user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke.")]
    assert hh[1].chosen == [assistant("Why did the chicken cross the road? To get to the other side.")]
    assert hh[1].rejected == [assistant("No.")]


def test_unified_feedback_fixture_ties_and_margins():
    uf = load_preferences(fixture("unified_feedback.jsonl"))
    assert [ex.margin for ex in uf] == [5.0, 1.0, 0.25]
    assert uf[1].chosen == [assistant("4")]  # conv_B rated higher
    assert [ex.source for ex in uf] == ["handmade", "handmade", "other"]


def test_mt_bench_fixture_excludes_both_kinds_of_tie():
    mt = load_preferences(fixture("mt_bench_human.parquet"))
    assert [ex.metadata["chosen_model"] for ex in mt] == ["alpaca-13b", "gpt-3.5-turbo", "gpt-4"]
    turn2 = mt[1]
    assert turn2.prompt == [user("Write a two-line poem about rain.")]
    assert turn2.chosen[-1] == assistant("Rain taps the pane; again, again.")
    assert turn2.rejected[-1] == assistant("Rain is wet.")


def test_rewardbench_fixture_subsets():
    rb = load_preferences(fixture("rewardbench.csv"))
    assert [ex.subset for ex in rb] == ["math-prm", "alpacaeval-easy", "refusals-dangerous", "hep-python"]
    assert rb[1].chosen == [assistant("Autumn moonlight—\na worm digs silently\ninto the chestnut.")]


def test_explicit_format_and_name():
    dataset = load_preferences(fixture("rewardbench.csv"), format="trl", name="rb-as-trl")
    assert dataset.format == "trl" and dataset.name == "rb-as-trl"
    assert dataset[0].prompt == "What is 2+2?"  # TRL keeps strings
    assert dataset[0].subset == "math-prm"


def test_named_spec_in_load_preferences():
    assert load_preferences("ood=" + fixture("hhh.json")).name == "ood"


def test_unknown_format():
    with pytest.raises(DataError, match="unknown data format 'dpo'"):
        load_preferences(fixture("hhh.json"), format="dpo")


def test_wrong_explicit_format_names_file_line_field():
    with pytest.raises(DataError) as err:
        load_preferences(fixture("hhh.json"), format="trl")
    assert str(err.value) == f"{fixture('hhh.json')}:1: field 'chosen': missing field"


def test_limit():
    dataset = load_preferences(fixture("mt_bench_human.parquet"), limit=2)
    assert len(dataset) == 2
    assert dataset.stats == stats(2, 2)  # stopped before the ties
    with pytest.raises(ValueError, match="limit"):
        load_preferences(fixture("hhh.json"), limit=0)


# ----------------------------------------------------------------------------------------------------------------------
# errors name file, line and field


GOOD = json.dumps({"prompt": "Q?", "chosen": " yes", "rejected": " no"})


@pytest.mark.parametrize(
    ("bad_line", "field", "message"),
    [
        (json.dumps({"prompt": "Q?", "rejected": " no"}), "chosen", "missing field"),
        (json.dumps({"prompt": "Q?", "chosen": 3, "rejected": " no"}), "chosen", "expected a string"),
        (json.dumps({"prompt": [user("Q?")], "chosen": [], "rejected": [assistant("no")]}), "chosen", "no response"),
        (json.dumps({"prompt": "Q?", "chosen": " no", "rejected": " no"}), "rejected", "identical to chosen"),
        (
            json.dumps({"prompt": "Q?", "chosen": " a", "rejected": " b", "margin": "big"}),
            "margin",
            "expected a number",
        ),
    ],
)
def test_record_errors_name_file_line_field(tmp_path, bad_line, field, message):
    path = write_lines(tmp_path / "prefs.jsonl", [GOOD, "", bad_line, GOOD])
    with pytest.raises(DataError) as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path}:3: field '{field}': {message}")
    assert (err.value.file, err.value.line, err.value.field) == (path, 3, field)


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "prefs.jsonl", [GOOD, "{oops"])
    with pytest.raises(DataError, match="malformed JSON") as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path}:2:")


def test_undetectable_first_record(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [json.dumps({"question": "q", "answer": "a"})])
    with pytest.raises(DataError, match=r"cannot detect .*\(answer, question\)") as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path}:1:")


@pytest.mark.parametrize(("present", "missing"), [("chosen", "rejected"), ("rejected", "chosen")])
def test_rows_that_all_lack_one_side_of_the_pair_name_the_missing_field(tmp_path, present, missing):
    rows = [json.dumps({"prompt": f"Q{i}?", present: " yes"}) for i in range(3)]
    path = write_lines(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path}:1: field '{missing}': missing field")
    assert "cannot detect" not in str(err.value)


def test_error_in_parquet_and_csv_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "Q?", "chosen": " yes", "rejected": " no"}, {"prompt": "Q?", "chosen": " yes", "rejected": None}]
    parquet = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    with pytest.raises(DataError) as err:
        load_preferences(str(parquet))
    assert str(err.value) == f"{parquet}:2: field 'rejected': missing field"

    csv_path = tmp_path / "prefs.csv"
    csv_path.write_text("prompt,chosen,rejected\nQ?,yes,no\nQ?,same,same\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_preferences(str(csv_path))
    assert str(err.value) == f"{csv_path}:3: field 'rejected': identical to chosen"


def test_hh_mismatched_dialogue_in_file(tmp_path):
    record = {"chosen": "\n\nHuman: Hi\n\nAssistant: yes", "rejected": "\n\nHuman: Hey\n\nAssistant: no"}
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    with pytest.raises(DataError, match="no shared prompt") as err:
        load_preferences(str(path))
    assert str(err.value).startswith(f"{path}:1: field 'rejected':")


def test_missing_file_in_loader(tmp_path):
    with pytest.raises(DataError, match="file not found") as err:
        load_preferences(str(tmp_path / "nope.jsonl"))
    assert str(tmp_path / "nope.jsonl") in str(err.value)


# ----------------------------------------------------------------------------------------------------------------------
# skip_invalid and exclusion counts


def test_skip_invalid_counts(tmp_path):
    uf = {
        "conv_A": [user("Q?"), assistant("a")],
        "conv_B": [user("Q?"), assistant("b")],
        "conv_A_rating": 2,
        "conv_B_rating": 1,
    }
    lines = [
        json.dumps(uf),  # loaded
        "not json",  # invalid (read error)
        json.dumps({**uf, "conv_A_rating": 1}),  # tie: excluded
        json.dumps({**uf, "conv_B": [user("Other?"), assistant("b")]}),  # invalid: a different question
        "[1]",  # invalid: not an object
        json.dumps({**uf, "conv_B_rating": 9}),  # loaded
    ]
    path = write_lines(tmp_path / "uf.jsonl", lines)
    with pytest.raises(DataError, match="malformed JSON"):
        load_preferences(path)
    dataset = load_preferences(path, skip_invalid=True)
    assert dataset.stats == stats(6, 2, excluded=1, invalid=3)
    assert [ex.chosen for ex in dataset] == [[assistant("a")], [assistant("b")]]
    assert len(dataset.skipped) == 3
    assert dataset.skipped[1] == f"{path}:4: field 'conv_B': does not start with the same message as conv_A: no shared prompt"


def test_skip_invalid_detects_format_from_first_valid_record(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", ['{"junk": 1}', GOOD])
    dataset = load_preferences(path, skip_invalid=True)
    assert dataset.format == "trl" and dataset.stats == stats(2, 1, invalid=1)


def test_zero_loaded_is_an_error(tmp_path):
    tie = {
        "winner": "tie",
        "conversation_a": [user("q"), assistant("a")],
        "conversation_b": [user("q"), assistant("b")],
    }
    path = write_lines(tmp_path / "ties.jsonl", [json.dumps(tie)] * 2)
    with pytest.raises(DataError, match=r"no usable preference pairs \(read 2, excluded 2, invalid 0\)") as err:
        load_preferences(path)
    assert str(err.value).startswith(f"{path}:")
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataError, match="no usable preference pairs"):
        load_preferences(empty)
    bad = write_lines(tmp_path / "bad.jsonl", ["nope"])
    with pytest.raises(DataError, match=r"invalid 1; first error: .*bad.jsonl:1"):
        load_preferences(bad, skip_invalid=True)


# ----------------------------------------------------------------------------------------------------------------------
# named data sets


def test_load_named_preferences(tmp_path):
    datasets = load_named_preferences(["id=" + fixture("unified_feedback.jsonl"), fixture("hhh.json")])
    assert list(datasets) == ["id", "hhh"]
    assert datasets["id"].name == "id" and datasets["id"].format == "unified-feedback"
    assert len(datasets["hhh"]) == 2


def test_load_named_preferences_duplicate_names():
    with pytest.raises(DataError, match="duplicate data set name 'ood'"):
        load_named_preferences(["ood=" + fixture("hhh.json"), "ood=" + fixture("hh.jsonl.gz")])
    with pytest.raises(DataError, match="duplicate data set name 'hhh'"):
        load_named_preferences([fixture("hhh.json"), fixture("hhh.json")])


def test_hub_dataset_through_loader(monkeypatch):
    rows = [{"input": "Q?", "targets": {"choices": ["good", "bad"], "labels": [1, 0]}}]
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # a stand-in hub that is on (conftest turns the real one off)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    datasets = load_named_preferences(["HuggingFaceH4/hhh_alignment:harmless:test"])
    assert calls == [("HuggingFaceH4/hhh_alignment", "harmless", "test")]
    assert datasets["hhh_alignment"].format == "hhh"
    assert datasets["hhh_alignment"][0].chosen == [assistant("good")]


# ----------------------------------------------------------------------------------------------------------------------
# completions and prompts


def test_load_completions():
    rows = load_completions(fixture("completions.jsonl"))
    assert rows == [
        PromptCompletion("Say hi.", " Hi!", {"id": 1}),
        PromptCompletion("Say bye.", " Bye!", {"id": 2}),  # `response` alias
        PromptCompletion([user("Hello")], [assistant("Hi, how can I help?")], {"id": 3}),
    ]
    assert len(load_completions(fixture("completions.jsonl"), limit=2)) == 2


@pytest.mark.parametrize(
    ("bad", "field", "message"),
    [
        ({"prompt": "p"}, "completion", "missing field"),
        ({"completion": "c"}, "prompt", "missing field"),
        ({"prompt": "p", "completion": [assistant("c")]}, "completion", "both be strings or both lists"),
        ({"prompt": [user("p")], "response": []}, "response", "no response"),
        ({"prompt": [user("p")], "completion": [user("c")]}, "completion", "must start with an assistant"),
        ({"prompt": 5, "completion": "c"}, "prompt", "expected a string or a list of messages"),
    ],
)
def test_load_completions_errors(tmp_path, bad, field, message):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"prompt": "p", "completion": "c"}), json.dumps(bad)])
    with pytest.raises(DataError, match=message) as err:
        load_completions(path)
    assert (err.value.file, err.value.line, err.value.field) == (path, 2, field)
    rows = load_completions(path, skip_invalid=True)
    assert len(rows) == 1


def test_load_prompts_from_prompt_rows():
    assert load_prompts(fixture("prompts.jsonl")) == ["Write a limerick about a cat.", [user("Hi there")]]
    assert load_prompts(fixture("prompts.jsonl"), unique=False)[2] == "Write a limerick about a cat."
    assert load_prompts(fixture("prompts.jsonl"), limit=1) == ["Write a limerick about a cat."]
    assert load_prompts(fixture("completions.jsonl"))[:2] == ["Say hi.", "Say bye."]


def test_load_prompts_from_preference_files():
    # MT-Bench: ties skipped, repeated questions kept once
    assert load_prompts(fixture("mt_bench_human.parquet")) == [
        [user("Write a two-line poem about rain.")],
        [user("What is 12 * 12?")],
    ]
    assert load_prompts(fixture("hhh.json"))[1] == [user("Is the earth flat?")]
    assert load_prompts(fixture("trl_standard.jsonl"))[0] == "What color is the sky?"
    assert load_prompts(fixture("hh.jsonl.gz"))[0] == [user("What is a good name for a cat?")]


def test_load_prompts_errors(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": "ok"}), json.dumps({"prompt": " "})])
    with pytest.raises(DataError) as err:
        load_prompts(path)
    assert str(err.value) == f"{path}:2: field 'prompt': empty prompt"
    other = write_lines(tmp_path / "q.jsonl", [json.dumps({"question": "q"})])
    with pytest.raises(DataError, match="expected a 'prompt' field or a preference format") as err:
        load_prompts(other)
    assert err.value.line == 1


# ----------------------------------------------------------------------------------------------------------------------
# writing


def test_preference_to_dict_round_trips_through_trl(tmp_path):
    examples = [
        PreferenceExample("Q?", " yes", " no", margin=1.5, source="s"),
        PreferenceExample([user("Q?")], [assistant("yes")], [assistant("no")], subset="hep-go"),
    ]
    assert preference_to_dict(examples[0]) == {
        "prompt": "Q?",
        "chosen": " yes",
        "rejected": " no",
        "margin": 1.5,
        "source": "s",
    }
    assert set(preference_to_dict(examples[1])) == {"prompt", "chosen", "rejected", "subset"}
    path = tmp_path / "prefs.jsonl"
    write_jsonl(path, (preference_to_dict(ex) for ex in examples))
    loaded = load_preferences(str(path))
    assert loaded.format == "trl"
    assert loaded.examples == examples
