"""The errors bearrec raises for bad input: each names where the problem is and how to fix it."""
from __future__ import annotations


class BearrecError(Exception):
    """Base class: a problem the user can fix. The CLI prints it and exits non-zero."""


class DataError(BearrecError):
    """Malformed or inconsistent input data (a file, a line, a field)."""

    def __init__(self, message: str, *, path: object = None, line: int | None = None, fix: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        text = where + message
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)
        self.path = path
        self.line = line
        self.fix = fix


class ConfigError(BearrecError):
    """An invalid configuration value or combination of options."""
