"""Brute-force reference solvers for problems P1 and P2, independent of loladeft's algorithms.

They take the raw instance-file mapping (plain lists) and use nothing from ``loladeft``,
so a bug in the package's model code cannot hide in the reference as well. They enumerate
every injective block -> device map, so keep instances tiny (``K <= 6``, ``L <= 4``).

P1 (equal bandwidth ``B/L``, paper Sec. IV)::

    min over maps  max_l  J[k_l, l] + S / ((B/L) r_{k_l})

P2 (joint bandwidth, paper Sec. V). For a fixed map the best bandwidth split equalises the
device latencies: device ``k`` finishing block ``l`` by ``T`` needs
``B_k >= S / (r_k (T - J[k, l]))``, so the smallest feasible ``T`` solves
``sum_l S / (r_{k_l} (T - J[k_l, l])) = B`` (the left side is decreasing in ``T > max J``).
We find that root by bisection and minimise over maps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _fields(data: Mapping[str, Any]):
    J = np.array(data["J"], dtype=float)
    b = np.array(data["block_memory"], dtype=float)
    mem = np.array(data["device_memory"], dtype=float)
    r = np.array(data["spectral_efficiency"], dtype=float)
    return J, b, mem, r, float(data["block_bits"]), float(data["bandwidth"])


def feasible_maps(data: Mapping[str, Any]) -> np.ndarray:
    """All memory-feasible injective maps, shape ``(n_maps, L)`` (device index per block).

    Map ``m`` sends block ``l`` to device ``maps[m, l]``; C2 holds by construction
    (permutations), C3 is ``b(l) <= device_memory[k]``.
    """
    J, b, mem, _, _, _ = _fields(data)
    K, L = J.shape
    maps = [
        p
        for p in itertools.permutations(range(K), L)
        if all(b[i] <= mem[k] for i, k in enumerate(p))
    ]
    return np.array(maps, dtype=np.intp).reshape(len(maps), L)


def p1_latency_of(data: Mapping[str, Any], assignment: Sequence[int]) -> float:
    """Round latency of one map under equal bandwidth ``B/L``."""
    J, _, _, r, S, B = _fields(data)
    L = J.shape[1]
    return max(J[k, i] + S / ((B / L) * r[k]) for i, k in enumerate(assignment))


def brute_force_p1(data: Mapping[str, Any]) -> float | None:
    """Optimal P1 latency, or ``None`` if no memory-feasible map exists."""
    maps = feasible_maps(data)
    if len(maps) == 0:
        return None
    J, _, _, r, S, B = _fields(data)
    L = J.shape[1]
    blocks = np.arange(L)
    T = J[maps, blocks] + S / ((B / L) * r[maps])
    return float(T.max(axis=1).min())


def p2_latency_of(data: Mapping[str, Any], assignment: Sequence[int]) -> float:
    """Optimal latency of one fixed map when the bandwidth is split optimally."""
    return float(p2_latencies(data, np.array([assignment], dtype=np.intp))[0])


def p2_bandwidth_of(data: Mapping[str, Any], assignment: Sequence[int]) -> np.ndarray:
    """Optimal bandwidth (length ``K``, 0 for unused devices) of one fixed map."""
    J, _, _, r, S, _ = _fields(data)
    T = p2_latency_of(data, assignment)
    bw = np.zeros(J.shape[0])
    for i, k in enumerate(assignment):
        bw[k] = S / (r[k] * (T - J[k, i]))
    return bw


def p2_latencies(data: Mapping[str, Any], maps: np.ndarray) -> np.ndarray:
    """Vectorised bisection: the root ``T`` of ``sum_l S / (r (T - J)) = B`` for each map."""
    J, _, _, r, S, B = _fields(data)
    L = J.shape[1]
    blocks = np.arange(L)
    Jm = J[maps, blocks]  # (n, L)
    rm = r[maps]
    # Bracket: at T = max J the demand is infinite; the equal split B/L finishes by hi.
    lo = Jm.max(axis=1)
    hi = (Jm + S / ((B / L) * rm)).max(axis=1)

    def demand(T: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            gap = T[:, None] - Jm
            return np.where(gap > 0, S / (rm * np.where(gap > 0, gap, 1.0)), np.inf).sum(axis=1)

    for _ in range(400):
        mid = 0.5 * (lo + hi)
        too_slow = demand(mid) > B  # T = mid needs more bandwidth than B: optimum above mid
        lo = np.where(too_slow, mid, lo)
        hi = np.where(too_slow, hi, mid)
        if np.all(hi - lo <= 1e-13 * np.abs(hi)):
            break
    return hi  # demand(hi) <= B: an achievable latency, within 1e-13 relative of the root


def brute_force_p2(data: Mapping[str, Any]) -> float | None:
    """Optimal P2 latency (joint bandwidth), or ``None`` if no memory-feasible map exists."""
    maps = feasible_maps(data)
    if len(maps) == 0:
        return None
    return float(p2_latencies(data, maps).min())


def recompute_latency(
    data: Mapping[str, Any], assignment: Sequence[int], bandwidth: Sequence[float]
) -> tuple[float, np.ndarray]:
    """Round latency (eq. 8) and per-device latency (eq. 7) of an allocation, from scratch."""
    J, _, _, r, S, _ = _fields(data)
    per_device = np.zeros(J.shape[0])
    for i, k in enumerate(assignment):
        per_device[k] = J[k, i] + S / (bandwidth[k] * r[k])
    latency = max(per_device[k] for k in assignment)
    return float(latency), per_device


def is_close(a: float, b: float, rtol: float) -> bool:
    """``|a - b| <= rtol * max(|a|, |b|)`` (plus a tiny absolute floor for zeros)."""
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-300)
