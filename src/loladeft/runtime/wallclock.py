"""The wall clock of a Flower run: measured devices, measured links, measured rounds.

Three things the server learns from what it observes, next to what the scheduler predicts:

**Messaging latency** ``l0_k`` of node ``k``: for every ``query`` exchange, the time from
pushing the message to pulling the reply, minus the time the node says it spent handling it
(``handle-seconds``): what the runtime itself costs per message (Flower's hops, polling,
serialisation). The median of the node's last :data:`LATENCY_WINDOW` exchanges. A measured
instance adds it to the node's row of ``J``: a round costs the device that much besides
computing and uploading.

**Link estimate** of node ``k`` (:class:`LinkBook`): every accepted gradient reply of ``n``
bytes gives a transfer time ``t = elapsed - handle-seconds - l0_k`` (the part of the
exchange that grows with the bytes), and with it one reading of the rate term (see
:mod:`loladeft.testbed.link`, whose :class:`~loladeft.testbed.link.LinkEstimator` does the
smoothing). A probe at join (the node sends ``runtime.probe_bytes`` bytes with the whole
band) gives the first reading. How a reading maps onto the instance's spectral efficiency
``r_k`` and bandwidth share ``B_k`` (eq. 4, ``R_k = B_k r_k``):

* *a real (unshaped) link* is not divided by the scheduler's split, so each transfer is taken
  as made with the whole band ``B``: ``r̂_k = 8 n / (t B)``, i.e. ``B r̂_k`` is the measured
  throughput, and a share ``B_k`` is read as the fraction ``B_k / B`` of it (time sharing);
* *the testbed*, whose shaper sets each device's goodput to ``B_k r_k`` from the cell's
  fading draw ``r_k`` every round, knows ``r_k`` (the emulated cell's channel state) but not
  what the real transport achieves over the shaped link. Each reading is taken relative to
  the shaped rate, ``rho_k = 8 n / (t B_k r_k)`` (the link's efficiency, 1 for a perfect
  transport; capped at 1, a transfer cannot beat the shaper), and the instance uses
  ``rho_k r_k`` with the round's draw.

**Round accounting** (:class:`RoundRecord`): the measured round latency is the wall time from
pushing the first ``train`` message to pulling the last accepted reply; per scheduled device
its compute time (the node's ``seconds``) and transfer time (as above); the runtime's
overhead is ``measured - max_k (compute_k + transfer_k)`` over the devices that delivered.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loladeft.testbed.link import LinkEstimator

#: Shortest transfer time a reading may have (s): a reply that arrives faster than the
#: messaging latency predicts gives no reading.
MIN_TRANSFER_S = 1e-3
#: Messaging latencies kept per node (their median is ``l0_k``).
LATENCY_WINDOW = 7
#: Largest link efficiency a testbed reading may show: a transfer cannot beat the shaper, so
#: a faster one is a messaging latency overestimated that round.
MAX_EFFICIENCY = 1.0

#: Columns of ``wallclock.csv`` (one row per round and scheduled block).
DEVICE_COLUMNS = (
    "round",
    "depth",
    "device",
    "share_hz",
    "predicted_compute_s",
    "predicted_upload_s",
    "compute_s",
    "transfer_s",
    "elapsed_s",
    "reply_bytes",
    "rate_term",
    "shaped_bps",
    "delivered",
)


class LinkBook:
    """Messaging latency and uplink estimate of every node (see the module notes).

    Parameters
    ----------
    num_devices
        ``K``.
    bandwidth
        ``B`` (Hz).
    alpha
        Weight of the newest reading (exponentially weighted means).
    """

    def __init__(self, num_devices: int, bandwidth: float, alpha: float) -> None:
        self.K = int(num_devices)
        self.bandwidth = float(bandwidth)
        self.alpha = float(alpha)
        self.latencies: list[list[float]] = [[] for _ in range(self.K)]
        self.links = [LinkEstimator(alpha) for _ in range(self.K)]

    def observe_message(self, k: int, elapsed: float, handle: float) -> None:
        """Fold in one small exchange (a ``query``): its messaging latency."""
        if not (math.isfinite(elapsed) and math.isfinite(handle)):
            return
        window = self.latencies[k]
        window.append(max(0.0, elapsed - handle))
        del window[:-LATENCY_WINDOW]

    def messaging(self, k: int) -> float:
        """``l0_k``: the median of the node's recent messaging latencies, s (0 before any
        exchange). A median, not a mean: one exchange stalled by a busy machine is not the
        node's latency."""
        window = self.latencies[k]
        return float(np.median(window)) if window else 0.0

    def messaging_all(self) -> np.ndarray:
        """``l0`` of every node (length ``K``)."""
        return np.array([self.messaging(k) for k in range(self.K)])

    def transfer_time(self, k: int, elapsed: float, handle: float) -> float:
        """The part of an exchange spent moving the payload: ``elapsed - handle - l0_k``."""
        return max(0.0, elapsed - handle - self.messaging(k))

    def observe_transfer(
        self, k: int, nbytes: float, seconds: float, reference: float, *, shaped: bool = False
    ) -> None:
        """Fold in a transfer of ``nbytes`` in ``seconds``; ``reference`` is the bandwidth
        (Hz) of a plain link, or (``shaped``) the shaped rate ``B_k r_k`` (bit/s) on the
        testbed, where a reading is capped at :data:`MAX_EFFICIENCY`."""
        if not (nbytes > 0 and reference > 0):
            return
        if shaped:
            seconds = max(seconds, 8.0 * nbytes / (MAX_EFFICIENCY * reference))
        if seconds >= MIN_TRANSFER_S:
            self.links[k].observe(nbytes, seconds, reference)

    def rate_term(self, k: int) -> float | None:
        """The reading's smoothed value (``r̂_k`` or ``rho_k``), ``None`` before any."""
        est = self.links[k]
        return est.spectral_efficiency if est.readings else None

    def spectral_efficiency(self, channel: Sequence[float] | None = None) -> np.ndarray:
        """The instance's ``r`` (length ``K``): ``r̂_k`` for plain links; with the testbed's
        ``channel`` draw ``r_k``, ``rho_k r_k``. Nodes without a reading get the median of
        the others (1 for ``rho``)."""
        terms = np.array([self.rate_term(k) or math.nan for k in range(self.K)])
        known = terms[np.isfinite(terms)]
        if channel is None:
            fill = float(np.median(known)) if known.size else 1.0
            return np.where(np.isfinite(terms), terms, fill)
        rho = np.where(np.isfinite(terms), terms, 1.0)
        return rho * np.asarray(channel, dtype=float)


