"""The one error type a user sees as a single line: bad input, bad settings, a missing file, an unknown model, an output
path that would lose something. Every other exception is a bug in rewardlab and shows its traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(ValueError):
    """A problem the user can fix; `str(err)` is the whole message (one line), shown as `error: ...` with exit code 1.

    A ValueError so that callers that already catch ValueError for bad input keep working.
    """


class MissingPathError(UserError, FileNotFoundError):
    """A path the user named that is not there, or not what it should be (no reward model in that directory).

    Also a FileNotFoundError: public functions such as `rewardlab.modeling.loader.resolve_model_dir` raised that before,
    and callers (rewardlab's doctor among them) catch it.
    """


@contextmanager
def reading_user_input(*types: type[Exception]) -> Iterator[None]:
    """A library call on the user's input (their checkpoint, their file): its `types` of exception become a UserError in
    the library's own words. Only around such calls: the same exception elsewhere is a bug and keeps its traceback."""
    try:
        yield
    except types as err:
        raise UserError(str(err)) from None
