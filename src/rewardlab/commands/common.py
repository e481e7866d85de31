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
    import warnings

    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()  # retries of an unreachable hub: the one-line error says it
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft calling a renamed transformers API
    try:
        import datasets

        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def device_option():
    return typer.Option(None, "--device", help="torch device: cuda, cuda:1, cpu (default: cuda when available, else cpu).")


def dtype_option():
    return typer.Option("auto", "--dtype", help="Model dtype: auto (bf16 on a capable GPU, fp32 on CPU) | fp32 | bf16 | fp16.")


def echo(message: str) -> None:
    print(message, file=sys.stderr)
