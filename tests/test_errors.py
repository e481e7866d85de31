"""Bad input is one line (`error: ...`, exit 1); a bug in rewardlab is a traceback, never dressed up as bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.commands.common import user_errors
from rewardlab.data.errors import DataError
from rewardlab.errors import MissingPathError, UserError, reading_user_input
from rewardlab.export import ExportError
from rewardlab.modeling.normalization import NormalizationUnavailable
from rewardlab.modeling.sources import ModelNotFoundError
from rewardlab.runtime import NonFiniteError

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("cls", [DataError, ExportError, ModelNotFoundError, NormalizationUnavailable, NonFiniteError])
def test_the_one_line_errors_are_user_errors_and_still_value_errors(cls):
    assert issubclass(cls, UserError) and issubclass(cls, ValueError)


def test_a_missing_path_is_a_user_error_and_still_a_file_not_found_error(tmp_path):
    from rewardlab.modeling.loader import resolve_model_dir

    with pytest.raises(MissingPathError) as err:
        resolve_model_dir(tmp_path / "nope")
    assert isinstance(err.value, UserError) and isinstance(err.value, FileNotFoundError)
    assert str(err.value) == f"{tmp_path / 'nope'}: no such reward model directory"


def test_reading_user_input_keeps_the_library_message_and_only_the_types_named():
    with pytest.raises(UserError) as err, reading_user_input(OSError, ValueError):
        raise ValueError("Unrecognized model in x. Should have a `model_type` key in its config.json.")
    assert str(err.value) == "Unrecognized model in x. Should have a `model_type` key in its config.json."
    with pytest.raises(KeyError), reading_user_input(OSError, ValueError):
        raise KeyError("x")


def test_a_checkpoint_transformers_cannot_read_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # no model_type
    result = runner.invoke(app, ["doctor", str(tmp_path)])
    assert result.exit_code == 1
    expected = f"error: Unrecognized model in {tmp_path}. Should have a `model_type` key in its config.json."
    assert _lines(result.output) == [expected]


def test_user_errors_shows_a_user_error_as_one_line(capsys):
    with pytest.raises(typer.Exit) as exit_info, user_errors():
        raise UserError("--flag 3: must be >= 4")
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err == "error: --flag 3: must be >= 4\n"


@pytest.mark.parametrize("err", [KeyError("x"), ValueError("bad"), FileNotFoundError("gone"), TypeError("t")])
def test_user_errors_lets_every_other_exception_through(err):
    with pytest.raises(type(err)), user_errors():
        raise err


def test_bad_input_on_the_command_line_is_one_line(tmp_path):
    result = runner.invoke(app, ["compare", "a=x.jsonl", "--output", str(tmp_path / "c.json")])
    assert result.exit_code == 1
    assert _lines(result.output) == ["error: compare takes exactly two sides, NAME=SOURCES NAME=SOURCES; got 1"]
    assert "Traceback" not in result.output


def test_a_bug_inside_a_command_is_not_shown_as_bad_input(monkeypatch, tmp_path):
    def broken(specs):
        raise KeyError("x")

    monkeypatch.setattr("rewardlab.comparison.parse_sides", broken)
    result = runner.invoke(app, ["compare", "a=x.jsonl", "b=y.jsonl", "--output", str(tmp_path / "c.json")])
    assert result.exit_code != 0
    assert isinstance(result.exception, KeyError)
    assert "error:" not in result.output


def test_a_bug_inside_a_command_prints_its_traceback(tmp_path):
    """The installed entry point, as a user runs it: a plain Python traceback naming the exception, non-zero exit."""
    script = (
        "import sys, rewardlab.comparison as c\n"
        "def broken(specs):\n"
        "    raise KeyError('x')\n"
        "c.parse_sides = broken\n"
        "from rewardlab.cli import main\n"
        "sys.argv = ['rewardlab', 'compare', 'a=x.jsonl', 'b=y.jsonl', '--output', sys.argv[1]]\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "c.json")], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "KeyError: 'x'" in done.stderr
    assert "error: " not in done.stderr
