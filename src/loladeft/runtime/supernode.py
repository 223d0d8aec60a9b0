"""``flower-supernode`` with short idle polling (``python -m loladeft.runtime.supernode``).

Why
---
In flwr 1.42 the SuperNode main loop (``flwr.supernode.start_client_internal``)
pulls a message from the SuperLink and, when there is none, calls ``time.sleep(3)``
before asking again; while a ClientApp runs, it waits for the reply in
``time.sleep(0.5)`` steps. A message pushed by the ServerApp therefore waits up to 3 s
before a node even sees it, and 0.5 s more before the reply leaves: on a local
federation this floor, not the computation, dominates every round.

What it patches
---------------
Only on the Flower version the patches were written for
(:mod:`loladeft.runtime.flower_patches`, which has the table of every wait on the message
path); on any other version, or with ``LOLADEFT_FLOWER_PATCHES=0``, this entry point says so
in one line and replaces itself with the stock ``flower-supernode`` (same arguments, without
``--loladeft-warm``). Two waits, in this process only: the SuperNode main loop polls 20 ms
after activity, backing off to ``LOLADEFT_NODE_POLL_S`` (default 0.2 s) while idle, instead
of every 3 s; and Flower's retry of an object that is not stored yet starts at 20 ms instead
of 1 s. No protocol behaviour changes: the node just asks the SuperLink more often. The
SuperExec the SuperNode spawns (``flower-superexec``, a separate process) polls for ClientApp
tasks every ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` seconds (default 1 s); set that variable too
(:class:`loladeft.runtime.federation.LocalFederation` does).

With ``--loladeft-warm`` (removed before Flower sees the arguments) the SuperNode runs with
``--isolation process`` next to a :mod:`loladeft.runtime.executor` child that executes its
ClientApp tasks in one warm process instead of one process per message.

Then Flower's own ``flower-supernode`` entry point runs with the same command-line
arguments, so every ``flower-supernode`` flag works unchanged.

A real, remote SuperNode may use either the stock ``flower-supernode`` (3 s idle
polling, fewer requests to the SuperLink) or this entry point (lower latency, one small
HTTP request every ``POLL`` seconds while idle); both speak the same protocol.
"""

from __future__ import annotations

import os
import sys

#: Environment variable holding the longest idle sleep of the SuperNode, in seconds.
POLL_ENV = "LOLADEFT_NODE_POLL_S"
#: Default longest idle sleep, in seconds (the shortest is 20 ms, right after activity).
DEFAULT_POLL_S = 0.2


def poll_seconds() -> float:
    """Return the longest idle polling period from ``LOLADEFT_NODE_POLL_S`` (default 0.2 s).

    Raises
    ------
    SystemExit
        If the variable is not a positive finite number.
    """
    raw = os.environ.get(POLL_ENV, str(DEFAULT_POLL_S))
    try:
        poll = float(raw)
    except ValueError:
        poll = -1.0
    if not 0.0 < poll < float("inf"):
        raise SystemExit(f"{POLL_ENV} must be a positive number of seconds, got {raw!r}")
    return poll


def patch(poll: float | None = None) -> bool:
    """Shorten the sleeps of the SuperNode main loop: 20 ms after activity, at most ``poll``
    seconds while idle; and the object-pull retries. Only where
    :func:`loladeft.runtime.flower_patches.active`; returns whether applied.

    Parameters
    ----------
    poll
        Longest sleep, in seconds; ``None`` reads :data:`POLL_ENV`.
    """
    from loladeft.runtime import flower_patches

    high = poll_seconds() if poll is None else poll
    if not flower_patches.active():
        return False
    flower_patches.apply_supernode(high)
    return True


#: Flag of this entry point (removed before Flower parses the arguments): run ClientApp
#: tasks in a warm :mod:`loladeft.runtime.executor` instead of a process per message.
WARM_FLAG = "--loladeft-warm"


def _option(argv: list[str], name: str) -> str | None:
    """Value of ``name VALUE`` or ``name=VALUE`` in ``argv``."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def start_warm_executor(argv: list[str]) -> list[str]:
    """Start :mod:`loladeft.runtime.executor` for the SuperNode that ``argv`` describes
    (a child in this process group, exiting with this process) and return ``argv`` with
    ``--isolation process``, which makes the SuperNode leave its tasks to that executor."""
    import subprocess

    host = _option(argv, "--host") or "127.0.0.1"
    port = _option(argv, "--port") or "9094"
    address = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    cmd = [sys.executable, "-m", "loladeft.runtime.executor", "--runtime-api-address", address]
    ca = _option(argv, "--ssl-ca-certfile")
    cmd += ["--root-certificates", ca] if ca else ["--insecure"]
    cmd += ["--parent-pid", str(os.getpid())]
    subprocess.Popen(cmd)
    return [*argv, "--isolation", "process"]


def stock_supernode() -> str:
    """Path of Flower's ``flower-supernode`` next to this interpreter (or on ``PATH``)."""
    import shutil
    from pathlib import Path

    here = Path(sys.executable).parent / "flower-supernode"
    return str(here) if here.exists() else (shutil.which("flower-supernode") or str(here))


def main() -> None:
    """Patch the polling sleeps, then run ``flower-supernode`` with ``sys.argv`` (with
    :data:`WARM_FLAG`: next to a warm executor); without the patches, replace this process
    by the stock ``flower-supernode``."""
    argv = sys.argv[1:]
    warm = WARM_FLAG in argv
    argv = [a for a in argv if a != WARM_FLAG]
    if not patch():
        exe = stock_supernode()
        os.execv(exe, [exe, *argv])  # does not return
        return
    from loladeft.runtime import flower_patches

    if warm:
        argv = start_warm_executor(argv)
    flower_patches.run_supernode(argv)


if __name__ == "__main__":
    main()
