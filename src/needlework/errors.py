"""User-facing errors: the CLI prints them as one line and exits 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config, data file, path, environment).

    The message must name the file and/or field and say what was expected.
    """

    exit_code = 2


class ConfigError(UserError):
    """A config file or override is malformed or inconsistent."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ": ".join(p for p in (source, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ContractError(UserError, TypeError):
    """A unit breaks its stage's contract (a member missing, a file named otherwise): raised
    when it registers, so a contributor sees the list in one line, not a later AttributeError."""


class DataError(UserError):
    """A data file is malformed (bad JSON, missing field, wrong type)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message cut to its first line (for one-line errors); its type name when
    the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
