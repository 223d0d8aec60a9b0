"""Link estimation: a node's uplink rate term from the transfers the server observes.

The scheduler's instance describes device ``k``'s uplink by its spectral efficiency ``r_k``
(bit/s/Hz) and the cell's bandwidth ``B`` (Hz): with a share ``B_k`` the device uploads at
``B_k r_k`` bit/s (eq. 4). A measured link gives bytes and seconds instead. The estimator turns
each observed transfer of ``n`` bytes in ``t`` seconds, made while the device held the share
``B_k``, into one reading of the rate term

.. math:: \\hat r_k = \\frac{8 n}{t \\, \\sigma B_k},

where ``σ`` is the payload scale of :func:`~loladeft.testbed.shaping.payload_scale` (1 when
the bytes sent are the model's ``S`` bits), and smooths the readings over rounds with an
exponentially weighted mean. The instance then predicts the next upload as ``S / (B_k \\hat
r_k)`` (eq. 5).

* **On the testbed**, the shaper sets goodput ``σ B_k r_k`` (:func:`~loladeft.testbed.shaping.
  shaped_rate`), so each reading recovers that round's ``r_k`` (its fading draw).
* **On a real link**, which a bandwidth split does not divide, a transfer made with the whole
  band (``B_k = B``, e.g. the probe at join) gives ``\\hat r_k = R̂_k / B`` with ``R̂_k`` the
  measured throughput: the model then reads a share ``B_k`` as the fraction ``B_k / B`` of the
  device's measured uplink (time sharing of the medium).

The probe (:func:`send_probe` / :func:`receive_probe`) is a plain TCP exchange: an 8-byte
magic, the payload length (8 bytes, big endian), then that many zero bytes. The receiver times
the payload from its first chunk to its last and leaves out the first chunk, so the sender's
initial burst (socket buffers, the shaper's bucket) does not inflate the estimate.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from dataclasses import dataclass

from loladeft.exceptions import LoladeftError
from loladeft.testbed.defaults import (
    EWMA_ALPHA,
    MAX_PROBE_BYTES,
    PROBE_BYTES,
    PROBE_TIMEOUT_S,
)

_MAGIC = b"LOLAPRB1"
_HEADER = struct.Struct("!8sQ")
_CHUNK = 65536


class ProbeError(LoladeftError, ConnectionError):
    """A link probe broke off or did not follow the probe format."""


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a positive finite number, got {value!r}")
    return float(value)


def spectral_efficiency(
    nbytes: float, seconds: float, bandwidth: float, scale: float = 1.0
) -> float:
    """One reading of the rate term, ``8 n / (t σ B_k)`` bit/s/Hz (see the module notes).

    Parameters
    ----------
    nbytes
        Bytes transferred.
    seconds
        Transfer time.
    bandwidth
        ``B_k``, the share (Hz) the device held during the transfer; ``B`` for a probe.
    scale
        Payload scale ``σ``.
    """
    bits = 8.0 * _positive("nbytes", nbytes)
    hz = _positive("bandwidth", bandwidth) * _positive("scale", scale)
    return bits / (_positive("seconds", seconds) * hz)


class LinkEstimator:
    """Smoothed uplink rate term of one node (exponentially weighted mean over transfers).

    Parameters
    ----------
    alpha
        Weight of the newest reading, in (0, 1]; 1 keeps only the newest.
    scale
        Payload scale ``σ`` of every transfer this node makes.

    Examples
    --------
    >>> est = LinkEstimator(alpha=0.5)
    >>> est.observe(1_000_000, 1.0, bandwidth=1e6)   # probe at join: 8 Mbit/s over 1 MHz
    8.0
    >>> est.observe(500_000, 1.0, bandwidth=1e6)     # next round: 4 Mbit/s
    6.0
    """

    def __init__(self, alpha: float = EWMA_ALPHA, scale: float = 1.0) -> None:
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            raise ValueError(f"alpha: must be in (0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.scale = _positive("scale", scale)
        self.readings = 0
        self._r: float | None = None

    def observe(self, nbytes: float, seconds: float, bandwidth: float) -> float:
        """Fold in one transfer of ``nbytes`` in ``seconds`` made with share ``bandwidth``;
        returns the updated rate term (bit/s/Hz). The first reading is taken as it is."""
        r = spectral_efficiency(nbytes, seconds, bandwidth, self.scale)
        self._r = r if self._r is None else self.alpha * r + (1 - self.alpha) * self._r
        self.readings += 1
        return self._r

    @property
    def spectral_efficiency(self) -> float:
        """The current rate term ``r̂_k``, bit/s/Hz."""
        if self._r is None:
            raise ValueError("spectral_efficiency: no transfer observed yet (probe the link)")
        return self._r

    def throughput(self, bandwidth: float) -> float:
        """Predicted goodput with share ``bandwidth``: ``σ B_k r̂_k`` bit/s."""
        return self.scale * _positive("bandwidth", bandwidth) * self.spectral_efficiency


@dataclass(frozen=True)
class ProbeResult:
    """A timed transfer: ``nbytes`` in ``seconds``."""

    nbytes: int
    seconds: float

    @property
    def throughput_bps(self) -> float:
        """Goodput of the transfer, bit/s."""
        return 8.0 * self.nbytes / self.seconds


def send_probe(sock: socket.socket, nbytes: int = PROBE_BYTES) -> None:
    """Send a link probe of ``nbytes`` payload bytes over a connected TCP socket."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 < nbytes <= MAX_PROBE_BYTES:
        raise ValueError(f"nbytes: must be an integer in (0, {MAX_PROBE_BYTES}], got {nbytes!r}")
    sock.sendall(_HEADER.pack(_MAGIC, nbytes))
    chunk = bytes(min(_CHUNK, nbytes))
    left = nbytes
    while left > 0:
        n = min(left, len(chunk))
        sock.sendall(chunk[:n] if n < len(chunk) else chunk)
        left -= n


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ProbeError("probe: connection closed inside the header")
        buf += part
    return bytes(buf)


def receive_probe(
    sock: socket.socket,
    *,
    max_bytes: int = MAX_PROBE_BYTES,
    timeout: float = PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Receive a link probe and time it.

    Parameters
    ----------
    sock
        Connected TCP socket.
    max_bytes
        Largest payload accepted; a sender announcing more is refused.
    timeout
        Seconds to wait for the next bytes.

    Returns
    -------
    ProbeResult
        Payload bytes after the first chunk, and the time from the first chunk's arrival to
        the last's.

    Raises
    ------
    ProbeError
        Wrong magic, payload too large, connection closed early, or a timeout.
    """
    sock.settimeout(timeout)
    try:
        magic, total = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
        if magic != _MAGIC:
            raise ProbeError("probe: not a loladeft link probe (wrong magic)")
        if not 0 < total <= max_bytes:
            raise ProbeError(f"probe: announced {total} bytes, accepted up to {max_bytes}")
        buf = bytearray(_CHUNK)
        got = 0
        first = 0
        t0 = t1 = 0.0
        while got < total:
            n = sock.recv_into(buf, min(_CHUNK, total - got))
            if n == 0:
                raise ProbeError(f"probe: connection closed after {got} of {total} bytes")
            t1 = time.perf_counter()
            if got == 0:
                first, t0 = n, t1
            got += n
    except TimeoutError:
        raise ProbeError(f"probe: no data for {timeout:g} s") from None
    if got == first or t1 <= t0:
        raise ProbeError(f"probe: {total} bytes arrived in one piece; send a larger probe")
    return ProbeResult(got - first, t1 - t0)
