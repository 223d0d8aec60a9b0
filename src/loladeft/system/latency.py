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


def multiblock_device_latency(
    J: ArrayLike,
    r: ArrayLike,
    block_bits: float,
    assignment: ArrayLike,
    bandwidth: ArrayLike,
) -> FloatArray:
    """Per-device latency of an allocation with multi-block devices (issue 13, not in the
    paper).

    One backward pass truncated at depth ``l`` yields the gradient of every block at depth
    ``<= l`` on its way, so device ``k`` carrying the non-empty set ``A_k`` of blocks
    computes once, down to its deepest block, and uploads ``|A_k|`` gradients of ``S`` bits:

    .. math::

       T_k &= J[k, \\max A_k] + \\frac{|A_k| \\, S}{r_k B_k}          && (7') \\\\
       T &= \\max_{k : A_k \\ne \\emptyset} T_k                         && (8') \\\\
       b(\\max A_k) + (|A_k| - 1) \\, e &\\le \\hat b_k                  && (C3') \\\\
       |A_k| &\\le m, \\quad \\textstyle\\sum_k B_k \\le B              && (C2')

    with ``e = extra_block_memory`` (the LoRA state of each extra carried block) and ``m =
    max_blocks_per_device``; every block has exactly one device (C1). With ``|A_k| <= 1``
    this is eq. (7) exactly. Devices carrying nothing have ``T_k = 0``.

    Parameters are those of :func:`device_latency`; several blocks may share a device.
    """
    J = np.asarray(J, dtype=float)
    r = np.asarray(r, dtype=float)
    assignment = np.asarray(assignment, dtype=np.intp)
    bandwidth = np.asarray(bandwidth, dtype=float)
    K = J.shape[0]
    count = np.bincount(assignment, minlength=K)
    deepest = np.full(K, -1, dtype=np.intp)
    np.maximum.at(deepest, assignment, np.arange(assignment.size))
    used = np.flatnonzero(count)
    T = np.zeros(K)
    T[used] = J[used, deepest[used]] + count[used] * block_bits / (bandwidth[used] * r[used])
    return T
