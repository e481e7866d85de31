"""The one error type a user sees as a single line: bad input, bad settings, a missing file, an unknown model, an output
path that would lose something. Every other exception is a bug in rewardlab and shows its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; `str(err)` is the whole message (one line), shown as `error: ...` with exit code 1.

    A ValueError so that callers that already catch ValueError for bad input keep working.
    """
