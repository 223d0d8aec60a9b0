"""The server's side of DEFT on Flower: Algorithm 1 over a Flower ``Grid``.

:class:`FlowerTrainer` is the in-process :class:`~loladeft.training.engine.Trainer` with two
steps replaced, so that scheduling, aggregation (eq. 6), the optimizer, evaluation, the
simulated clock and the result files stay the very same code:

``device_states``  query every node for its state (compute factor, available memory); the
                   channel is drawn at the server (``Clock.instance`` with the reports);
``run_devices``    send each scheduled node the latest LoRA weights, its block and the run
                   settings (``M`` among them) in one ``train`` message, and collect the
                   block gradients.

*Faults.* Every field of every reply is validated before use (:mod:`~loladeft.runtime.protocol`:
the state a node reports; for a gradient the expected node, round and block, names, shapes and
dtypes before the array is copied, finite values, a norm bound); whatever goes wrong while
reading one reply is that node's failure, never the run's. A node that replies
with an error or an invalid reply, or misses the round's wall-clock deadline, has failed: its
block is reassigned within the round to the best remaining device, the one not yet used this
round that holds the block in memory and would finish it soonest with the failed device's
bandwidth share. With none left the block is skipped this round (its parameters are not
stepped). Gradients already received are kept.

*Stragglers in virtual time.* With ``straggler_prob > 0`` each scheduled device misses the
round's virtual deadline (``deadline_factor`` times the planned round latency) with that
probability, drawn from the seed, the round and the device. Nothing sleeps: the server
reassigns the block at once and charges the wait to the simulated clock. A round with
reassignments lasts ``max`` over blocks of ``(deadline if reassigned else 0) + T_k``, with the
replacement's ``T_k`` computed with the failed device's bandwidth share.

*Identity.* A node names its device (``partition-id``) in its state; the first node that claims
device ``k`` keeps it for the whole run (with SuperNode authentication on, a Flower node id is
bound to the node's registered key, so the device is bound to that key too). A later claim of
a taken device, or of a second device by the same node, is rejected and logged: the honest
node keeps its slot, the claimant is unavailable that round.

*Polling.* ``Grid.send_and_receive`` sleeps 3 s between pulls in flwr 1.42; the server pushes
and pulls itself every ``poll_interval`` seconds instead (public ``Grid`` API only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from loladeft.exceptions import FederationError, FieldError, InvalidReply
from loladeft.runtime import protocol
from loladeft.training.engine import DeviceUpdate, RoundWork, Trainer

#: Key mixed into the straggler draws.
_STRAGGLE = 0x57A6


class Transport:
    """Push messages and pull their replies through a Flower ``Grid`` (a fast pull loop)."""

    def __init__(self, grid: Any, poll_interval: float) -> None:
        self.grid = grid
        self.poll_interval = poll_interval
        self.messages = 0

    def push(self, messages: list[Any]) -> list[str]:
        """Send ``messages``; their ids, in order (``""`` where Flower refused one)."""
        ids = [m or "" for m in self.grid.push_messages(messages)]
        self.messages += len(messages)
        return ids

    def pull(self, ids: Iterable[str]) -> list[Any]:
        """Replies that have arrived for ``ids`` (each is returned once)."""
        ids = [i for i in ids if i]
        return list(self.grid.pull_messages(ids)) if ids else []

    def gather(self, messages: list[Any], timeout: float) -> list[Any]:
        """Send ``messages`` and wait up to ``timeout`` s for their replies (in message
        order; ``None`` where none came)."""
        ids = self.push(messages)
        waiting = {i for i in ids if i}
        replies: dict[str, Any] = {}
        end = time.monotonic() + timeout
        while waiting and time.monotonic() < end:
            for reply in self.pull(waiting):
                replies[reply.metadata.reply_to_message_id] = reply
                waiting.discard(reply.metadata.reply_to_message_id)
            if waiting:
                time.sleep(self.poll_interval)
        return [replies.get(i) if i else None for i in ids]


@dataclass
class _Job:
    depth_index: int
    device: int
    start: float  # virtual start within the round (0, or the deadline after a failure)
    share: float  # bandwidth share B_k of the block
    wall_deadline: float


class FlowerTrainer(Trainer):
    """A DEFT run whose devices are Flower nodes (see the module docstring).

    Parameters
    ----------
    cfg
        The run's settings (``cfg.scenario.num_devices`` nodes take part).
    grid
        The ServerApp's ``Grid``.
    log
        One-line messages (faults, reassignments).
    """

    def __init__(
        self,
        cfg: Any,
        grid: Any,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(cfg, log=log)
        self.options = cfg.runtime
        self.transport = Transport(grid, self.options.poll_interval)
        self.config_json = protocol.encode_config(cfg)
        self.nodes: dict[int, int] = {}  # device k -> Flower node id (from the last query)
        self.owners: dict[int, int] = {}  # device k -> the node id that claimed it first
        self.faults = {
            "errors": 0,
            "invalid": 0,
            "timeouts": 0,
            "stragglers": 0,
            "reassigned": 0,
            "skipped_blocks": 0,
        }
        self.comm_seconds = 0.0  # wall time of the exchanges with the nodes
        self.node_seconds = 0.0  # sum over rounds of the slowest node's compute time
        self._round_node_seconds = 0.0
        self.max_message_bytes = 0

    def setup(self, *, dev: bool = True) -> FlowerTrainer:
        """Set up the engine, then wait for the run's ``K`` nodes to connect."""
        from loladeft.runtime import flower_patches

        flower_patches.apply_server(max_time=self.options.round_timeout, log=self.log)
        super().setup(dev=dev)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.expected = [
            {names[id(p)]: (tuple(p.shape), "float32") for p in (*block, *self.head)}
            for block in self.blocks
        ]
        end = time.monotonic() + self.options.node_wait
        while len(list(self.transport.grid.get_node_ids())) < self.cfg.scenario.num_devices:
            if time.monotonic() > end:
                have = len(list(self.transport.grid.get_node_ids()))
                raise FederationError(
                    f"nodes: {have} of the run's K = {self.cfg.scenario.num_devices} devices connected "
                    f"within {self.options.node_wait:g} s"
                )
            time.sleep(0.1)
        self._warm_up()
        return self

    def _warm_up(self) -> None:
        """Have every node load the model and its data before round 1 (a ``query`` with
        ``warm``), so that no node misses the first round's deadline while starting."""
        for node_id, reply in self._query(0, self.options.node_wait, warm=True):
            if reply is None or reply.has_error():
                why = "no reply" if reply is None else reply.error.reason
                self.log(f"warm-up: node {node_id} is not ready ({why})")
                continue
            try:  # joining: the first node to claim a device keeps it
                self._claim(node_id, protocol.read_state(reply.content, self.cfg.scenario.num_devices)[0])
            except InvalidReply as exc:
                self.log(f"warm-up: node {node_id} rejected ({exc})")

    def _claim(self, node_id: int, k: int) -> None:
        """Bind device ``k`` to ``node_id`` on its first claim; refuse any other pairing."""
        owner = self.owners.get(k)
        if owner == node_id:
            return
        if owner is not None:
            raise InvalidReply(f"partition-id: device {k} belongs to node {owner}")
        held = next((d for d, i in self.owners.items() if i == node_id), None)
        if held is not None:
            raise InvalidReply(f"partition-id: node {node_id} is device {held}, not {k}")
        self.owners[k] = node_id

    def _query(self, n: int, timeout: float, warm: bool = False) -> list[tuple[int, Any]]:
        """Ask every connected node for its state in round ``n``: ``(node id, reply)``."""
        from flwr.app import ConfigRecord, Message, RecordDict

        deft = ConfigRecord({"round": n, "config": self.config_json, "warm": warm})
        node_ids = list(self.transport.grid.get_node_ids())
        messages = [
            Message(
                RecordDict({protocol.DEFT: deft}),
                dst_node_id=i,
                message_type=protocol.QUERY,
                ttl=timeout + 60,
                group_id=str(n),
            )
            for i in node_ids
        ]
        return list(zip(node_ids, self.transport.gather(messages, timeout), strict=True))

    # -- Algorithm 1, the two steps that go over the network ----------------------------
    def device_states(self, n: int) -> Any:
        """Query every node; silent nodes get no memory (they cannot be scheduled)."""
        assert self.clock is not None
        t0 = time.perf_counter()
        replies = self._query(n, self.options.query_timeout)
        K = self.cfg.scenario.num_devices
        f = np.ones(K)
        memory = np.zeros(K)
        self.nodes = {}
        for node_id, reply in replies:
            if reply is None or reply.has_error():
                why = "no reply" if reply is None else reply.error.reason
                self.log(f"round {n}: node {node_id} did not report its state ({why})")
                continue
            try:
                k, f_k, memory_k = protocol.read_state(reply.content, K)
                self._claim(node_id, k)
            except InvalidReply as exc:
                self.log(f"round {n}: node {node_id}: state rejected ({exc})")
                continue
            self.nodes[k] = node_id
            f[k], memory[k] = f_k, memory_k
        missing = sorted(set(range(K)) - set(self.nodes))
        if missing:
            self.log(f"round {n}: devices {missing} unavailable")
        self.comm_seconds += time.perf_counter() - t0
        return self.clock.instance(n, compute_factor=f, device_memory=memory)

    def run_devices(self, n: int, instance: Any, allocation: Any) -> RoundWork:
        """Send the scheduled blocks, collect and validate the gradients, reassign failures."""
        from flwr.app import RecordDict

        t0 = time.perf_counter()
        opts = self.options
        assignment = [int(k) for k in allocation.assignment]
        bandwidth = np.asarray(allocation.bandwidth, dtype=float)
        deadline = opts.deadline_factor * float(allocation.latency)
        weights = RecordDict()
        protocol.put(weights, protocol.WEIGHTS, self.weights())
        size = weights[protocol.WEIGHTS].count_bytes()
        self.max_message_bytes = max(self.max_message_bytes, size)
        used = set(assignment)
        failed: set[int] = set()
        updates: list[DeviceUpdate | None] = [None] * len(assignment)
        finish: list[float] = [math.nan] * len(assignment)
        jobs: dict[str, _Job] = {}
        faults = False
        self._round_node_seconds = 0.0

        def dispatch(depth_index: int, k: int, start: float, share: float) -> None:
            if k not in self.nodes:
                fail(_Job(depth_index, k, start, share, 0.0), "timeouts", "unavailable")
                return
            msg = self._train_message(n, depth_index, k, weights)
            (mid,) = self.transport.push([msg])
            job = _Job(depth_index, k, start, share, time.monotonic() + opts.round_timeout)
            if not mid:
                fail(job, "errors", "message refused by the SuperLink")
                return
            jobs[mid] = job

        def fail(job: _Job, kind: str, why: str) -> None:
            nonlocal faults
            faults = True
            self.faults[kind] += 1
            failed.add(job.device)
            depth = job.depth_index + 1
            self.log(f"round {n}: device {job.device} failed block {depth} ({why})")
            spare = self._replacement(instance, job.depth_index, job.share, used | failed)
            if spare is None:
                self.faults["skipped_blocks"] += 1
                self.log(f"round {n}: no device left for block {depth}; skipped this round")
                return
            used.add(spare)
            self.faults["reassigned"] += 1
            self.log(f"round {n}: block {depth} reassigned to device {spare}")
            dispatch(job.depth_index, spare, max(job.start, deadline), job.share)

        stragglers = self._stragglers(n)
        for depth_index, k in enumerate(assignment):
            if stragglers[k]:
                fail(_Job(depth_index, k, 0.0, bandwidth[k], 0.0), "stragglers", "straggler")
                continue
            dispatch(depth_index, k, 0.0, bandwidth[k])
        while jobs:
            for reply in self.transport.pull(list(jobs)):
                job = jobs.pop(reply.metadata.reply_to_message_id, None)
                if job is None:
                    continue
                try:
                    updates[job.depth_index] = self._check_reply(reply, n, job)
                except InvalidReply as exc:
                    kind = "errors" if reply.has_error() else "invalid"
                    fail(job, kind, str(exc))
                    continue
                finish[job.depth_index] = job.start + float(
                    instance.J[job.device, job.depth_index]
                    + instance.block_bits / (job.share * instance.spectral_efficiency[job.device])
                )
            now = time.monotonic()
            for mid in [m for m, j in jobs.items() if now > j.wall_deadline]:
                fail(jobs.pop(mid), "timeouts", f"no reply within {opts.round_timeout:g} s")
            if jobs:
                time.sleep(opts.poll_interval)
        self.comm_seconds += time.perf_counter() - t0
        self.node_seconds += self._round_node_seconds
        done = [t for t in finish if not math.isnan(t)]
        latency = float(allocation.latency) if not faults else (max(done) if done else deadline)
        return RoundWork(updates, latency)

    # -- helpers ----------------------------------------------------------------------
    def _train_message(self, n: int, depth_index: int, k: int, weights: Any) -> Any:
        from flwr.app import ConfigRecord, Message, RecordDict

        deft = ConfigRecord(
            {
                "round": n,
                "depth": depth_index + 1,
                "config": self.config_json,
                "stream-position": self.streams[k].consumed,
            }
        )
        content = RecordDict({**weights, protocol.DEFT: deft})
        return Message(
            content,
            dst_node_id=self.nodes[k],
            message_type=protocol.TRAIN,
            ttl=self.options.round_timeout + 60,
            group_id=str(n),
        )

    def _check_reply(self, reply: Any, n: int, job: _Job) -> DeviceUpdate:
        """The reply as an update, or :class:`~loladeft.exceptions.InvalidReply`: any failure
        while reading or checking one reply is that node's failure."""
        try:
            return self._read_update(reply, n, job)
        except InvalidReply:
            raise
        except Exception as exc:  # RecursionError, OverflowError, MemoryError... from a reply
            raise InvalidReply(f"malformed reply ({type(exc).__name__}: {exc})") from None

    def _read_update(self, reply: Any, n: int, job: _Job) -> DeviceUpdate:
        import torch

        if reply.has_error():
            raise InvalidReply(f"node error: {reply.error.reason}")
        if reply.metadata.src_node_id != self.nodes.get(job.device):
            raise InvalidReply(f"reply from node {reply.metadata.src_node_id}")
        got, loss, seconds = protocol.read_result(reply.content)
        want = (n, job.depth_index + 1, job.device)
        if got != want:
            raise InvalidReply(f"(round, depth, device) = {got}, expected {want}")
        expected = self.expected[job.depth_index]
        arrays = protocol.get(reply.content, protocol.GRADIENT, expected)
        protocol.check_gradient(arrays, expected, self.options.max_grad_norm)
        tensors = [torch.from_numpy(arrays[name]) for name in expected]
        self.streams[job.device].consumed += self.cfg.scenario.local_iterations  # its M batches
        nb = len(self.blocks[job.depth_index])
        self._round_node_seconds = max(self._round_node_seconds, seconds)
        return DeviceUpdate(tensors[:nb], tensors[nb:], loss)

    def _replacement(
        self, instance: Any, depth_index: int, share: float, excluded: set[int]
    ) -> int | None:
        """The unused device that holds block ``depth_index`` and finishes it soonest."""
        K = instance.num_devices
        ok = np.array([k not in excluded and k in self.nodes for k in range(K)])
        ok &= instance.device_memory >= instance.block_memory[depth_index]
        if not ok.any():
            return None
        t = instance.J[:, depth_index] + instance.block_bits / (
            share * instance.spectral_efficiency
        )
        return int(np.flatnonzero(ok)[np.argmin(t[ok])])

    def _stragglers(self, n: int) -> np.ndarray:
        p = self.options.straggler_prob
        K = self.cfg.scenario.num_devices
        if p <= 0:
            return np.zeros(K, dtype=bool)
        return np.random.default_rng([self.cfg.train.seed, _STRAGGLE, n]).random(K) < p


def run_server(
    grid: Any,
    cfg: Any,
    out: Any,
    *,
    runtime: str,
    resume: bool = False,
    on_round: Callable[[Any, Any], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> FlowerTrainer:
    """Run DEFT over ``grid`` writing ``loladeft train``'s files into ``out``."""
    from loladeft.training.run import train

    def make(cfg: Any, log: Callable[[str], None] | None) -> FlowerTrainer:
        return FlowerTrainer(cfg, grid, log)

    def manifest(trainer: Any) -> dict[str, Any]:
        return {
            "command": f"loladeft flower {runtime}",
            "runtime": {
                "engine": f"flower-{runtime}",
                "options": cfg.runtime.model_dump(mode="json"),
                "faults": dict(trainer.faults),
                "messages": trainer.transport.messages,
                "largest_weights_message_bytes": trainer.max_message_bytes,
                "exchange_seconds": round(trainer.comm_seconds, 3),
                "slowest_node_compute_seconds": round(trainer.node_seconds, 3),
            },
        }

    return train(
        cfg, out, resume=resume, on_round=on_round, log=log, make_trainer=make, manifest=manifest
    )
