"""Shaping a device's uplink with ``tc``: the emulated OFDMA share of the paper's cell.

The paper's device ``k`` uploads at :math:`R_k = B_k r_k` bit/s (eq. 4), so one block's
gradient of :math:`S` bits takes :math:`S / (B_k r_k)` seconds (eq. 5). The testbed emulates
this rate with a token-bucket filter (``tbf``) on the egress of the veth end inside the
device's namespace (device -> server direction only; the downlink stays unshaped as in the
paper). Three conversions lead from the model's rate to the rate ``tc`` is given:

1. **Payload scale.** The bytes a device really sends per block (its serialised LoRA gradient
   plus framing), ``P``, differ from the model's ``S``. With ``scale = 8 P / S``
   (:func:`payload_scale`), the application rate ``scale * B_k * r_k`` (:func:`shaped_rate`)
   makes the emulated upload last exactly the model's ``S / (B_k r_k)``. Any other ``scale``
   stretches or shrinks every upload by the same factor, e.g. to give uploads a chosen share of
   the round.
2. **Header overhead.** ``tbf`` meters Ethernet frames; a TCP stream's payload rate (goodput)
   is ``(MTU - 52) / (MTU + 14)`` of the frame rate (IPv4 and TCP headers with timestamps,
   Ethernet header): 0.956 at MTU 1500. :func:`wire_rate` and :func:`goodput` convert.
3. **Quantisation.** The kernel keeps rates in whole bytes per second, so a rate in force is a
   multiple of 8 bit/s (:func:`set_uplink_rate` rounds, :func:`uplink_rate` reads it back).

Changing a rate between rounds is one ``tc qdisc replace`` per device (a few milliseconds);
the queue and its counters are kept.
"""

from __future__ import annotations

import json
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loladeft.testbed._command import run
from loladeft.testbed.defaults import (
    MAX_RATE_BPS,
    MIN_RATE_BPS,
    MTU,
    TBF_BURST_S,
    TBF_LIMIT_S,
    TBF_MIN_BURST_BYTES,
    TBF_MIN_LIMIT_BYTES,
)

#: Header bytes a TCP/IPv4 segment (with timestamps) carries inside the MTU, and the
#: Ethernet header outside it.
_TCP_IP_HEADERS = 52
_ETHERNET_HEADER = 14


def shaped_rate(
    bandwidth: ArrayLike, spectral_efficiency: ArrayLike, scale: float = 1.0
) -> NDArray[np.float64]:
    """Application rate ``scale * B_k * r_k`` (bit/s) that emulates eq. (4).

    Parameters
    ----------
    bandwidth
        ``B_k``, each device's bandwidth share in Hz.
    spectral_efficiency
        ``r_k`` in bit/s/Hz.
    scale
        Payload scale (:func:`payload_scale`), 1 when the real payload is ``S`` bits.

    Returns
    -------
    ndarray
        Goodput to shape each device's uplink to, bit/s.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: must be a positive number, got {scale!r}")
    return scale * np.asarray(bandwidth, dtype=float) * np.asarray(spectral_efficiency, dtype=float)


def payload_scale(block_bits: float, payload_bytes: float) -> float:
    """``8 P / S``: the scale under which an emulated upload of ``P`` bytes lasts eq. (5)'s
    ``S / (B_k r_k)``.

    Parameters
    ----------
    block_bits
        ``S``, bits per block in the model.
    payload_bytes
        ``P``, bytes a device really sends per block.
    """
    for name, v in (("block_bits", block_bits), ("payload_bytes", payload_bytes)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: must be a positive number, got {v!r}")
    return 8.0 * payload_bytes / block_bits


def _efficiency(mtu: int) -> float:
    """TCP goodput per wire bit at a given MTU."""
    if not 576 <= mtu <= 65535:
        raise ValueError(f"mtu: must be in [576, 65535], got {mtu!r}")
    return (mtu - _TCP_IP_HEADERS) / (mtu + _ETHERNET_HEADER)


def wire_rate(goodput_bps: float, mtu: int = MTU) -> float:
    """Frame rate (what ``tbf`` meters) that carries ``goodput_bps`` of TCP payload."""
    return goodput_bps / _efficiency(mtu)


def goodput(wire_bps: float, mtu: int = MTU) -> float:
    """TCP payload rate carried by a shaped frame rate of ``wire_bps``."""
    return wire_bps * _efficiency(mtu)


def tbf_parameters(rate_bps: float) -> tuple[int, int, int]:
    """``(rate_bytes_per_s, burst_bytes, limit_bytes)`` of the tbf for a rate in bit/s.

    The bucket holds a few milliseconds at the rate (at least a few frames), and the queue a
    tenth of a second (at least 256 KiB), so a local TCP sender is throttled by the queue
    rather than losing segments.
    """
    if not (isinstance(rate_bps, (int, float)) and math.isfinite(rate_bps)):
        raise ValueError(f"rate_bps: must be a number, got {rate_bps!r}")
    if not MIN_RATE_BPS <= rate_bps <= MAX_RATE_BPS:
        raise ValueError(
            f"rate_bps: must be in [{MIN_RATE_BPS:g}, {MAX_RATE_BPS:g}] bit/s, got {rate_bps:g}"
        )
    rate = round(rate_bps / 8)
    burst = max(TBF_MIN_BURST_BYTES, math.ceil(rate * TBF_BURST_S))
    limit = max(TBF_MIN_LIMIT_BYTES, math.ceil(rate * TBF_LIMIT_S))
    return rate, burst, limit


def set_uplink_rate(namespace: str, device_if: str, rate_bps: float) -> float:
    """Shape the egress of ``device_if`` (inside ``namespace``) to ``rate_bps`` frame bits/s.

    Creates the tbf the first time and changes it in place afterwards.

    Returns
    -------
    float
        The rate in force, bit/s (``rate_bps`` rounded to whole bytes per second).
    """
    rate, burst, limit = tbf_parameters(rate_bps)
    tbf = ["tbf", "rate", f"{8 * rate}bit", "burst", str(burst), "limit", str(limit)]
    run(["tc", "-n", namespace, "qdisc", "replace", "dev", device_if, "root", *tbf])
    return 8.0 * rate


def uplink_rate(namespace: str, device_if: str) -> float | None:
    """The tbf rate in force on ``device_if``'s egress, bit/s; ``None`` if it is unshaped."""
    out = run(["tc", "-n", namespace, "-j", "qdisc", "show", "dev", device_if, "root"])
    for qdisc in json.loads(out or "[]"):
        if qdisc.get("kind") == "tbf" and qdisc.get("root"):
            return 8.0 * qdisc["options"]["rate"]
    return None


def remove_shaping(namespace: str, device_if: str) -> None:
    """Remove the tbf from ``device_if``'s egress (the kernel default qdisc returns)."""
    if uplink_rate(namespace, device_if) is not None:
        run(["tc", "-n", namespace, "qdisc", "del", "dev", device_if, "root"])
