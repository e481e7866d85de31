from __future__ import annotations

import gzip
import sys
import types
from pathlib import Path

import pytest

from rewardlab.data.errors import DataError
from rewardlab.data.io import Record, default_name, parse_hub_spec, parse_named_spec, read_records

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------------------------------------------------
# local files and line numbers


def test_jsonl_counts_blank_lines():
    records = list(read_records(fixture("trl_standard.jsonl")))
    assert [r.line for r in records] == [1, 3, 4]  # line 2 is blank
    assert records[0] == Record(
        fixture("trl_standard.jsonl"),
        1,
        {"prompt": "What color is the sky?", "chosen": " Blue.", "rejected": " Green.", "margin": 2.5},
    )


def test_jsonl_gz():
    records = list(read_records(fixture("hh.jsonl.gz")))
    assert [r.line for r in records] == [1, 2, 3]
    assert records[0].data["chosen"].startswith("\n\nHuman: What is a good name for a cat?")


def test_json_list_and_object_holding_one_list():
    plain = list(read_records(fixture("hhh.json")))
    assert [r.line for r in plain] == [1, 2]
    assert plain[1].data["subset"] == "honest"
    wrapped = list(read_records(fixture("trl_implicit.json")))
    assert [r.line for r in wrapped] == [1, 2]
    assert wrapped[1].data["chosen"] == "The capital of France is Paris."


def test_parquet_nested_values():
    records = list(read_records(fixture("mt_bench_human.parquet")))
    assert [r.line for r in records] == [1, 2, 3, 4, 5]
    assert records[2].data["winner"] == "tie"
    assert records[0].data["conversation_a"][0] == {"role": "user", "content": "Write a two-line poem about rain."}


def test_csv_header_is_line_one_and_multiline_cell_is_one_row():
    records = list(read_records(fixture("rewardbench.csv")))
    assert [r.line for r in records] == [2, 3, 4, 5]
    assert records[1].data["chosen"] == "Autumn moonlight—\na worm digs silently\ninto the chestnut."
    assert records[3].data["chosen"] == 'print("hello")'


def test_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert [r.data for r in read_records(str(path))] == [{"a": 1}]


# ----------------------------------------------------------------------------------------------------------------------
# errors


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="file not found") as err:
        list(read_records(missing))
    assert missing in str(err.value)


def test_malformed_json_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(DataError, match="malformed JSON") as err:
        list(read_records(path))
    assert f"{path}:3:" in str(err.value)


def test_non_object_line(tmp_path):
    path = write(tmp_path / "list.jsonl", '{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="expected a JSON object, got list") as err:
        list(read_records(path))
    assert f"{path}:2:" in str(err.value)


def test_on_invalid_skips_and_reports(tmp_path):
    path = write(tmp_path / "mixed.jsonl", '{"a": 1}\nnot json\n"str"\n{"a": 4}\n')
    errors: list[DataError] = []
    records = list(read_records(path, on_invalid=errors.append))
    assert [r.data["a"] for r in records] == [1, 4]
    assert [r.line for r in records] == [1, 4]
    assert [e.line for e in errors] == [2, 3]


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError, match="UTF-8") as err:
        list(read_records(str(path)))
    assert err.value.line == 2


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 50)[:30])
    with pytest.raises(DataError, match="cannot read file"):
        list(read_records(str(path)))


def test_json_syntax_error_reports_physical_line(tmp_path):
    path = write(tmp_path / "bad.json", '[\n  {"a": 1},\n  {"a": }\n]\n')
    with pytest.raises(DataError, match="malformed JSON") as err:
        list(read_records(path))
    assert err.value.line == 3


def test_json_object_with_two_lists_is_ambiguous(tmp_path):
    path = write(tmp_path / "two.json", '{"train": [{"a": 1}], "test": [{"a": 2}]}')
    with pytest.raises(DataError, match="exactly one list"):
        list(read_records(path))


