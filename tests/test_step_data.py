"""Step-labelled data: TRL's stepwise format and ProcessBench's, read into `StepExample`s (adapters, detection, the
loader's file types, file:line:field errors, `data inspect`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.data.errors import DataError
from rewardlab.data.loading import load_dataset, load_preferences
from rewardlab.data.steps import (
    StepDataset,
    detect_step_format,
    first_error_of,
    from_processbench,
    from_trl_stepwise,
    labels_from_first_error,
    load_steps,
    processbench_subset,
    step_example_to_dict,
)
from rewardlab.data.types import StepExample

FIXTURES = Path(__file__).parent / "fixtures" / "data"
runner = CliRunner()


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


PB = {"id": "math-3", "generator": "g", "problem": "1 + 1?", "steps": ["1 + 1 = 3.", "So 3."], "label": 0}
TRL = {"prompt": "1 + 1?", "completions": ["1 + 1 = 2.", "So 2."], "labels": [True, True]}


# ----------------------------------------------------------------------------------------------------------------------
# labels


@pytest.mark.parametrize(
    ("n", "first_error", "expected"),
    [
        (3, -1, [True, True, True]),
        (3, 0, [False, None, None]),
        (3, 1, [True, False, None]),
        (3, 2, [True, True, False]),
        (1, 0, [False]),
    ],
)
def test_processbench_label_to_step_labels(n, first_error, expected):
    labels = labels_from_first_error(n, first_error)
    assert labels == expected
    assert first_error_of(labels) == first_error


def test_first_error_of_trl_labels_is_the_first_false():
    assert first_error_of([True, False, True, False]) == 1
    assert first_error_of([True, True]) == -1
    with pytest.raises(ValueError):
        labels_from_first_error(2, 2)


# ----------------------------------------------------------------------------------------------------------------------
# adapters


def test_trl_stepwise_adapter():
    example = from_trl_stepwise(TRL | {"id": "x1", "subset": "easy"})
    assert example == StepExample("1 + 1?", ["1 + 1 = 2.", "So 2."], [True, True], -1, "easy", {"id": "x1"})
    wrong = from_trl_stepwise(TRL | {"labels": [1, 0]})  # 0/1 integers, as TRL's trainer reads them
    assert wrong.labels == [True, False] and wrong.first_error == 1 and wrong.has_error
    chat = from_trl_stepwise(TRL | {"prompt": [{"role": "user", "content": "1 + 1?", "name": "ignored"}]})
    assert chat.prompt == [{"role": "user", "content": "1 + 1?"}]


def test_processbench_adapter():
    example = from_processbench(PB | {"final_answer_correct": False})
    assert example.prompt == "1 + 1?" and example.steps == ["1 + 1 = 3.", "So 3."]
    assert example.labels == [False, None] and example.first_error == 0 and example.subset == "math"
    assert example.metadata == {"id": "math-3", "generator": "g", "final_answer_correct": False}
    assert from_processbench(PB | {"label": -1}).labels == [True, True]
    # csv cells: the label as a string, the flag as text, the steps as a JSON list
    csv_like = from_processbench(PB | {"label": "1", "final_answer_correct": "True", "steps": json.dumps(PB["steps"])})
    assert csv_like.first_error == 1 and csv_like.metadata["final_answer_correct"] is True
    assert from_processbench(PB | {"subset": "mine"}).subset == "mine"


@pytest.mark.parametrize(
    ("example_id", "subset"),
    [("gsm8k-0", "gsm8k"), ("olympiadbench-120", "olympiadbench"), ("omnimath-7", "omnimath"), ("abc", None), (3, None)],
)
def test_processbench_subset_from_id(example_id, subset):
    assert processbench_subset(example_id) == subset


def test_quirks_are_accepted_as_written():
    steps = ["", "  odd\twhitespace \u00a0", "Unicode: ∑ x² ≠ 😊", "\n"]
    example = from_processbench(PB | {"steps": steps, "label": -1})
    assert example.steps == steps and example.labels == [True] * 4
    assert from_trl_stepwise(TRL | {"completions": ["", ""], "labels": [True, False]}).steps == ["", ""]


@pytest.mark.parametrize(
    ("adapter", "changes", "field", "message"),
    [
        (from_trl_stepwise, {"completions": None}, "completions", "missing field"),
        (from_trl_stepwise, {"completions": []}, "completions", "no steps"),
        (from_trl_stepwise, {"completions": "one step"}, "completions", "expected a list of step strings, got string"),
        (from_trl_stepwise, {"completions": ["a", 2]}, "completions", "step 1: expected a string, got number"),
        (from_trl_stepwise, {"labels": [True]}, "labels", "1 label(s) for 2 step(s)"),
        (from_trl_stepwise, {"labels": [True, "yes"]}, "labels", "label 1: expected true or false, got string"),
        (from_trl_stepwise, {"labels": [True, 2]}, "labels", "label 1: expected true or false, got number 2"),
        (from_trl_stepwise, {"labels": "[true, "}, "labels", "not a JSON list"),
        (from_trl_stepwise, {"prompt": 5}, "prompt", "expected a string or a list of messages"),
        (from_processbench, {"problem": ["x"]}, "problem", "expected a string, got list"),
        (from_processbench, {"label": 2}, "label", "first error at step 2, but the 2 step(s) are numbered 0..1"),
        (from_processbench, {"label": -2}, "label", "first error at step -2"),
        (from_processbench, {"label": 0.5}, "label", "expected an integer, got number 0.5"),
        (from_processbench, {"label": True}, "label", "expected an integer, got boolean"),
        (from_processbench, {"label": None}, "label", "missing field"),
        (from_processbench, {"steps": []}, "steps", "no steps"),
        (from_processbench, {"final_answer_correct": "maybe"}, "final_answer_correct", "expected true or false"),
    ],
)
def test_adapter_errors_name_the_field(adapter, changes, field, message):
    record = (TRL if adapter is from_trl_stepwise else PB) | changes
    with pytest.raises(DataError) as err:
        adapter(record)
    assert err.value.field == field and message in err.value.message


def test_detection():
    assert detect_step_format(TRL) == "trl-stepwise"
    assert detect_step_format(PB) == "processbench"
    assert detect_step_format({"prompt": "p", "chosen": "a", "rejected": "b"}) is None
    assert detect_step_format({"instruction": "p", "completions": []}) is None  # UltraFeedback


# ----------------------------------------------------------------------------------------------------------------------
# loading: fixtures, file types, errors


def test_processbench_fixture():
    ds = load_steps(str(FIXTURES / "processbench.jsonl"))
    assert ds.format == "processbench" and len(ds) == 5
    assert ds.stats == {
        "read": 5, "loaded": 5, "excluded": 0, "invalid": 0, "steps": 15, "empty_steps": 1, "with_error": 3, "without_error": 2,
    }  # fmt: skip
    assert [e.subset for e in ds] == ["gsm8k", "gsm8k", "math", "math", "omnimath"]
    assert [e.first_error for e in ds] == [1, -1, 0, -1, 2]
    assert ds[0].labels == [True, False, None] and ds[2].labels == [False, None]
    assert ds[1].steps[2] == ""  # an empty step, kept
    assert ds[3].steps[0] == "  The common denominator is 6.\n"  # whitespace kept as written


def test_trl_stepwise_fixture():
    ds = load_steps(str(FIXTURES / "trl_stepwise.jsonl"))
    assert ds.format == "trl-stepwise" and len(ds) == 4 and ds.stats["empty_steps"] == 1
    assert [e.first_error for e in ds] == [1, -1, -1, 0]
    assert ds[2].prompt == [{"role": "user", "content": "Résous : x + 2 = 5 😊"}] and ds[2].subset == "algebra"
    assert ds[3].labels == [False, False]  # TRL labels every step: no unknowns
    assert ds[1].steps[2].endswith("12.\u00a0")


def test_malformed_row_is_one_line_with_file_line_field():
    path = str(FIXTURES / "processbench_malformed.jsonl")
    with pytest.raises(DataError) as err:
        load_steps(path)
    assert str(err.value) == (
        f"{path}:2: field 'label': first error at step 2, but the 2 step(s) are numbered 0..1 (-1 means no error)"
    )
    ds = load_steps(path, skip_invalid=True)
    assert len(ds) == 1 and ds.stats["invalid"] == 2
    assert ds.skipped[1] == f"{path}:3: field 'steps': step 1: expected a string, got number"


def test_processbench_subset_falls_back_to_the_data_set_name(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [PB | {"id": 17}, PB | {"id": "gsm8k-2"}])
    ds = load_steps(f"olympiadbench={path}")
    assert ds.name == "olympiadbench" and [e.subset for e in ds] == ["olympiadbench", "gsm8k"]


def test_every_file_type(tmp_path):
    records = rows("processbench.jsonl")
    want = [e.labels for e in load_steps(str(FIXTURES / "processbench.jsonl"))]
    gz = tmp_path / "pb.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    (tmp_path / "pb.json").write_text(json.dumps({"data": records}), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "pb.parquet")
    csv_path = tmp_path / "pb.csv"
    import csv

    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        for r in records:
            writer.writerow(r | {"steps": json.dumps(r["steps"], ensure_ascii=False)})
    for path in (gz, tmp_path / "pb.json", tmp_path / "pb.parquet", csv_path):
        ds = load_steps(str(path))
        assert ds.format == "processbench" and [e.labels for e in ds] == want, path
        assert [e.steps for e in ds] == [r["steps"] for r in records]


def test_csv_row_error_names_its_line(tmp_path):
    path = tmp_path / "trl.csv"
    path.write_text('prompt,completions,labels\np,"[""a"", ""b""]","[true, false]"\nq,"[""a""]","[true, false]"\n')
    with pytest.raises(DataError) as err:
        load_steps(str(path))
    assert str(err.value).startswith(f"{path}:3: field 'labels': 2 label(s) for 1 step(s)")


def test_explicit_format_limit_and_undetectable(tmp_path):
    ds = load_steps(str(FIXTURES / "processbench.jsonl"), format="processbench", limit=2)
    assert len(ds) == 2 and ds.stats["read"] == 2
    with pytest.raises(DataError, match="field 'problem': missing field"):
        load_steps(str(FIXTURES / "trl_stepwise.jsonl"), format="processbench")
    with pytest.raises(DataError, match="unknown step format 'trl'"):
        load_steps(str(FIXTURES / "trl_stepwise.jsonl"), format="trl")
    with pytest.raises(DataError, match=r"plain_pairs.jsonl:1: cannot detect a step format from the fields \(chosen"):
        load_steps(str(FIXTURES / "plain_pairs.jsonl"))


def test_load_dataset_reads_steps_only_when_asked():
    ds = load_dataset(str(FIXTURES / "trl_stepwise.jsonl"), steps=True, listwise_eval=True)
    assert isinstance(ds, StepDataset) and ds.format == "trl-stepwise"
    with pytest.raises(DataError, match=r"step-labelled data \(format processbench\): this reads preference pairs"):
        load_preferences(str(FIXTURES / "processbench.jsonl"))
    # pairs are read as before
    assert load_dataset(str(FIXTURES / "trl_standard.jsonl"), steps=True).format == "trl"


def test_example_row_says_how_it_was_read():
    row = step_example_to_dict(load_steps(str(FIXTURES / "processbench.jsonl"))[0])
    assert row["labels"] == [True, False, None] and row["first_error"] == 1 and row["subset"] == "gsm8k"
    assert row["id"] == "gsm8k-0" and row["final_answer_correct"] is False


# ----------------------------------------------------------------------------------------------------------------------
# data inspect


def test_data_inspect_processbench():
    result = runner.invoke(app, ["data", "inspect", str(FIXTURES / "processbench.jsonl")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "format processbench; read 5, loaded 5" in out and "with_error 3, without_error 2" in out
    assert "label as the first wrong step" in out and "the steps after it unknown" in out
    assert "step labels: 10 correct, 3 wrong, 2 unknown" in out
    assert "subsets (with an error / without): gsm8k 1/1, math 1/1, omnimath 1/0" in out
    assert "truncated 0 (later steps dropped), dropped 0 at max_length 1024" in out
    assert '"labels": [true, false, null], "first_error": 1' in out


def test_data_inspect_trl_stepwise_and_truncation():
    result = runner.invoke(app, ["data", "inspect", str(FIXTURES / "trl_stepwise.jsonl"), "--max-length", "60"])
    assert result.exit_code == 0, result.output
    assert "format trl-stepwise" in result.output and "labels as each step's label" in result.output
    assert "step labels: 6 correct, 3 wrong, 0 unknown" in result.output
    assert "truncated 2 (later steps dropped), dropped 1 at max_length 60" in result.output


def test_data_inspect_malformed_is_one_line():
    result = runner.invoke(app, ["data", "inspect", str(FIXTURES / "processbench_malformed.jsonl")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].endswith(":2: field 'label': first error at step 2, but the 2 step(s) are "
                                                           "numbered 0..1 (-1 means no error)")  # fmt: skip


def test_real_processbench_rows():
    """Eight rows of the real ProcessBench (the fixture names its source): the loader reads them as they are published."""
    ds = load_steps(str(FIXTURES / "processbench_real.json"))
    assert ds.format == "processbench" and len(ds) == 8
    assert [e.subset for e in ds] == ["gsm8k"] * 4 + ["math"] * 2 + ["olympiadbench", "omnimath"]
    assert [e.first_error for e in ds] == [0, -1, 1, -1, -1, 0, 1, -1]
    assert ds.stats["with_error"] == 4 and ds.stats["without_error"] == 4 and ds.stats["steps"] == 26
    assert ds[2].labels == [True, False, None, None]
    assert ds[0].metadata == {"id": "gsm8k-126", "generator": "Qwen2-1.5B-Instruct", "final_answer_correct": False}
    assert all(e.metadata["final_answer_correct"] == (e.first_error == -1) for e in ds)
