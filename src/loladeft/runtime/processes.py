"""Supervision of a local federation's processes: start them, find them, stop them all.

Every child runs in a session of its own (its process group) with its output in a log file.
``flower-superlink`` starts its SuperExec in yet another session, so stopping by process
group is not enough: every child also carries a marker variable in its environment, and
:func:`stop` sweeps for it (:func:`pids_with_env`, with :mod:`psutil`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from loladeft.exceptions import FederationError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Proc:
    """A started child: its name, process, log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes] = field(repr=False)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour codes."""
    return _ANSI.sub("", text)


def spawn(name: str, cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> Proc:
    """Start ``cmd`` in a new session, its output appended to ``log``.

    Raises
    ------
    FederationError
        The executable cannot be started.
    """
    log_file = log.open("ab")
    try:
        popen = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as err:
        log_file.close()
        raise FederationError(f"cannot start {name} ({cmd[0]}): {err}") from err
    return Proc(name, popen, log, log_file)


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pids_with_env(name: str, value: str) -> list[int]:
    """Return the PIDs of this user's live processes whose environment has ``name=value``
    (zombies, whose environment is empty, are not reported)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get(name) == value:
                found.append(p.pid)
    return found


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log, without colour codes."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(strip_ansi(text).splitlines()[-lines:])


def exit_on_sigterm() -> Any:
    """Turn SIGTERM into ``SystemExit`` (so a ``with`` block still stops every process when
    its launcher is terminated); return the previous handler, or ``None`` off the main
    thread, where handlers cannot be set."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def kill_group(pid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pid`` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(procs: Iterable[Proc], leftovers: Callable[[], list[int]], grace: float) -> None:
    """Stop ``procs`` and every process ``leftovers()`` lists: SIGTERM to each process group
    and leftover, SIGKILL after ``grace`` seconds, then close the logs."""
    procs = list(procs)
    for p in procs:
        if p.alive():
            kill_group(p.popen.pid, signal.SIGTERM)
    for pid in leftovers():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(p.alive() for p in procs) and not leftovers():
            break
        time.sleep(0.05)
    for p in procs:
        kill_group(p.popen.pid, signal.SIGKILL)  # also reaches orphans in the group
    for _ in range(3):
        pids = leftovers()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=5)
        p.log_file.close()
