"""User-facing data errors: one line naming the file, the line and the field."""

from __future__ import annotations

from rewardlab.errors import UserError


class DataError(UserError):
    """Bad input data. `str(err)` is the one-line message shown to the user."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = self.file or "<data>"
        if self.line is not None:
            where += f":{self.line}"
        what = f" field '{self.field}':" if self.field else ""
        return f"{where}:{what} {self.message}"
