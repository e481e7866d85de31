"""rewardlab.runtime: devices and dtypes, strict atomic JSON writers, directories that appear whole, output paths that
never lose what rewardlab did not write."""

import gzip
import json
import math
import os
import stat

import pytest
import torch

from rewardlab.errors import UserError
from rewardlab.runtime import (
    OUTPUT_MARKER,
    atomic_directory,
    check_output_dir,
    check_output_file,
    claim_output_dir,
    dumps,
    is_main_process,
    process_rank,
    resolve_device,
    resolve_dtype,
    seal_output_dir,
    strict_json,
    write_json,
    write_jsonl,
    written_by_rewardlab,
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
    assert sorted(os.listdir(target)) == [OUTPUT_MARKER, "config.json"]
    with pytest.raises(UserError, match="--overwrite"), atomic_directory(target) as tmp:  # not without replace
        (tmp / "model.safetensors").write_text("")
    with atomic_directory(target, replace=True) as tmp:  # replaces an older directory rewardlab wrote
        (tmp / "model.safetensors").write_text("")
    assert sorted(os.listdir(target)) == [OUTPUT_MARKER, "model.safetensors"]
    assert os.listdir(tmp_path) == ["export"]


def test_atomic_directory_never_replaces_what_rewardlab_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_bytes(b"precious")
    with pytest.raises(UserError, match="not written by rewardlab"), atomic_directory(mine, replace=True) as tmp:
        (tmp / "config.json").write_text("{}")
    assert os.listdir(mine) == ["keep.txt"] and (mine / "keep.txt").read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # the temporary directory is gone too
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    with pytest.raises(UserError, match="not a directory"), atomic_directory(a_file, replace=True) as tmp:
        (tmp / "config.json").write_text("{}")
    assert a_file.read_text() == "notes"
    cache = tmp_path / "cache"
    with atomic_directory(cache) as tmp:
        (tmp / "a").write_text("first")
    with atomic_directory(cache, keep_existing=True) as tmp:  # a cache entry made meanwhile by another process wins
        (tmp / "a").write_text("second")
    assert (cache / "a").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["cache", "mine", "notes.txt"]


def test_atomic_directory_modes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "f.json").write_text("{}")
            write_json(tmp / "g.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert stat.S_IMODE((tmp_path / "out" / "g.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "out" / OUTPUT_MARKER).stat().st_mode) == 0o640


def snapshot(root):
    """Every file under root with its bytes (directories as None): what must survive a refused command."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def test_output_dir_rules(tmp_path):
    user_dir = tmp_path / "proj"
    user_dir.mkdir()
    (user_dir / "keep.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("notes")
    before = snapshot(tmp_path)
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"  # does not exist: fine, and nothing is made
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == tmp_path / "empty"
    for path, overwrite, words in [
        (user_dir, False, "not written by rewardlab"),
        (user_dir, True, "not written by rewardlab"),
        (tmp_path / "notes.txt", True, "not a directory"),
        (tmp_path / "notes.txt" / "sub", False, "is a file"),
    ]:
        with pytest.raises(UserError, match=words) as err:
            claim_output_dir(path, "test", overwrite=overwrite)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    (tmp_path / "empty").rmdir()
    assert snapshot(tmp_path) == before

    run = claim_output_dir(tmp_path / "run", "test")  # marked, then sealed when finished
    (run / "metrics.json").write_text("{}")
    seal_output_dir(run)
    with pytest.raises(UserError, match="--overwrite"):
        check_output_dir(run)
    assert check_output_dir(run, resume=True) == run
    claim_output_dir(run, "test", overwrite=True)  # replaced: a fresh, marked directory
    assert os.listdir(run) == [OUTPUT_MARKER]
    (run / "metrics.json").write_text("{}")
    seal_output_dir(run)
    (run / "my-notes.txt").write_text("added by the user after the run")
    with pytest.raises(UserError, match="my-notes.txt, which rewardlab did not write"):
        claim_output_dir(run, "test", overwrite=True)
    assert (run / "my-notes.txt").exists() and (run / "metrics.json").exists()


def test_output_inside_or_around_an_input_is_refused(tmp_path):
    model = tmp_path / "proj" / "rm"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    for output in (model, model / "export", tmp_path / "proj", tmp_path):
        with pytest.raises(UserError, match="input"):
            check_output_dir(output, overwrite=True, inputs=["tiny-llama", str(model)])
    with pytest.raises(UserError, match="input"):
        check_output_file(model / "results.json", inputs=[str(model)])
    assert check_output_dir(tmp_path / "proj" / "export", inputs=["tiny-llama", "owner/name", str(model)])


def test_output_file_rules(tmp_path):
    theirs = tmp_path / "results.json"
    theirs.write_text('{"mine": 1}')
    with pytest.raises(UserError, match="not written by rewardlab"):
        check_output_file(theirs, overwrite=True)
    with pytest.raises(UserError, match="is a directory"):
        check_output_file(tmp_path, overwrite=True)
    ours = write_json(tmp_path / "ours.json", {"config": {"rewardlab_version": "0.1.0"}, "results": {}})
    with pytest.raises(UserError, match="--overwrite"):
        check_output_file(ours)
    assert check_output_file(ours, overwrite=True) == ours
    write_jsonl(tmp_path / "scores.jsonl", [{"dataset": "id", "index": 0, "chosen_reward": 1.0, "rejected_reward": 0.0}])
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "hi", "completion": "there"}])
    assert check_output_file(tmp_path / "scores.jsonl", overwrite=True)
    with pytest.raises(UserError, match="not written by rewardlab"):
        check_output_file(tmp_path / "prompts.jsonl", overwrite=True)
    assert written_by_rewardlab(tmp_path / "scores.jsonl") and not written_by_rewardlab(tmp_path / "prompts.jsonl")


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


def test_output_sealed_only_once_rewardlab_seals_it(tmp_path):
    from rewardlab.runtime import mark_output_dir, output_sealed, seal_output_dir

    mark_output_dir(tmp_path / "run", "train-rm")
    (tmp_path / "run" / "metrics.json").write_text("{}")
    assert not output_sealed(tmp_path / "run") and not output_sealed(tmp_path / "absent")
    seal_output_dir(tmp_path / "run")
    assert output_sealed(tmp_path / "run")
