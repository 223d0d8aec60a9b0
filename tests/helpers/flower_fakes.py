"""An in-memory, synchronous stand-in for Flower's ``Grid`` that delivers every message to
``loladeft.runtime.app.client_app`` at once, with hooks to break nodes (tests of the
server's fault handling without Ray or sockets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message, RecordDict

from loladeft.runtime.app import client_app


class FakeGrid:
    """``K`` nodes with ids ``100 + k``; ``tamper(k, message, reply) -> reply | None`` may
    replace a reply (``None``: the node never answers)."""

    def __init__(self, K: int, tamper: Callable[[int, Any, Any], Any] | None = None) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        self.contexts = {
            100 + k: Context(
                run_id=1,
                node_id=100 + k,
                node_config={"partition-id": k, "num-partitions": K},
                state=RecordDict(),
                run_config={},
            )
            for k in range(K)
        }
        self.tamper = tamper
        self.replies: dict[str, Any] = {}
        self.sent: list[tuple[int, str, int | None]] = []  # (device, type, depth)

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: list[Any]) -> list[str]:
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = m.object_id
            m.metadata.__dict__["_src_node_id"] = 0
            ctx = self.contexts[m.metadata.dst_node_id]
            k = int(ctx.node_config["partition-id"])
            depth = m.content["deft"].get("depth")
            self.sent.append((k, m.metadata.message_type, depth))
            try:
                reply = client_app(m, ctx)
            except Exception as exc:  # what Flower turns into an error reply
                from flwr.app import Error

                reply = Message(Error(code=0, reason=repr(exc)), reply_to=m)
            if self.tamper is not None:
                reply = self.tamper(k, m, reply)
            if reply is not None:
                self.replies[m.metadata.message_id] = reply
            ids.append(m.metadata.message_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Any]:
        return [self.replies.pop(i) for i in list(ids) if i in self.replies]
