"""Running ``ip`` and ``tc``, and the one error the testbed raises when Linux says no."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from loladeft.exceptions import LoladeftError
from loladeft.testbed.defaults import COMMAND_TIMEOUT_S


class TestbedError(LoladeftError, RuntimeError):
    """The kernel, the user's rights or an ``ip``/``tc`` command refused a testbed step.

    The message is one line that says what failed (the CLI prints it and exits 2).
    """

    __test__ = False  # not a pytest test class despite its name


def run(argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Run a command (no shell) and return its stdout.

    Parameters
    ----------
    argv
        The command and its arguments.
    check
        Raise :class:`TestbedError` when the command exits non-zero.
    timeout
        Seconds before the command counts as failed.

    Returns
    -------
    str
        The command's standard output ("" when it failed and ``check`` is false).

    Raises
    ------
    TestbedError
        The command is missing, timed out or (with ``check``) failed; the message quotes the
        command and the first line of its stderr.
    """
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise TestbedError(f"{argv[0]}: command not found (install iproute2)") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"`{' '.join(argv)}` timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        if not check:
            return ""
        err = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        raise TestbedError(f"`{' '.join(argv)}` failed: {err}")
    return proc.stdout


def require_root() -> None:
    """Raise :class:`TestbedError` unless this process may create namespaces and cgroups."""
    if os.name != "posix" or not os.path.isdir("/proc/self/ns"):
        raise TestbedError("the testbed needs Linux (network namespaces and cgroups)")
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (network namespaces, tc and cgroups)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise TestbedError(f"{tool}: command not found (install iproute2)")
