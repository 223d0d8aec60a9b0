"""Every use of Flower internals in loladeft: latency patches for flwr 1.42.x, applied only there.

The rest of the runtime (:mod:`~loladeft.runtime.app`, :mod:`~loladeft.runtime.server`,
:mod:`~loladeft.runtime.device`, :mod:`~loladeft.runtime.protocol`,
:mod:`~loladeft.runtime.virtual`) uses only Flower's public API (``flwr.app``,
``flwr.serverapp``, ``flwr.clientapp``, ``flwr.simulation``). This module holds what Flower
does not offer publicly: shorter fixed waits on the message path, and a warm executor that
runs a SuperNode's ClientApp tasks in one long-lived process. Both reach into private flwr
modules, so they are applied only when the installed Flower is the version they were written
for (:data:`WRITTEN_FOR`, checked with :mod:`importlib.metadata`) and
``LOLADEFT_FLOWER_PATCHES`` is not ``0``; otherwise every process runs stock Flower and says
so in one log line. Each patch changes only how long a loop waits before asking again, or in
which process a task runs, never what is asked.

A message between the ServerApp and a ClientApp crosses four polling loops. Their flwr 1.42
defaults, and what loladeft's processes (the ServerApp of :mod:`loladeft.runtime.server`,
:mod:`loladeft.runtime.supernode`, :mod:`loladeft.runtime.executor`) use with the patches:

======================================  ==================  ==========================
wait (flwr 1.42)                        default             loladeft
======================================  ==================  ==========================
``Grid.send_and_receive``, per pull     3 s                 own pull loop, 10 ms (0)
SuperNode idle poll of the SuperLink    3 s                 20 ms, up to 0.2 s idle (1)
SuperNode wait for a ClientApp reply    0.5 s steps         20 ms (1)
SuperExec task poll                     1 s                 0.1 s (env), 20 ms-0.2 s (2)
retry of an object not yet stored       1 s, up to 10 s     20 ms, up to 0.5 s (3)
new ClientApp process per message       ~2 s (imports)      none: warm executor (2)
======================================  ==================  ==========================

(0) public API, always on (:class:`loladeft.runtime.server.Transport`);
(1) :func:`apply_supernode`; (2) :func:`serve_tasks`; (3) :func:`fast_object_pulls`, in all
three of loladeft's processes (:func:`apply_server` in the ServerApp).

The last one matters most and is the least visible: a message's metadata can be listed
before its arrays are stored, and the first retry then costs a whole second on every hop.
"""

from __future__ import annotations

import os
import sys
import time as _time
from collections.abc import Callable
from importlib import metadata
from typing import Any

#: The Flower release (major.minor) the patches were written for and read from.
WRITTEN_FOR = "1.42"
#: Environment variable: ``0`` runs stock Flower even on :data:`WRITTEN_FOR` (benchmarks).
ENV = "LOLADEFT_FLOWER_PATCHES"
#: Object-pull retry: first wait and longest wait, in seconds.
PULL_BACKOFF = (0.02, 0.5)
#: Seconds between two task polls of the warm executor: right after a task, at most idle.
TASK_POLL_S = (0.02, 0.2)

_announced = False


def flower_version() -> str:
    """The installed flwr version (``""`` if flwr is not installed)."""
    try:
        return metadata.version("flwr")
    except metadata.PackageNotFoundError:
        return ""


def why_stock() -> str | None:
    """Why the patches are not applied in this process, or ``None`` if they are."""
    if os.environ.get(ENV, "1").strip() == "0":
        return f"{ENV}=0"
    version = flower_version()
    if version.split(".")[:2] != WRITTEN_FOR.split("."):
        return f"flwr {version or '(not installed)'} is installed, not {WRITTEN_FOR}.x"
    return None


def active(log: Callable[[str], None] | None = None) -> bool:
    """Whether to apply the patches; if not, say once per process (``log``, default stderr)
    that this process runs stock Flower, and why."""
    global _announced
    why = why_stock()
    if why is not None and not _announced:
        _announced = True
        line = f"stock Flower, loladeft's latency patches are off ({why})"
        if log is None:
            print(f"loladeft: {line}", file=sys.stderr, flush=True)
        else:
            log(line)
    return why is None


