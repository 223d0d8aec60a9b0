"""Latency model of one DEFT round (paper Sec. II-B, II-C and III, eqs. (3)–(8)).

Blocks are indexed by depth: block ``l = 1`` (column 0) is nearest the output, so its
gradient needs the shortest back-propagation; block ``l = L`` (last column) is nearest the
input. Arrays follow that order everywhere in loladeft.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def compute_latency(d: ArrayLike, f: ArrayLike, local_iterations: int = 1) -> FloatArray:
    """On-device computation latency ``J[k, l] = M d(l) / f_k`` (eq. 3).

    Parameters
    ----------
    d
        Length-``L`` run time (s) of one gradient step that back-propagates down to block
        ``l`` on the reference device (``f = 1``), in depth order.
    f
        Length-``K`` relative computation factors of the devices.
    local_iterations
        ``M``, the number of local iterations per round.

    Returns
    -------
    ndarray, shape (K, L)
    """
    d = np.asarray(d, dtype=float)
    f = np.asarray(f, dtype=float)
    return local_iterations * d[None, :] / f[:, None]


def spectral_efficiency(snr: ArrayLike) -> FloatArray:
    """Uplink spectral efficiency ``r_k = log2(1 + p_k H_k / N0)`` in bit/s/Hz (eq. 4).

    ``snr`` is the received signal-to-noise ratio ``p_k H_k / N0`` (linear, not dB).
    """
    return np.log2(1.0 + np.asarray(snr, dtype=float))


def upload_latency(block_bits: float, bandwidth: ArrayLike, r: ArrayLike) -> FloatArray:
    """Upload latency ``S / (B_k r_k)`` of one block's gradient (eq. 5).

    ``inf`` where the upload cannot finish in a representable time (``B_k r_k`` so small
    that the quotient overflows a double, or ``B_k = 0``): a device in that state can never
    be scheduled, which the schedulers and :func:`loladeft.solve` handle and explain.
    """
    with np.errstate(over="ignore", divide="ignore"):
        return block_bits / (np.asarray(bandwidth, dtype=float) * np.asarray(r, dtype=float))


def device_latency(
    J: ArrayLike,
    r: ArrayLike,
    block_bits: float,
    assignment: ArrayLike,
    bandwidth: ArrayLike,
) -> FloatArray:
    """Per-device latency ``T_k`` of eq. (7) for an allocation.

    ``T_k = J[k, l] + S / (B_k r_k)`` for the device ``k`` that computes block ``l``, and 0
    for devices that compute nothing (C2: a device computes at most one block).

    Parameters
    ----------
    J
        ``(K, L)`` computation latencies (eq. 3).
    r
        Length-``K`` spectral efficiencies (eq. 4).
    block_bits
        ``S``, bits uploaded per block.
    assignment
        Length-``L`` device index of each block (depth order).
    bandwidth
        Length-``K`` bandwidth ``B_k`` in Hz (only entries of used devices are read).
    """
    J = np.asarray(J, dtype=float)
    r = np.asarray(r, dtype=float)
    assignment = np.asarray(assignment, dtype=np.intp)
    bandwidth = np.asarray(bandwidth, dtype=float)
    T = np.zeros(J.shape[0])
    blocks = np.arange(assignment.size)
    upload = upload_latency(block_bits, bandwidth[assignment], r[assignment])
    with np.errstate(over="ignore"):  # J + upload beyond the largest double: inf, as above
        T[assignment] = J[assignment, blocks] + upload
    return T


def round_latency(
    J: ArrayLike,
    r: ArrayLike,
    block_bits: float,
    assignment: ArrayLike,
    bandwidth: ArrayLike,
) -> float:
    """Round latency ``T = max_k T_k`` (eq. 8): the slowest scheduled device."""
    return float(device_latency(J, r, block_bits, assignment, bandwidth).max())
