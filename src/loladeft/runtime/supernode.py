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
Two waits, in this process only (:mod:`loladeft.runtime.polling` has the table of every
wait on the message path): the SuperNode main loop polls 20 ms after activity, backing off
to ``LOLADEFT_NODE_POLL_S`` (default 0.2 s) while idle, instead of every 3 s; and Flower's
retry of an object that is not stored yet starts at 20 ms instead of 1 s. No protocol behaviour
changes: the node just asks the SuperLink more often. The SuperExec the SuperNode spawns
(``flower-superexec``, a separate process) polls for ClientApp tasks every
``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` seconds (default 1 s); set that variable too
(:class:`loladeft.runtime.federation.LocalFederation` does).

With ``--loladeft-warm`` (removed before Flower sees the arguments) the SuperNode runs with
``--isolation process`` next to a :mod:`loladeft.runtime.executor` child that executes its
ClientApp tasks in one warm process instead of one process per message.

Then the normal ``flower-supernode`` entry point (``flwr.supernode.cli
.flower_supernode``) runs with the same command-line arguments, so every
``flower-supernode`` flag works unchanged.

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


def patch(poll: float | None = None) -> None:
    """Shorten the sleeps of the SuperNode main loop: 20 ms after activity, at most ``poll``
    seconds while idle; and the object-pull retries.

    Parameters
    ----------
    poll
        Longest sleep, in seconds; ``None`` reads :data:`POLL_ENV`.
    """
    from loladeft.runtime.polling import cap_supernode_sleeps, fast_object_pulls

    high = poll_seconds() if poll is None else poll
    cap_supernode_sleeps(min(0.02, high), high)
    fast_object_pulls()


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


def main() -> None:
    """Patch the polling sleeps, then run ``flower-supernode`` with ``sys.argv``
    (with :data:`WARM_FLAG`: next to a warm executor)."""
    patch()
    from flwr.supernode.cli import flower_supernode

    argv = sys.argv[1:]
    if WARM_FLAG in argv:
        argv = start_warm_executor([a for a in argv if a != WARM_FLAG])
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


if __name__ == "__main__":
    main()
