"""Exceptions raised by loladeft.

Every error that bad input can cause derives from :class:`LoladeftError`, so a caller
(the CLI included) can turn it into one clear line instead of a traceback.
"""

from __future__ import annotations


class LoladeftError(Exception):
    """Base class of every error loladeft raises on purpose."""


class InvalidInstanceError(LoladeftError, ValueError):
    """An instance (or one of its fields) is malformed.

    Parameters
    ----------
    field
        Name of the offending field, as in the instance file (``"J"``, ``"bandwidth"``...).
    problem
        What is wrong with it, in a few words.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class UnsupportedInstanceError(LoladeftError, ValueError):
    """A scheme was asked to solve an instance outside its domain (e.g. CRUNCH on a
    non-monotone instance)."""


class UnknownSchemeError(LoladeftError, KeyError):
    """No scheme of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
