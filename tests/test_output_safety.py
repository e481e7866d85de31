"""Nothing a user made is lost: every command that writes refuses, in one line and before any model loads, an output path
that holds something rewardlab did not write, or that is, contains or lies inside its input; `--overwrite` replaces only
an earlier rewardlab output; what rewardlab creates follows the user's umask."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.modeling.reward_model import build_reward_model
from rewardlab.runtime import OUTPUT_MARKER

runner = CliRunner()


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm") / "rm"
    build_reward_model("tiny-llama", head_dropout=0.0, seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def completions(tmp_path_factory):
    path = tmp_path_factory.mktemp("completions") / "completions.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in [("2+2=", " 4"), ("hi", " there")]))
    return path


@pytest.fixture()
def no_model_loads(monkeypatch):
    """Any model load fails the test loudly: a refusal must come before one."""

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the output path was checked")

    import rewardlab.export  # noqa: F401  (imported before patching: it binds loader.load_reward_model at import)

    for target in (
        "rewardlab.modeling.loader.load_reward_model",
        "rewardlab.export.load_reward_model",
        "rewardlab.rm_trainer.build.prepare_model",
        "rewardlab.rl.ppo.PPOTrainer._build_models",
        "rewardlab.rl.bon.bon_samples",
        "rewardlab.tasks.policy.get_base_policy",
    ):
        monkeypatch.setattr(target, loaded)


# Each writing command, as a user types it, with its output path (and whether that is a directory or a file).
def commands(rm_dir, completions, easy_data):
    test = easy_data / "small.jsonl"
    return {
        "train-rm": (True, ["train-rm", "--train-data", str(test), "--max-steps", "1", "--no-progress", "--output-dir"]),
        "export": (True, ["export", "--model", str(rm_dir), "--output"]),
        "eval-rm": (False, ["eval-rm", "--model", str(rm_dir), "--data", f"t={test}", "--no-progress", "--output"]),
        "score": (False, ["score", "--model", str(rm_dir), "--data", str(completions), "--no-progress", "--output"]),
        "diagnose": (True, ["diagnose", "--model", str(rm_dir), "--data", f"t={test}", "--no-progress", "--output"]),
        "bon": (True, ["bon", "--policy", "tiny-llama", "--proxy", f"a={rm_dir}", "--n", "2", "--no-progress", "--output"]),
        "ppo": (True, ["ppo", "--policy", "tiny-llama", "--reward-model", str(rm_dir), "--steps", "1", "--output"]),
        "demo": (True, ["demo", "--quick", "--no-progress", "--output"]),
        "data easy": (True, ["data", "easy", "--n-train", "8", "--n-test", "4", "--output-dir"]),
    }


def snapshot(root):
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def refused(result, path) -> str:
    """The command stopped itself (no crash) with exactly one line that names the path."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.output
    return lines[0]


COMMANDS = ["train-rm", "export", "eval-rm", "score", "diagnose", "bon", "ppo", "demo", "data easy"]


@pytest.mark.parametrize("name", COMMANDS)
def test_what_the_user_made_survives_byte_for_byte(name, rm_dir, completions, easy_data, tmp_path, no_model_loads):
    _, argv = commands(rm_dir, completions, easy_data)[name]
    project = tmp_path / "proj"
    project.mkdir()
    (project / "keep.txt").write_bytes(b"my notes \xe2\x98\x83\n")
    (project / "sub").mkdir()
    (project / "sub" / "data.jsonl").write_text('{"prompt": "mine"}\n')
    (tmp_path / "notes.txt").write_text("a file, not a directory")
    before = snapshot(tmp_path)
    for output in (project, tmp_path / "notes.txt", project / "sub" / "data.jsonl"):
        for extra in ([], ["--overwrite"]):
            line = refused(runner.invoke(app, [*argv, str(output), *extra]), output)
            assert "--overwrite" not in line or "not written by rewardlab" in line or "not a directory" in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["train-rm", "export", "eval-rm", "score", "diagnose", "bon", "ppo"])
def test_the_input_model_is_never_an_output(name, rm_dir, completions, easy_data, tmp_path, no_model_loads):
    is_dir, argv = commands(rm_dir, completions, easy_data)[name]
    if name == "train-rm":
        argv = [*argv[:-1], "--model", str(rm_dir), argv[-1]]
    before = snapshot(rm_dir.parent)
    inside = rm_dir / ("export" if is_dir else "results.json")
    for output in (rm_dir, rm_dir.parent, inside):
        line = refused(runner.invoke(app, [*argv, str(output), "--overwrite"]), output)
        assert ("input" in line and str(rm_dir) in line) or "is a directory" in line, line
    assert snapshot(rm_dir.parent) == before