@dataclass
class RoundRecord:
    """One round as measured (see the module notes)."""

    round: int
    predicted_s: float
    measured_s: float = math.nan
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overhead_s(self) -> float:
        """``measured - max_k (compute_k + transfer_k)`` over the delivering devices."""
        busy = [r["compute_s"] + r["transfer_s"] for r in self.rows if r["delivered"]]
        if not busy or math.isnan(self.measured_s):
            return math.nan
        return self.measured_s - max(busy)

    def columns(self) -> dict[str, float]:
        """The round's ``metrics.csv`` columns."""
        return {
            "predicted_latency_s": self.predicted_s,
            "measured_latency_s": self.measured_s,
            "overhead_s": self.overhead_s,
        }


def write_device_rows(path: Path, records: Sequence[RoundRecord]) -> None:
    """Rewrite ``wallclock.csv`` (one row per round and scheduled block)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=DEVICE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for rec in records:
            for row in rec.rows:
                writer.writerow(
                    {
                        k: (f"{v:.6g}" if isinstance(v, float) else v)
                        for k, v in {"round": rec.round, **row}.items()
                    }
                )
    tmp.replace(path)


def measured_instance(
    profiles: dict[int, Any],
    spectral_efficiency: np.ndarray,
    *,
    num_devices: int,
    num_blocks: int,
    block_bits: float,
    bandwidth: float,
    messaging: np.ndarray | None = None,
) -> Any:
    """The scheduling instance from the devices' self-profiles and the link estimates.

    Parameters
    ----------
    profiles
        ``k -> DeviceProfile`` of the devices that reported one this round; the others get
        no memory (they cannot be scheduled) and the slowest reported row.
    spectral_efficiency
        ``r`` of every device (:meth:`LinkBook.spectral_efficiency`).
    num_devices, num_blocks, block_bits, bandwidth
        ``K``, ``L``, ``S`` and ``B``.
    messaging
        ``l0_k`` of every device (s), added to its row of ``J``: the fixed time a round costs
        a device besides computing and uploading (taking the message off the wire, handing
        the reply back), the part of the intercept ``a`` of the linear depth model
        ``d(l) = a + c l`` that the runtime adds.

    Returns
    -------
    Instance
        ``J[k]`` the device's measured row (made non-decreasing in depth: a dip is noise);
        ``b(l)`` the largest need any device measured at depth ``l`` (the model is the same
        everywhere); ``b̂_k`` its available memory.
    """
    from loladeft.system.instance import Instance

    K, L = num_devices, num_blocks
    if profiles:
        rows = np.array([profiles[k].seconds for k in sorted(profiles)])
        slowest = rows.max(axis=0)
        need = np.array([profiles[k].memory_bytes for k in sorted(profiles)]).max(axis=0)
    else:
        slowest, need = np.ones(L), np.ones(L)
    J = np.tile(slowest, (K, 1))
    memory = np.zeros(K)
    for k, p in profiles.items():
        J[k] = p.seconds
        memory[k] = p.available_bytes
    # a step truncated deeper does all the work of a shallower one: a measured row that dips
    # with depth is noise, and the depth-aware schemes rely on monotone rows (Sec. IV-B)
    J = np.maximum.accumulate(J, axis=1)
    if messaging is not None:
        J = J + np.asarray(messaging, dtype=float)[:, None]
    need = np.maximum.accumulate(need)
    return Instance(
        J=J,
        block_memory=need,
        device_memory=memory,
        spectral_efficiency=np.asarray(spectral_efficiency, dtype=float),
        block_bits=float(block_bits),
        bandwidth=float(bandwidth),
    )
