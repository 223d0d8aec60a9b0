"""Exceptions raised by loladeft.

Every error that bad input can cause derives from :class:`LoladeftError`, so a caller
(the CLI included) can turn it into one clear line instead of a traceback.
"""

from __future__ import annotations


class LoladeftError(Exception):
    """Base class of every error loladeft raises on purpose."""


class FieldError(LoladeftError, ValueError):
    """An input (instance, profile, scenario...) has a malformed field.

    Parameters
    ----------
    field
        Name of the offending field, as in the input file (``"J"``, ``"depths[3].flops"``...).
    problem
        What is wrong with it, in a few words.
    """

    #: Put before the message, e.g. ``"profile: "``.
    prefix = ""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{self.prefix}{field}: {problem}")


class InputError(LoladeftError, ValueError):
    """Something the user gave that cannot be used: a configuration value, a data set, a
    model, a profile, an output folder, a checkpoint. The message names it."""


class RunError(LoladeftError, RuntimeError):
    """A run stopped on purpose: a non-finite loss or gradient, or nothing was trained. What
    it had written is kept."""


class InvalidInstanceError(FieldError):
    """An instance (or one of its fields) is malformed."""


class UnsupportedInstanceError(LoladeftError, ValueError):
    """A scheme was asked to solve an instance outside its domain (e.g. CRUNCH on a
    non-monotone instance)."""


class UnknownSchemeError(LoladeftError, KeyError):
    """No scheme of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FederationError(LoladeftError, RuntimeError):
    """The Flower runtime could not run: a process of a local federation failed or did not
    come up in time, a ``flwr`` command failed, the run did not finish, or the run's nodes
    did not connect. The message says which and where its logs are."""


class InvalidReply(LoladeftError, ValueError):
    """A Flower node's reply that must not be used; the message says why. The server treats
    it as that node's failure (its block is reassigned), never the run's."""


class AllocationError(LoladeftError, RuntimeError):
    """A scheme returned an allocation that breaks C1–C3 or the bandwidth budget.

    This is a defect of the scheme, never of the input: :func:`loladeft.solve` checks every
    answer (:func:`loladeft.allocation.validate.validate_answer`) before calling it feasible.
    """