@pytest.mark.parametrize("name", ["export", "eval-rm", "score", "diagnose", "data easy", "train-rm"])
def test_overwrite_replaces_only_an_earlier_rewardlab_output(name, rm_dir, completions, easy_data, tmp_path):
    _, argv = commands(rm_dir, completions, easy_data)[name]
    out = tmp_path / "out"
    first = runner.invoke(app, [*argv, str(out)])
    assert first.exit_code == 0, first.output
    written = snapshot(tmp_path)
    assert "refused" not in first.output
    line = refused(runner.invoke(app, [*argv, str(out)]), out)  # again: not without --overwrite
    assert "--overwrite" in line and snapshot(tmp_path) == written
    again = runner.invoke(app, [*argv, str(out), "--overwrite"])
    assert again.exit_code == 0, again.output
    if out.is_dir():  # a finished output lists what it holds; a file the user adds later is never overwritten
        assert OUTPUT_MARKER in os.listdir(out)
        (out / "my-analysis.ipynb").write_text("{}")
        line = refused(runner.invoke(app, [*argv, str(out), "--overwrite"]), out)
        assert "my-analysis.ipynb" in line and (out / "my-analysis.ipynb").read_text() == "{}"


def test_bad_settings_fail_in_one_line_before_any_model_loads(easy_data, tmp_path, no_model_loads):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    train = ["train-rm", "--train-data", str(easy_data / "small.jsonl")]
    cases = [
        ([*train, "--batch-size", "0", "--output-dir", str(tmp_path / "r1")], "--batch-size 0: must be >= 1"),
        ([*train, "--lr", "-1", "--output-dir", str(tmp_path / "r2")], "--lr -1.0: must be >= 0.0"),
        ([*train, "--max-length", "1", "--output-dir", str(tmp_path / "r3")], "--max-length 1: must be >= 2"),
        ([*train, "--output-dir", str(tmp_path / "a_file")], "not a directory"),
        ([*train, "--resume", "--output-dir", str(tmp_path / "r4")], f"--resume: no checkpoint under {tmp_path / 'r4'}"),
        ([*train, "--resume", "--ensemble-size", "2", "--output-dir", str(tmp_path / "r5")],
         f"no checkpoint under {tmp_path / 'r5' / 'model' / 'member-0'}"),
        (["eval-rm", "--model", "tiny-llama", "--data", str(easy_data / "small.jsonl"), "--output", str(tmp_path / "a_dir")],
         "is a directory"),
        (["eval-rm", "--model", "tiny-llama", "--data", str(easy_data / "small.jsonl"), "--batch-size", "0", "--output",
          str(tmp_path / "r.json")], "--batch-size 0: must be >= 1"),
        (["score", "--model", "tiny-llama", "--data", str(easy_data / "small.jsonl"), "--batch-size", "0", "--output",
          str(tmp_path / "s.jsonl")], "--batch-size 0: must be >= 1"),
        (["score", "--model", "tiny-llama", "--data", str(easy_data / "small.jsonl"), "--token-rewards", "nope", "--output",
          str(tmp_path / "s.jsonl")], "--token-rewards 'nope'"),
        (["ppo", "--reward-model", "tiny-llama", "--batch-size", "0", "--output", str(tmp_path / "p")], "--batch-size 0"),
        (["bon", "--proxy", "a=tiny-llama", "--n", "0", "--output", str(tmp_path / "b")], "--n 0: must be >= 1"),
        (["serve", "--model", "tiny-llama", "--max-batch-size", "0"], "--max-batch-size 0: must be >= 1"),
    ]  # fmt: skip
    for argv, words in cases:
        result = runner.invoke(app, argv)
        assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (argv, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (argv, result.output)
    assert sorted(os.listdir(tmp_path)) == ["a_dir", "a_file"]  # nothing created


def test_created_files_follow_the_umask(rm_dir, tmp_path):
    old = os.umask(0o027)
    try:
        made = runner.invoke(app, ["data", "easy", "--n-train", "4", "--n-test", "2", "--output-dir", str(tmp_path / "d")])
        assert made.exit_code == 0, made.output
        result = runner.invoke(app, ["export", "--model", str(rm_dir), "--output", str(tmp_path / "x")])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    for directory in (tmp_path / "d", tmp_path / "x"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750, directory
        for path in directory.iterdir():
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
