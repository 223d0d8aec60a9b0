"""The server's side of DEFT on Flower: Algorithm 1 over a Flower ``Grid``.

:class:`FlowerTrainer` is the in-process :class:`~loladeft.training.engine.Trainer` with two
steps replaced, so that scheduling, aggregation (eq. 6), the optimizer, evaluation, the
simulated clock and the result files stay the very same code:

``device_states``  query every node for its state (compute factor, available memory); the
                   channel is drawn at the server (``Clock.instance`` with the reports);
``run_devices``    send each scheduled node the latest LoRA weights, its blocks (one, or
                   several with multi-block devices) and the run settings (``M`` among them)
                   in one ``train`` message, and collect the block gradients.

*Faults.* Every field of every reply is validated before use (:mod:`~loladeft.runtime.protocol`:
the state a node reports; for a gradient the expected node, round and block, names, shapes and
dtypes before the array is copied, finite values, a norm bound); whatever goes wrong while
reading one reply is that node's failure, never the run's. A node that replies
with an error or an invalid reply, or misses the round's wall-clock deadline, has failed: its
block is reassigned within the round to the best remaining device, the one not yet used this
round that holds the block in memory and would finish it soonest with the failed device's
bandwidth share. With none left the block is skipped this round (its parameters are not
stepped). Gradients already received are kept. A failed multi-block device's blocks move
together to one spare device that holds them all (memory ``b(max A_k) + (|A_k| - 1)
extra_block_memory``, eq. C3') and would finish them soonest (eq. 7'), or are all skipped.

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
and pulls itself every ``poll_interval`` seconds instead (public ``Grid`` API only), each
``train`` reply by its own puller (:class:`Pullers`), so that one reply still uploading over a
slow link does not hold back the others or their measured arrival.

*Wall clock.* Every round records the scheduler's predicted latency next to the measured one
and the runtime's overhead (:mod:`~loladeft.runtime.wallclock`); with
``scenario.device_model = "measured"`` the instance is built from the nodes' self-profiles and
the link estimates.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loladeft.exceptions import FederationError, InvalidReply
from loladeft.runtime import protocol
from loladeft.training.engine import DeviceUpdate, RoundWork, Trainer, carried_blocks

#: Key mixed into the straggler draws.
_STRAGGLE = 0x57A6


class Transport:
    """Push messages and pull their replies through a Flower ``Grid`` (a fast pull loop)."""

    def __init__(self, grid: Any, poll_interval: float) -> None:
        self.grid = grid
        self.poll_interval = poll_interval
        self.messages = 0
        self.elapsed: list[float] = []  # of the last gather: push to reply, per message

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
        t0 = time.monotonic()
        ids = self.push(messages)
        waiting = {i for i in ids if i}
        replies: dict[str, Any] = {}
        arrived: dict[str, float] = {}
        end = time.monotonic() + timeout
        while waiting and time.monotonic() < end:
            for reply in self.pull(waiting):
                mid = reply.metadata.reply_to_message_id
                replies[mid] = reply
                arrived[mid] = time.monotonic() - t0
                waiting.discard(mid)
            if waiting:
                time.sleep(self.poll_interval)
        self.elapsed = [arrived.get(i, math.nan) for i in ids]
        return [replies.get(i) if i else None for i in ids]


class Pullers:
    """One thread per outstanding ``train`` message, each pulling only its own reply and
    stamping the moment it arrives.

    ``Grid.pull_messages`` fetches the listed replies' arrays one message after another,
    retrying while a reply's arrays are still on their way: one reply still uploading over
    a slow link would hold back every other reply of the same pull, and with them the
    arrival times the wall clock measures. Pulling each reply on its own keeps them apart.
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.arrivals: queue.Queue[tuple[str, Any, float]] = queue.Queue()
        self._stop: dict[str, threading.Event] = {}

    def watch(self, mid: str) -> None:
        """Start pulling the reply to message ``mid``."""
        stop = self._stop[mid] = threading.Event()
        grid, interval = self.transport.grid, self.transport.poll_interval

        def run() -> None:
            while not stop.is_set():
                try:
                    got = list(grid.pull_messages([mid]))
                except Exception:  # a failed pull is retried until the job's deadline
                    got = []
                if got:
                    self.arrivals.put((mid, got[0], time.monotonic()))
                    return
                stop.wait(interval)

        threading.Thread(target=run, name=f"pull-{mid[:8]}", daemon=True).start()

    def drain(self, timeout: float) -> list[tuple[str, Any, float]]:
        """Replies that arrived (waiting up to ``timeout`` s for the first):
        ``(message id, reply, arrival)``."""
        out = []
        try:
            out.append(self.arrivals.get(timeout=timeout))
        except queue.Empty:
            return out
        while True:
            try:
                out.append(self.arrivals.get_nowait())
            except queue.Empty:
                return out

    def cancel(self, mid: str) -> None:
        """Stop pulling ``mid`` (its job has failed)."""
        stop = self._stop.pop(mid, None)
        if stop is not None:
            stop.set()

    def close(self) -> None:
        """Stop every puller."""
        for mid in list(self._stop):
            self.cancel(mid)