def test_json_non_object_element(tmp_path):
    path = write(tmp_path / "mixed.json", '[{"a": 1}, 5]')
    with pytest.raises(DataError, match="got number") as err:
        list(read_records(path))
    assert err.value.line == 2


def test_csv_short_row(tmp_path):
    path = write(tmp_path / "short.csv", "prompt,chosen,rejected\np,c,r\np,c\n")
    with pytest.raises(DataError, match="fewer cells") as err:
        list(read_records(path))
    assert f"{path}:3:" in str(err.value)


def test_unsupported_existing_file(tmp_path):
    path = write(tmp_path / "data.txt", "hello")
    with pytest.raises(DataError, match="unsupported file type"):
        list(read_records(path))


# ----------------------------------------------------------------------------------------------------------------------
# hub ids (with a stand-in `datasets` module: tests never touch the network)


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "owner/missing":
            raise FileNotFoundError("Dataset 'owner/missing' doesn't exist on the Hub\nmore details")
        return [{"chosen": "a", "rejected": "b", "row": i} for i in range(3)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # a stand-in hub that is on (conftest turns the real one off)
        monkeypatch.delenv(variable, raising=False)
    return calls


def test_hub_split_syntax(fake_hub):
    records = list(read_records("owner/prefs"))
    assert [(r.file, r.line, r.data["row"]) for r in records] == [
        ("owner/prefs", 1, 0),
        ("owner/prefs", 2, 1),
        ("owner/prefs", 3, 2),
    ]
    list(read_records("owner/prefs:test"))
    list(read_records("owner/prefs:harmless:test"))
    assert fake_hub == [
        ("owner/prefs", None, "train"),
        ("owner/prefs", None, "test"),
        ("owner/prefs", "harmless", "test"),
    ]


def test_hub_failure_is_one_line_data_error(fake_hub):
    with pytest.raises(DataError) as err:
        list(read_records("owner/missing"))
    message = str(err.value)
    assert message.startswith("owner/missing:") and "doesn't exist on the Hub" in message
    assert "\n" not in message


def test_path_like_spec_is_not_sent_to_the_hub(fake_hub, tmp_path):
    with pytest.raises(DataError, match="file not found"):
        list(read_records(str(tmp_path / "no" / "such" / "dir")))
    assert fake_hub == []


def test_parse_hub_spec():
    assert parse_hub_spec("lmsys/mt_bench_human_judgments:human") == ("lmsys/mt_bench_human_judgments", None, "human")
    assert parse_hub_spec("HuggingFaceH4/hhh_alignment:honest:test") == (
        "HuggingFaceH4/hhh_alignment",
        "honest",
        "test",
    )


# ----------------------------------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ood=b.jsonl", ("ood", "b.jsonl")),
        ("b.jsonl", ("b", "b.jsonl")),
        ("data/ood.jsonl.gz", ("ood", "data/ood.jsonl.gz")),
        ("mt-bench=lmsys/mt_bench_human_judgments:human", ("mt-bench", "lmsys/mt_bench_human_judgments:human")),
        ("lmsys/mt_bench_human_judgments:human", ("mt_bench_human_judgments", "lmsys/mt_bench_human_judgments:human")),
        ("runs/a=1/data.jsonl", ("data", "runs/a=1/data.jsonl")),  # left of '=' is not an identifier
        ("x=y=z.jsonl", ("x", "y=z.jsonl")),  # split on the first '=' only
    ],
)
def test_parse_named_spec(spec, expected):
    assert parse_named_spec(spec) == expected


def test_existing_file_with_equals_sign_is_not_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a=b.jsonl").write_text('{"x": 1}\n')
    assert parse_named_spec("a=b.jsonl") == ("a=b", "a=b.jsonl")


def test_named_spec_without_path():
    with pytest.raises(DataError, match="no data after 'ood='"):
        parse_named_spec("ood=")


def test_default_name():
    assert default_name("/tmp/x/train.parquet") == "train"
    assert default_name("owner/name") == "name"
