"""Flower 1.42's fixed waits on the message path, and how loladeft's processes shorten them.

A message between the ServerApp and a ClientApp crosses four polling loops. Their flwr 1.42
defaults, and what loladeft's own processes (the ServerApp of :mod:`loladeft.runtime.server`,
:mod:`loladeft.runtime.supernode`, :mod:`loladeft.runtime.executor`) use instead:

======================================  ==================  ==========================
wait (flwr 1.42)                        default             loladeft
======================================  ==================  ==========================
``Grid.send_and_receive``, per pull     3 s                 own pull loop, 10 ms
SuperNode idle poll of the SuperLink    3 s                 20 ms, up to 0.2 s idle (1)
SuperNode wait for a ClientApp reply    0.5 s steps         20 ms (1)
SuperExec task poll                     1 s                 0.1 s (env), 20 ms-0.2 s (2)
retry of an object not yet stored       1 s, up to 10 s     20 ms, up to 0.5 s (3)
new ClientApp process per message       ~2 s (imports)      none: warm executor (2)
======================================  ==================  ==========================

(1) :func:`cap_supernode_sleeps` in :mod:`loladeft.runtime.supernode`;
(2) :mod:`loladeft.runtime.executor`; (3) :func:`fast_object_pulls`, in all three of
loladeft's processes.

The last one matters most and is the least visible: a message's metadata can be listed
before its arrays are stored, and the first retry then costs a whole second on every hop.

Each patch changes only how long a loop waits before asking again, never what is asked.
"""

from __future__ import annotations

import time as _time
from typing import Any

#: Object-pull retry: first wait and longest wait, in seconds.
PULL_BACKOFF = (0.02, 0.5)


def fast_object_pulls(
    initial: float = PULL_BACKOFF[0], cap: float = PULL_BACKOFF[1], max_time: float | None = None
) -> None:
    """Make Flower's object pulls in this process retry after ``initial`` s (doubling up to
    ``cap`` s) instead of 1 s (up to 10 s).

    ``max_time`` bounds how long a pull waits for objects that never come (flwr's default,
    7200 s, lets the reply of a node killed mid-upload block the server for minutes); the
    pull then yields an error reply, which the server treats as a failed node.
    """
    from flwr.supercore.inflatable import inflatable_utils as u

    for fn in (u.pull_objects, u.pull_and_inflate_object_from_tree):
        fn.__kwdefaults__.update(initial_backoff=initial, backoff_cap=cap)
        if max_time is not None:
            fn.__kwdefaults__["max_time"] = max_time


class Backoff:
    """An idle-polling interval: ``low`` right after activity, doubling up to ``high`` while
    nothing happens. Fast when a round is under way, cheap between rounds (an idle local
    federation of 6 nodes polling every 20-50 ms used 1.3 of this machine's 2 cores)."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, max(low, high)
        self.current = low

    def reset(self) -> None:
        """Something happened: poll fast again."""
        self.current = self.low

    def sleep(self) -> None:
        """Wait one interval, then lengthen the next."""
        _time.sleep(self.current)
        self.current = min(2 * self.current, self.high)


class _SuperNodeTime:
    """Stand-in for the :mod:`time` module of the SuperNode main loop: its idle poll
    (``sleep(3)``) follows a :class:`Backoff` that restarts whenever the loop did work since
    its last sleep; its shorter waits (for a reply, in memory) are capped at ``low``."""

    def __init__(self, backoff: Backoff, active_gap: float = 0.1) -> None:
        self.backoff = backoff
        self.active_gap = active_gap
        self._last = _time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds < 1:
            _time.sleep(min(seconds, self.backoff.low))
        else:
            if _time.monotonic() - self._last > self.active_gap:
                self.backoff.reset()
            self.backoff.sleep()
        self._last = _time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def cap_supernode_sleeps(low: float, high: float) -> None:
    """Shorten the sleeps of the SuperNode main loop (``flwr.supernode.start_client_internal``)
    by replacing that module's ``time`` reference (see :class:`_SuperNodeTime`)."""
    from flwr.supernode import start_client_internal as sci

    sci.time = _SuperNodeTime(Backoff(low, high))  # type: ignore[assignment]
