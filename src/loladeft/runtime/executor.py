"""A warm executor for a SuperNode: runs loladeft's ClientApp tasks in one long-lived process.

Why
---
In flwr 1.42 a SuperNode in its default ``subprocess`` isolation hands every message to a
SuperExec, which starts a fresh ``flwr-clientapp`` process for it. For DEFT that process
imports torch and transformers and rebuilds the model for every message, seconds of work
for a step that computes in a fraction of that, twice per round (``query`` and ``train``).

What it does
------------
A SuperNode started with ``--isolation process`` leaves task execution to an external
process connected to its Runtime API. This executor is that process: it acquires ClientApp
tasks from the SuperNode as ``flower-superexec`` does, and runs each one *in this process*
with Flower's own ``flwr-clientapp`` steps (pull the task's message and context, call the
ClientApp, push the reply and the task's final status) instead of spawning a process. The
ClientApp is :data:`loladeft.runtime.app.client_app`, imported once; its model cache
(:func:`loladeft.runtime.device.engine`) stays warm across messages. Node state still lives
in Flower's ``Context.state`` only, exactly as with fresh processes.

Run it next to a SuperNode (``python -m loladeft.runtime.supernode --loladeft-warm ...``
starts both), or by hand::

    flower-supernode --isolation process --host 127.0.0.1 --port 9094 ... &
    python -m loladeft.runtime.executor --runtime-api-address 127.0.0.1:9094 --insecure
"""

from __future__ import annotations

import argparse
from typing import Any

#: Seconds between two task polls: right after a task, and at most while idle.
POLL_S = (0.02, 0.2)


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


def run_task(address: str, token: str, insecure: bool, certificates: bytes | None) -> None:
    """Execute one ClientApp task in this process (``flwr-clientapp``'s steps, no exit)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from loladeft.runtime.app import client_app

    client = _client(address, insecure, certificates, RuntimeTokenHttpInterceptor(token))
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
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
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()


def serve(address: str, insecure: bool, root_certificates: str | None = None) -> None:
    """Acquire and run ClientApp tasks from the SuperNode at ``address`` until killed."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    import loladeft.runtime.app  # noqa: F401  (import torch & co. once, before any task)
    from loladeft.runtime.polling import Backoff, fast_object_pulls

    fast_object_pulls()

    certificates = None if root_certificates is None else open(root_certificates, "rb").read()
    client = _client(address, insecure, certificates)
    idle = Backoff(*POLL_S)
    while True:
        res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if res.HasField("task") and res.token:
            run_task(address, res.token, insecure, certificates)
            idle.reset()
        else:
            idle.sleep()


def main(argv: list[str] | None = None) -> None:
    """``python -m loladeft.runtime.executor --runtime-api-address HOST:PORT ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime-api-address", required=True)
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--insecure", action="store_true")
    tls.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        from flwr.supercore.app_utils import start_parent_process_monitor

        start_parent_process_monitor(args.parent_pid)
    serve(args.runtime_api_address, args.insecure, args.root_certificates)


if __name__ == "__main__":
    main()
