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
Only the module-global ``time`` of ``flwr.supernode.start_client_internal``: it is
replaced by a shim that forwards every attribute to the real :mod:`time` module except
``sleep(s)``, which sleeps ``min(s, POLL)``. ``POLL`` comes from the environment
variable ``LOLADEFT_NODE_POLL_S`` (seconds, default ``0.05``). No other module, and no
protocol behaviour, changes: the node just asks the SuperLink more often. The
SuperExec the SuperNode spawns (``flower-superexec``, a separate process) polls for
ClientApp tasks every ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` seconds (default 1 s,
read by ``flwr.supercore.superexec.run_superexec``); set that variable in the
environment too (:class:`loladeft.runtime.federation.LocalFederation` does).

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
import time as _time
from typing import Any

#: Environment variable holding the longest idle sleep of the SuperNode, in seconds.
POLL_ENV = "LOLADEFT_NODE_POLL_S"
#: Default longest idle sleep, in seconds.
DEFAULT_POLL_S = 0.05


class _ShortSleepTime:
    """Stand-in for the :mod:`time` module whose ``sleep`` is capped at ``poll`` s."""

    def __init__(self, poll: float) -> None:
        self.poll = poll

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(seconds, self.poll))

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def poll_seconds() -> float:
    """Return the idle polling period from ``LOLADEFT_NODE_POLL_S`` (default 0.05 s).

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
    """Cap the sleeps of the SuperNode main loop at ``poll`` seconds.

    Parameters
    ----------
    poll
        Longest sleep, in seconds; ``None`` reads :data:`POLL_ENV`.
    """
    from flwr.supernode import start_client_internal as sci

    sci.time = _ShortSleepTime(poll_seconds() if poll is None else poll)  # type: ignore[assignment]


def main() -> None:
    """Patch the polling sleeps, then run ``flower-supernode`` with ``sys.argv``."""
    patch()
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
