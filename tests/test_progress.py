"""rewardlab.progress: a bar on a terminal, a few plain lines in a log, nothing when disabled."""

from __future__ import annotations

import io
import sys

import pytest

from rewardlab.progress import PlainProgress, in_notebook, progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_ten_percent_and_no_carriage_returns():
    log = io.StringIO()
    bar = progress(total=1000, desc="train-rm", file=log)
    for step in range(1000):
        bar.update(1)
        if step == 500:
            bar.set_postfix(loss="0.123")
    bar.close()
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("train-rm:  10% 100/1000")
    assert lines[-1].startswith("train-rm: 100% 1000/1000") and "loss=0.123" in lines[-1]
    assert len(log.getvalue()) < 1000


def test_an_iterable_in_a_log_reports_at_its_end_and_keeps_its_items():
    log = io.StringIO()
    assert list(progress(range(7), desc="eval", leave=False, file=log)) == list(range(7))
    lines = log.getvalue().splitlines()
    assert len(lines) == 7 and lines[-1].startswith("eval: 100% 7/7")  # each item passes another 10%: one line each


def test_an_unknown_total_reports_once_at_the_end():
    log = io.StringIO()
    assert list(progress((i for i in range(5)), desc="sampling", file=log)) == list(range(5))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sampling: 5 ")


def test_a_resumed_loop_reports_from_where_it_stands():
    log = io.StringIO()
    bar = progress(total=100, initial=95, desc="train-rm", file=log)
    for _ in range(5):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train-rm: 100% 100/100")


def test_a_terminal_gets_the_bar():
    terminal = FakeTerminal()
    bar = progress(total=1000, desc="train-rm", file=terminal)
    assert not isinstance(bar, PlainProgress)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert "\r" in terminal.getvalue() and "train-rm" in terminal.getvalue()


@pytest.mark.parametrize("file", [io.StringIO(), FakeTerminal()])
def test_disabled_writes_nothing(file):
    bar = progress(total=1000, desc="train-rm", enabled=False, file=file)
    for _ in range(1000):
        bar.update(1)
    bar.set_postfix(loss="1")
    bar.close()
    assert list(progress(range(3), enabled=False, file=file)) == [0, 1, 2]
    assert file.getvalue() == ""


def test_outside_a_notebook_a_log_is_a_log(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))  # IPython imported, but no kernel runs
    assert not in_notebook()
    assert isinstance(progress(total=3, file=io.StringIO()), PlainProgress)
