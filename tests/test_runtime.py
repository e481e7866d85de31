"""rewardlab.runtime: devices and dtypes, strict atomic JSON writers, directories that appear whole."""

import gzip
import json
import math
import os

import pytest
import torch

from rewardlab.runtime import (
    atomic_directory,
    dumps,
    resolve_device,
    resolve_dtype,
    strict_json,
    write_json,
    write_jsonl,
)


def user(text):
    return {"role": "user", "content": text}


def test_write_jsonl_round_trip(tmp_path):
    rows = [{"a": 1, "text": "café"}, {"a": 2, "messages": [user("hi")]}]
    path = tmp_path / "out" / "rows.jsonl"
    assert write_jsonl(path, iter(rows)) == 2
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
    assert "café" in path.read_text(encoding="utf-8")  # not ASCII-escaped
    gz = tmp_path / "rows.jsonl.gz"
    write_jsonl(gz, rows)
    with gzip.open(gz, "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == rows


def _failing_rows():
    yield {"a": 1}
    raise RuntimeError("generator failed")


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_write_jsonl_is_atomic(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(RuntimeError, match="generator failed"):
        write_jsonl(path, _failing_rows())
    assert os.listdir(tmp_path) == []  # no output, no temp file left

    write_jsonl(path, [{"old": True}])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="generator failed"):
        write_jsonl(path, _failing_rows())
    assert path.read_bytes() == before  # the existing file is untouched
    assert os.listdir(tmp_path) == [name]


def test_write_jsonl_unserialisable_row_leaves_nothing(tmp_path):
    path = tmp_path / "rows.jsonl"
    with pytest.raises(TypeError):
        write_jsonl(path, [{"a": 1}, {"b": object()}])
    assert os.listdir(tmp_path) == []


def test_non_finite_numbers_are_written_as_null(tmp_path):
    value = {"loss": math.nan, "best": [1.0, math.inf, -math.inf], "nested": {"x": (2.5, math.nan)}}
    assert strict_json(value) == {"loss": None, "best": [1.0, None, None], "nested": {"x": [2.5, None]}}
    path = write_json(tmp_path / "m.json", value)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}")) == strict_json(value)
    write_jsonl(tmp_path / "m.jsonl", [value])
    assert json.loads((tmp_path / "m.jsonl").read_text()) == strict_json(value)
    assert dumps(float("nan")) == "null"


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("check failed")
    assert os.listdir(tmp_path) == []
    with atomic_directory(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert os.listdir(target) == ["config.json"]
    with atomic_directory(target) as tmp:  # replaces an older directory
        (tmp / "model.safetensors").write_text("")
    assert os.listdir(target) == ["model.safetensors"]
    assert os.listdir(tmp_path) == ["export"]


def test_devices_and_dtypes():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16
    with pytest.raises(ValueError, match="--dtype 'int8'"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
