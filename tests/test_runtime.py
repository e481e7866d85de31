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
    is_main_process,
    process_rank,
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


def test_main_process_only_writers_write_on_rank_zero_alone(tmp_path, monkeypatch):
    """A process other than the main one (rank 1, as torchrun / accelerate launch set RANK) writes nothing with
    main_process_only, and does not even read the rows; rank 0 writes; without the flag every process writes."""
    monkeypatch.setenv("RANK", "1")
    assert process_rank() == 1 and not is_main_process()
    assert write_json(tmp_path / "a.json", {"x": 1}, main_process_only=True) == tmp_path / "a.json"
    assert write_jsonl(tmp_path / "a.jsonl", _failing_rows(), main_process_only=True) == 0
    assert os.listdir(tmp_path) == []
    write_json(tmp_path / "own.json", {"rank": 1})  # a file of its own: written
    assert os.listdir(tmp_path) == ["own.json"]

    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    write_json(tmp_path / "a.json", {"x": 1}, main_process_only=True)
    assert write_jsonl(tmp_path / "a.jsonl", [{"y": 2}], main_process_only=True) == 1
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    monkeypatch.delenv("RANK")
    assert process_rank() == 0  # a single process


def test_process_group_rank_wins_over_the_environment(tmp_path, monkeypatch):
    """Once a process group exists, its rank is the truth (here a one-process gloo group: rank 0, whatever RANK says)."""
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised in this process")
    monkeypatch.setenv("RANK", "1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert process_rank() == 0 and is_main_process()
    finally:
        dist.destroy_process_group()
    assert process_rank() == 1