# ---------------------------------------------------------------------------- patches
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


def apply_server(max_time: float, log: Callable[[str], None] | None = None) -> bool:
    """The ServerApp's patch (fast object pulls bounded by ``max_time`` s); whether applied."""
    if not active(log):
        return False
    fast_object_pulls(max_time=max_time)
    return True


class Backoff:
    """An idle-polling interval: ``low`` right after activity, doubling up to ``high`` while
    nothing happens. Fast when a round is under way, cheap between rounds (an idle local
    federation of 6 nodes polling every 20-50 ms used 1.3 of a 2-core machine)."""

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


def apply_supernode(poll: float) -> None:
    """Shorten the SuperNode main loop's sleeps (``flwr.supernode.start_client_internal``'s
    ``time``, see :class:`_SuperNodeTime`: 20 ms after activity, at most ``poll`` s idle)
    and the object-pull retries. Call only when :func:`active`."""
    from flwr.supernode import start_client_internal as sci

    sci.time = _SuperNodeTime(Backoff(min(0.02, poll), poll))  # type: ignore[assignment]
    fast_object_pulls()


def run_supernode(argv: list[str]) -> None:
    """Run Flower's ``flower-supernode`` entry point in this (patched) process."""
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


# ------------------------------------------------------------------- warm executor
def _client(address: str, insecure: bool, certificates: bytes | None, *interceptors: Any) -> Any:
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=insecure,
        root_certificates=certificates,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            *interceptors,
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def _task_heartbeat(client: Any) -> Any:
    """The task heartbeat of the warm executor.

    Flower's own (``make_task_heartbeat_fn_http``) raises SIGINT in the process when the
    SuperNode rejects a heartbeat: right for ``flwr-clientapp``'s process per task, fatal
    for one process serving every task. A heartbeat that races the end of its task (its
    token already retired) was seen to kill the executor, and the node with it, for the rest
    of the run. Here a rejected or failed heartbeat is ignored: the server's round timeout
    bounds a task that really was cancelled.
    """
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    req = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(req)
        except Exception:
            pass
        return True

    return beat


def run_task(address: str, token: str, insecure: bool, certificates: bytes | None) -> None:
    """Execute one ClientApp task in this process (``flwr-clientapp``'s steps, no exit).

    The heartbeat stops before the task's output is pushed, which retires its token, so no
    heartbeat is ever sent with a retired token (:func:`_task_heartbeat`)."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from loladeft.runtime.app import client_app

    client = _client(address, insecure, certificates, RuntimeTokenHttpInterceptor(token))
    heartbeat = HeartbeatSender(_task_heartbeat(client))
    heartbeat.start()
    context = None
    status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _run, _fab = pull_task_input(client)
        try:
            reply = client_app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # the node reports it; the server reassigns the block
            reason = f"{type(exc).__name__}: {exc}"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                reply_to=message,
            )
            details = reason
        push_message(client, reply, context)
    finally:
        heartbeat.stop()
        push_task_output(client, context, status, details)
        client.close()


def serve_tasks(address: str, insecure: bool, root_certificates: str | None = None) -> None:
    """Acquire and run ClientApp tasks from the SuperNode at ``address`` until killed (the
    loop of ``flower-superexec``, without its process per task). Call only when
    :func:`active`."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    import loladeft.runtime.app  # noqa: F401  (import torch & co. once, before any task)

    fast_object_pulls()
    certificates = None
    if root_certificates is not None:
        with open(root_certificates, "rb") as fh:
            certificates = fh.read()
    client = _client(address, insecure, certificates)
    idle = Backoff(*TASK_POLL_S)
    while True:
        res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if res.HasField("task") and res.token:
            run_task(address, res.token, insecure, certificates)
            idle.reset()
        else:
            idle.sleep()


def exit_with_parent(pid: int) -> None:
    """Exit this process when process ``pid`` (its SuperNode) exits."""
    from flwr.supercore.app_utils import start_parent_process_monitor

    start_parent_process_monitor(pid)
