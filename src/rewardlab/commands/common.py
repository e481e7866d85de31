"""What every command shares: one-line user errors, quiet library logging, NAME=SPEC parsing."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import typer


class UserError(Exception):
    """A problem the user can fix (bad flag combination, missing file); shown as one line, exit code 1."""


@contextmanager
def user_errors():
    """Turn expected failures into `error: ...` on stderr and exit code 1, never a traceback."""
    from rewardlab.data.errors import DataError

    try:
        yield
    except (DataError, UserError, ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def quiet_libraries() -> None:
    """transformers/datasets chatter (load reports, shard bars) hides our own progress; keep errors only."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def echo(message: str) -> None:
    print(message, file=sys.stderr)
