"""What every ``lossbound <command>`` shares: bad usage is one line, not a usage dump."""
from __future__ import annotations

import argparse

from lossbound.core.errors import InputError

__all__ = ["OneLineParser", "UsageError", "first_line"]


class UsageError(InputError):
    """A command line argparse refused (caught with the other bad input)."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose complaints raise :class:`UsageError` (one line, the caller's exit code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} ({self.prog} --help)")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