@dataclass
class _Job:
    depth_indices: tuple[int, ...]  # the blocks the device carries, ascending
    device: int
    start: float  # virtual start within the round (0, or the deadline after a failure)
    share: float  # bandwidth share B_k of the device
    wall_deadline: float
    sent: float = math.nan  # wall clock (monotonic) of the push

    @property
    def blocks(self) -> str:
        """``block 2`` or ``blocks 1, 2`` (for the log)."""
        depths = [str(i + 1) for i in self.depth_indices]
        return f"block{'s' if len(depths) > 1 else ''} {', '.join(depths)}"


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
    edge
        The emulated edge's control (:class:`~loladeft.runtime.testbed_federation.
        EdgeControl`) when the nodes run on the testbed: the server shapes their uplinks
        every round and sets their memory limits after the warm-up.
    out
        Output folder: the per-device wall-clock rows go to ``out/wallclock.csv``.
    """

    def __init__(
        self,
        cfg: Any,
        grid: Any,
        log: Callable[[str], None] | None = None,
        *,
        edge: Any = None,
        out: Any = None,
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
        # the wall clock (runtime/wallclock.py): measured devices, links and rounds
        from loladeft.runtime.wallclock import LinkBook

        K = cfg.scenario.num_devices
        self.measured = cfg.scenario.device_model == "measured"
        self.links = LinkBook(K, cfg.scenario.bandwidth_hz, cfg.runtime.link_alpha)
        self.profiles: dict[int, Any] = {}
        self.edge = edge
        self.out = None if out is None else Path(out)
        self.records: list[Any] = []
        self._record: Any = None
        self._channel: np.ndarray | None = None

    def setup(self, *, dev: bool = True) -> FlowerTrainer:
        """Set up the engine, then wait for the run's ``K`` nodes to connect."""
        from loladeft.runtime import flower_patches

        flower_patches.apply_server(max_time=self.options.round_timeout, log=self.log)
        super().setup(dev=dev)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.expected_blocks = [
            {names[id(p)]: (tuple(p.shape), "float32") for p in block} for block in self.blocks
        ]
        self.expected_head = {names[id(p)]: (tuple(p.shape), "float32") for p in self.head}
        end = time.monotonic() + self.options.node_wait
        while len(list(self.transport.grid.get_node_ids())) < self.cfg.scenario.num_devices:
            if time.monotonic() > end:
                have = len(list(self.transport.grid.get_node_ids()))
                raise FederationError(
                    f"nodes: {have} of the run's K = {self.cfg.scenario.num_devices} devices "
                    f"connected within {self.options.node_wait:g} s"
                )
            time.sleep(0.1)
        self._warm_up()
        self._join()
        return self

    def _join(self) -> None:
        """Measure every node at join: its messaging latency (a plain query), its
        self-profile (``measured``; on the testbed before the memory limits are set, so
        that profiling the deepest block cannot hit them), its available memory, and a link
        probe of ``runtime.probe_bytes``. Only the nodes that answered the warm-up are asked
        (a node that did not is not waited for again; the rounds' queries ask it anew)."""
        wait, ready = self.options.node_wait, set(self.owners.values())
        self._query(0, self.options.query_timeout, only=ready)  # messaging latency
        if self.measured:
            self._read_states(0, self._query(0, wait, profile=True, only=ready))
        if self.edge is not None:
            for k, limit in enumerate(self.edge.bind_memory()):
                self.log(f"testbed: device {k} memory limit {limit / 2**20:.0f} MiB")
        self._read_states(
            0, self._query(0, self.options.query_timeout, profile=self.measured, only=ready)
        )
        if not self.measured:
            return
        nbytes = self.options.probe_bytes
        replies = self._query(0, wait, probe=nbytes, only=ready)
        for (node_id, reply), elapsed in zip(replies, self.transport.elapsed, strict=True):
            k = next((d for d, i in self.owners.items() if i == node_id), None)
            if reply is None or reply.has_error() or k is None:
                continue
            try:
                got = reply.content[protocol.PROBE].count_bytes()
                handle = protocol.read_handle_seconds(reply.content, protocol.STATE) or 0.0
            except (KeyError, InvalidReply, AttributeError) as exc:
                self.log(f"join: node {node_id}: probe rejected ({exc})")
                continue
            if not nbytes <= got <= nbytes + 65536:
                self.log(f"join: node {node_id}: probe of {got} bytes, asked {nbytes}")
                continue
            seconds = self.links.transfer_time(k, elapsed, handle)
            reference = self._reference(k, self.cfg.scenario.bandwidth_hz)
            self.links.observe_transfer(k, got, seconds, reference, shaped=self.edge is not None)
            self.log(
                f"join: device {k}: messaging {self.links.messaging(k) * 1e3:.0f} ms, "
                f"probe {8 * got / max(seconds, 1e-9) / 1e6:.2f} Mbit/s"
            )

    def _reference(self, k: int, share: float) -> float:
        """What a transfer of device ``k`` is measured against (:mod:`~loladeft.runtime.
        wallclock`): the band ``B`` on a plain link; the shaped rate on the testbed."""
        if self.edge is None:
            return self.cfg.scenario.bandwidth_hz
        return self.edge.goodput(k)

    def _warm_up(self) -> None:
        """Have every node load the model and its data before round 1 (a ``query`` with
        ``warm``), so that no node misses the first round's deadline while starting."""
        for node_id, reply in self._query(0, self.options.node_wait, warm=True):
            if reply is None or reply.has_error():
                why = "no reply" if reply is None else reply.error.reason
                self.log(f"warm-up: node {node_id} is not ready ({why})")
                continue
            try:  # joining: the first node to claim a device keeps it
                self._claim(
                    node_id, protocol.read_state(reply.content, self.cfg.scenario.num_devices)[0]
                )
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

    def _query(
        self,
        n: int,
        timeout: float,
        warm: bool = False,
        *,
        profile: bool = False,
        probe: int = 0,
        only: set[int] | None = None,
    ) -> list[tuple[int, Any]]:
        """Ask every connected node for its state in round ``n``: ``(node id, reply)``
        (with ``profile``: its self-profile too; with ``probe``: that many bytes back). Each
        exchange's messaging latency is folded into the link book. ``only``: just these node
        ids."""
        from flwr.app import ConfigRecord, Message, RecordDict

        deft = ConfigRecord(
            {
                "round": n,
                "config": self.config_json,
                "warm": warm,
                "profile": profile,
                "probe": int(probe),
            }
        )
        node_ids = [i for i in self.transport.grid.get_node_ids() if only is None or i in only]
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
        replies = list(zip(node_ids, self.transport.gather(messages, timeout), strict=True))
        if not probe:
            for (node_id, reply), elapsed in zip(replies, self.transport.elapsed, strict=True):
                k = next((d for d, i in self.owners.items() if i == node_id), None)
                if k is None or reply is None or reply.has_error():
                    continue
                try:
                    handle = protocol.read_handle_seconds(reply.content, protocol.STATE)
                except InvalidReply:
                    continue
                if handle is not None:
                    self.links.observe_message(k, elapsed, handle)
        return replies

    # -- Algorithm 1, the two steps that go over the network ----------------------------
    def device_states(self, n: int) -> Any:
        """Query every node; silent nodes get no memory (they cannot be scheduled).

        With ``scenario.device_model = "measured"`` the instance is built from the nodes'
        self-profiles and the link estimates (:func:`~loladeft.runtime.wallclock.
        measured_instance`); otherwise from the reported (or drawn) compute factors and
        memory, with the channel drawn at the server.
        """
        assert self.clock is not None
        t0 = time.perf_counter()
        replies = self._query(n, self.options.query_timeout, profile=self.measured)
        f, memory = self._read_states(n, replies)
        drawn = self.clock.instance(n, compute_factor=f, device_memory=memory)
        self._channel = np.asarray(drawn.spectral_efficiency, dtype=float)
        self.comm_seconds += time.perf_counter() - t0
        if not self.measured:
            return drawn
        from loladeft.runtime.wallclock import measured_instance

        channel = None if self.edge is None else self._channel
        profiles = {k: p for k, p in self.profiles.items() if k in self.nodes}
        return measured_instance(
            profiles,
            self.links.spectral_efficiency(channel),
            num_devices=self.cfg.scenario.num_devices,
            num_blocks=self.num_blocks,
            block_bits=drawn.block_bits,
            bandwidth=drawn.bandwidth,
            messaging=self.links.messaging_all(),
        )

    def _read_states(self, n: int, replies: list[tuple[int, Any]]) -> tuple[Any, Any]:
        """Validate the state replies: ``(compute factors, memory)``; fills
        :attr:`nodes` and, when measured, :attr:`profiles`."""
        from loladeft.profiling.selfprofile import DeviceProfile

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
                if self.measured and protocol.PROFILE in reply.content:
                    seconds, need, available = protocol.read_profile(reply.content, self.num_blocks)
                    self.profiles[k] = DeviceProfile(tuple(seconds), tuple(need), available, 0)
                    memory_k = available
            except InvalidReply as exc:
                self.log(f"round {n}: node {node_id}: state rejected ({exc})")
                continue
            self.nodes[k] = node_id
            f[k], memory[k] = f_k, memory_k
        missing = sorted(set(range(K)) - set(self.nodes))
        if missing:
            self.log(f"round {n}: devices {missing} unavailable")
        return f, memory

    def run_devices(self, n: int, instance: Any, allocation: Any) -> RoundWork:
        """Send the scheduled blocks, collect and validate the gradients, reassign failures."""
        from flwr.app import RecordDict

        from loladeft.runtime.wallclock import RoundRecord

        t0 = time.perf_counter()
        opts = self.options
        assignment = [int(k) for k in allocation.assignment]
        carried = carried_blocks(assignment)
        bandwidth = np.asarray(allocation.bandwidth, dtype=float)
        deadline = opts.deadline_factor * float(allocation.latency)
        if self.edge is not None:  # the emulated cell: this round's OFDMA split
            self._shape(bandwidth, set(assignment))
        record = self._record = RoundRecord(n, float(allocation.latency))
        pullers = Pullers(self.transport)
        first_sent = math.nan
        last_accepted = math.nan
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

        def dispatch(indices: tuple[int, ...], k: int, start: float, share: float) -> None:
            if k not in self.nodes:
                fail(_Job(indices, k, start, share, 0.0), "timeouts", "unavailable")
                return
            nonlocal first_sent
            msg = self._train_message(n, indices, k, weights)
            sent = time.monotonic()
            (mid,) = self.transport.push([msg])
            if math.isnan(first_sent):
                first_sent = sent
            job = _Job(indices, k, start, share, sent + opts.round_timeout, sent)
            if not mid:
                fail(job, "errors", "message refused by the SuperLink")
                return
            jobs[mid] = job
            pullers.watch(mid)

        def fail(job: _Job, kind: str, why: str) -> None:
            nonlocal faults
            faults = True
            self.faults[kind] += 1
            failed.add(job.device)
            self._account(instance, job, None, math.nan)
            self.log(f"round {n}: device {job.device} failed {job.blocks} ({why})")
            spare = self._replacement(instance, job.depth_indices, job.share, used | failed)
            if spare is None:
                self.faults["skipped_blocks"] += len(job.depth_indices)
                self.log(f"round {n}: no device left for {job.blocks}; skipped this round")
                return
            used.add(spare)
            self.faults["reassigned"] += len(job.depth_indices)
            self.log(f"round {n}: {job.blocks} reassigned to device {spare}")
            dispatch(job.depth_indices, spare, max(job.start, deadline), job.share)

        stragglers = self._stragglers(n)
        for k, blocks in carried.items():
            indices = tuple(blocks)
            if stragglers[k]:
                fail(_Job(indices, k, 0.0, bandwidth[k], 0.0), "stragglers", "straggler")
                continue
            dispatch(indices, k, 0.0, bandwidth[k])
        while jobs:
            for mid, reply, arrived in pullers.drain(opts.poll_interval):
                job = jobs.pop(mid, None)
                if job is None:
                    continue
                try:
                    update = self._check_reply(reply, n, job)
                except InvalidReply as exc:
                    kind = "errors" if reply.has_error() else "invalid"
                    fail(job, kind, str(exc))
                    continue
                last_accepted = arrived
                self._account(instance, job, reply, arrived - job.sent)
                # eq. (7) / (7'): to the deepest carried block, |A_k| gradients uploaded
                done_at = job.start + float(
                    instance.J[job.device, job.depth_indices[-1]]
                    + len(job.depth_indices)
                    * instance.block_bits
                    / (job.share * instance.spectral_efficiency[job.device])
                )
                for i in job.depth_indices:
                    updates[i], finish[i] = update, done_at
            now = time.monotonic()
            for mid in [m for m, j in jobs.items() if now > j.wall_deadline]:
                pullers.cancel(mid)
                fail(jobs.pop(mid), "timeouts", f"no reply within {opts.round_timeout:g} s")
        pullers.close()
        self.comm_seconds += time.perf_counter() - t0
        self.node_seconds += self._round_node_seconds
        record.measured_s = last_accepted - first_sent
        done = [t for t in finish if not math.isnan(t)]
        latency = float(allocation.latency) if not faults else (max(done) if done else deadline)
        return RoundWork(updates, latency)

    # -- the wall clock ---------------------------------------------------------------
    def step(self) -> Any:
        """One round (:meth:`Trainer.step`), with its wall-clock columns: predicted and
        measured round latency and the runtime's overhead (:mod:`~loladeft.runtime.
        wallclock`); the per-device rows go to ``wallclock.csv``."""
        from loladeft.runtime.wallclock import write_device_rows

        self._record = None
        log = super().step()
        if self._record is not None:
            log.wallclock = self._record.columns()
            self.records.append(self._record)
            if self.out is not None and self.out.is_dir():
                write_device_rows(self.out / "wallclock.csv", self.records)
        return log

    def _shape(self, bandwidth: np.ndarray, scheduled: set[int]) -> None:
        """Set every device's uplink to ``B_k r_k`` of this round (the channel drawn for
        the round, the scheme's split); devices without a block get an equal share."""
        assert self._channel is not None
        K = self.cfg.scenario.num_devices
        share = np.where(
            [k in scheduled for k in range(K)], bandwidth, self.cfg.scenario.bandwidth_hz / K
        )
        self.edge.set_rates(share * self._channel)

    def _account(self, instance: Any, job: _Job, reply: Any, elapsed: float) -> None:
        """One scheduled device's row of the round's wall clock (``depth``: its deepest
        block; eq. (7') with several); an accepted reply also gives its node's link a
        reading."""
        k, d = job.device, job.depth_indices[-1]
        row: dict[str, Any] = {
            "depth": d + 1,
            "device": k,
            "share_hz": float(job.share),
            "predicted_compute_s": float(instance.J[k, d]),
            "predicted_upload_s": float(
                len(job.depth_indices)
                * instance.block_bits
                / (job.share * instance.spectral_efficiency[k])
            )
            if job.share > 0
            else math.nan,
            "compute_s": math.nan,
            "transfer_s": math.nan,
            "elapsed_s": elapsed,
            "reply_bytes": 0,
            "rate_term": float(instance.spectral_efficiency[k]),
            "shaped_bps": self.edge.goodput(k) if self.edge is not None else math.nan,
            "delivered": 0,
        }
        if reply is not None:
            _, _, compute = protocol.read_result(reply.content)
            handle = protocol.read_handle_seconds(reply.content, protocol.RESULT)
            nbytes = int(reply.content[protocol.GRADIENT].count_bytes())
            transfer = self.links.transfer_time(k, elapsed, compute if handle is None else handle)
            if self.edge is not None:
                self.links.observe_transfer(k, nbytes, transfer, self.edge.goodput(k), shaped=True)
            else:
                self.links.observe_transfer(k, nbytes, transfer, self.cfg.scenario.bandwidth_hz)
            row.update(compute_s=compute, transfer_s=transfer, reply_bytes=nbytes, delivered=1)
        if self._record is not None:
            self._record.rows.append(row)

    # -- helpers ----------------------------------------------------------------------
    def _train_message(self, n: int, indices: tuple[int, ...], k: int, weights: Any) -> Any:
        from flwr.app import ConfigRecord, Message, RecordDict

        deft = ConfigRecord(
            {
                "round": n,
                "depth": indices[-1] + 1,
                "depths": [i + 1 for i in indices],
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
        want = (n, job.depth_indices[-1] + 1, job.device)
        if got != want:
            raise InvalidReply(f"(round, depth, device) = {got}, expected {want}")
        expected = self._expected(job.depth_indices)
        arrays = protocol.get(reply.content, protocol.GRADIENT, expected)
        protocol.check_gradient(arrays, expected, self.options.max_grad_norm)
        self.streams[job.device].consumed += self.cfg.scenario.local_iterations  # its M batches
        self._round_node_seconds = max(self._round_node_seconds, seconds)
        block_grads = {
            i: [torch.from_numpy(arrays[name]) for name in self.expected_blocks[i]]
            for i in job.depth_indices
        }
        head = [torch.from_numpy(arrays[name]) for name in self.expected_head]
        return DeviceUpdate(block_grads, head, loss)

    def _expected(self, indices: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        """``name -> (shape, dtype)`` of the gradients a device carrying ``indices`` uploads:
        each carried block's LoRA parameters and the head's."""
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        for i in indices:
            out.update(self.expected_blocks[i])
        return out | self.expected_head

    def _replacement(
        self, instance: Any, indices: tuple[int, ...], share: float, excluded: set[int]
    ) -> int | None:
        """The unused device that holds the blocks ``indices`` (ascending) and finishes them
        soonest with bandwidth ``share`` (eqs. 7 and C3; with several blocks 7' and C3')."""
        K = instance.num_devices
        deepest, count = indices[-1], len(indices)
        need = instance.block_memory[deepest] + (count - 1) * instance.extra_block_memory
        ok = np.array([k not in excluded and k in self.nodes for k in range(K)])
        ok &= instance.device_memory >= need
        if not ok.any():
            return None
        t = instance.J[:, deepest] + count * instance.block_bits / (
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
    """Run DEFT over ``grid`` writing ``loladeft train``'s files into ``out``.

    On the testbed (:mod:`loladeft.runtime.testbed_federation`, which names its edge in the
    environment variable :data:`~loladeft.runtime.testbed_federation.EDGE_ENV`), the server
    also controls the emulated edge: uplink shaping every round, memory limits at join.
    """
    from loladeft.runtime.testbed_federation import EdgeControl
    from loladeft.training.run import train

    edge = EdgeControl.from_env()

    def make(cfg: Any, log: Callable[[str], None] | None) -> FlowerTrainer:
        return FlowerTrainer(cfg, grid, log, edge=edge, out=out)

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
            "wallclock": wallclock_summary(trainer),
        }

    return train(
        cfg, out, resume=resume, on_round=on_round, log=log, make_trainer=make, manifest=manifest
    )


def wallclock_summary(trainer: FlowerTrainer) -> dict[str, Any]:
    """The manifest's account of the wall clock: the device model, each node's messaging
    latency and link estimate, the measured rows of ``J``, the edge's limits."""
    K = trainer.cfg.scenario.num_devices
    out: dict[str, Any] = {
        "device_model": trainer.cfg.scenario.device_model,
        "messaging_latency_s": [round(trainer.links.messaging(k), 6) for k in range(K)],
        "link_rate_term": [trainer.links.rate_term(k) for k in range(K)],
        "link_rate_term_meaning": "rho_k = measured / shaped goodput"
        if trainer.edge is not None
        else "r_k = measured goodput / B (bit/s/Hz)",
    }
    if trainer.profiles:
        out["measured_J_s"] = {str(k): list(p.seconds) for k, p in sorted(trainer.profiles.items())}
        out["measured_block_memory_bytes"] = {
            str(k): list(p.memory_bytes) for k, p in sorted(trainer.profiles.items())
        }
        out["available_memory_bytes"] = {
            str(k): p.available_bytes for k, p in sorted(trainer.profiles.items())
        }
    if trainer.edge is not None:
        out["testbed"] = trainer.edge.describe()
    return out
