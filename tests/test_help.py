"""--help at 80 columns: every option name whole, switches' two forms stacked, settings grouped into panels."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.commands.help import stacked_switches

runner = CliRunner()


def commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = dict(commands())


def help_at(path: tuple[str, ...], columns: int = 80) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_option_name_shows_whole_at_80_columns(path):
    text = help_at(path)
    assert max(len(line) for line in text.splitlines()) <= 80
    names = [name for p in COMMANDS[path].params for name in (*p.opts, *p.secondary_opts) if name.startswith("--")]
    assert names
    for name in names:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{' '.join(path)}: {name} cut or missing"
    assert "…" not in "".join(line[:40] for line in text.splitlines())  # the option column never ends in an ellipsis


def test_train_rm_help_is_grouped_into_panels_and_leaves_the_help_room():
    text = help_at(("train-rm",))
    titles = re.findall(r"╭─ (\w+) ─", text)
    assert titles == ["Options", "Data", "Objective", "Model", "Batching", "Optimisation", "Evaluation", "Run"]
    line = next(line for line in text.splitlines() if "--gradient-checkpointing" in line)
    assert line.index("Recompute") < 50  # the help column is 30+ characters wide (it was ~20, starting at column 56)
    assert re.search(r"--gradient-checkpointing\s.*\n.*--no-gradient-checkpointing", text)  # stacked in one column


@pytest.mark.parametrize("command", ["ppo", "bon"])
def test_ppo_and_bon_help_have_panels(command):
    titles = re.findall(r"╭─ (\w+) ─", help_at((command,)))
    assert {"Data", "Run"} <= set(titles) and len(titles) >= 4


def test_stacking_the_switches_for_help_leaves_the_options_as_they_were():
    command = COMMANDS[("train-rm",)]
    before = [(p.opts, p.secondary_opts) for p in command.params]
    with stacked_switches(command.params):
        lora = next(p for p in command.params if p.name == "lora")
        assert lora.opts == ["--lora\n--no-lora"] and lora.secondary_opts == []
    assert [(p.opts, p.secondary_opts) for p in command.params] == before
    command.get_help(command.make_context("train-rm", ["--help"], resilient_parsing=True))
    ctx = command.make_context("train-rm", ["--no-lora", "--no-gradient-checkpointing", "--lora"])
    assert ctx.params["lora"] is True and ctx.params["gradient_checkpointing"] is False
