"""Exact block allocation with equal bandwidth (problems P1/P3): scheme ``ba``.

P1 is a *bottleneck assignment*: give each of the ``L`` blocks a distinct device so that the
largest ``T[k, l] = J[k, l] + S / ((B/L) r_k)`` over the chosen pairs is minimal, subject to
the memory constraint C3.

Depth counts (the paper's setting)
----------------------------------
When every row of ``J`` and ``b(l)`` are non-decreasing in depth (eq. 10), the blocks a device
can take under a threshold ``t`` form a prefix ``{1, ..., s_k(t)}``: the device sets of the
blocks are nested. Hall's condition for a perfect matching then reduces to one count per
depth (this is Proposition 1): blocks ``l, ..., L`` need ``L - l + 1`` devices able to take
block ``l``, i.e. ``#{k : b(l) <= b̂_k, T[k, l] <= t} >= L - l + 1``. Hence the optimum is
closed-form,

.. math:: T^* = \\max_l \\; \\operatorname{kth}_{L-l+1}\\{T[k, l] : b(l) \\le \\hat b_k\\},

the ``(L-l+1)``-th smallest memory-feasible entry of column ``l``, maximised over ``l``,
and assignment (13) realises it: sort devices by ``s_k(T^*)`` and give the deepest block to
the device with the largest count (equivalently: place blocks deepest first, each on any
free device under ``T^*``). Each column's few smallest entries come from one chunked pass over
``J`` (:func:`.matching.cheapest_per_column`), so ``ba`` costs ``O(K L)`` with a small
constant, against the paper's ``O(K^2 L)`` for CRUNCH (Alg. 2) and ``O(K L max(K, L)^3)``
for the linear search with Hungarian checks (Sec. IV-A).

General instances
-----------------
Without monotonicity the device sets are not nested, so :func:`bottleneck_assignment` falls
back to the classic exact method: binary search over the distinct costs with a maximum
bipartite matching (Hopcroft–Karp, ``scipy.sparse.csgraph``) as the feasibility test. Each
block only ever needs its ``L`` cheapest devices (if its device is not among them, one of
them is free and no more expensive), so the search runs on at most ``L^2`` devices.

References
----------
.. [1] H. Wu, X. Chen, K. Huang, "Resource Management for Low-latency Cooperative
   Fine-tuning of Foundation Models at the Network Edge", Secs. III–IV.
.. [2] R. E. Burkard, M. Dell'Amico, S. Martello, *Assignment Problems*, SIAM 2009,
   Sec. 6.2 (linear bottleneck assignment by threshold search).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from loladeft.allocation.matching import (
    CHUNK_ROWS,
    candidate_devices,
    cheapest_per_column,
    order_statistics,
)
from loladeft.allocation.result import Solution, equal_split
from loladeft.system.instance import Instance
from loladeft.system.latency import upload_latency

FloatArray = NDArray[np.float64]


def solve_ba(instance: Instance, **_: Any) -> Solution | None:
    """Scheme ``ba``: optimal block allocation under equal bandwidth ``B/L`` (P1).

    Exact on every instance: closed-form depth counts when the instance is monotone
    (:attr:`Instance.is_monotone`), bottleneck threshold search otherwise. Returns ``None``
    when no memory-feasible allocation exists.
    """
    if instance.is_monotone:
        assignment = _monotone_assignment(instance)
        return None if assignment is None else equal_split(instance, assignment)
    cost = np.where(instance.memory_ok, instance.latency_matrix(), np.inf)
    found = bottleneck_assignment(cost)
    if found is None:
        return None
    _, assignment, searches = found
    return equal_split(instance, assignment, iterations=searches)


def _monotone_assignment(instance: Instance) -> NDArray[np.intp] | None:
    """Depth-count solution of P1 on a monotone instance (module docstring).

    Column ``l`` only matters through its ``L-l+1`` smallest memory-feasible entries,
    found in one chunked pass (:func:`.matching.cheapest_per_column`).
    """
    J, b, mem = instance.J, instance.block_memory, instance.device_memory
    K, L = J.shape
    comm = upload_latency(
        instance.block_bits, instance.equal_bandwidth(), instance.spectral_efficiency
    )
    depth = np.arange(L)
    holds = np.searchsorted(b, mem, side="right")  # device k holds blocks l <= holds[k]

    chunk = np.empty((CHUNK_ROWS, L))  # reused by the scan: no fresh pages per chunk

    def latency_rows(rows: NDArray[np.intp] | slice) -> FloatArray:
        # Rows of instance.latency_matrix(), bit for bit (an overflow is inf there too).
        with np.errstate(over="ignore"):
            if isinstance(rows, slice) and rows.stop - rows.start <= CHUNK_ROWS:
                return np.add(J[rows], comm[rows, None], out=chunk[: rows.stop - rows.start])
            return J[rows] + comm[rows, None]

    def fits(k: NDArray[np.intp], l: NDArray[np.intp]) -> NDArray[np.bool_]:
        return l < holds[k]  # C3

    need = L - depth  # blocks l..L need L-l+1 devices able to take block l
    best = cheapest_per_column(latency_rows, K, L, need, allowed=fits)
    if (best.count < need).any():
        return None
    # The optimum is max_l of column l's (L-l+1)-th smallest entry. Under it the device sets
    # are nested: place blocks deepest first, each on a free device among the L-l+1
    # cheapest for it (all within the optimum; deeper blocks took at most L-l of them).
    assignment = np.empty(L, dtype=np.intp)
    used: set[int] = set()
    for j in depth[::-1]:
        run = best.row[best.start[j] : best.start[j] + need[j]]
        assignment[j] = next(int(k) for k in run if int(k) not in used)
        used.add(int(assignment[j]))
    return assignment


def monotone_bottleneck_value(cost: FloatArray) -> float:
    """Optimal bottleneck value of a ``(K, L)`` cost matrix with non-decreasing rows
    (``inf`` = forbidden, only ever followed by ``inf`` in its row): the least threshold at
    which Hall's condition holds for every depth; ``inf`` if none does."""
    L = cost.shape[1]
    return float(order_statistics(cost, L - np.arange(L)).max())


def bottleneck_assignment(cost: FloatArray) -> tuple[float, NDArray[np.intp], int] | None:
    """Exact linear bottleneck assignment of the ``L`` columns to distinct rows.

    Parameters
    ----------
    cost
        ``(K, L)`` costs with ``K >= L``; ``inf`` marks a forbidden pair.

    Returns
    -------
    (value, assignment, searches) or None
        The optimal bottleneck value, the row of each column, and the number of matching
        tests; ``None`` if no assignment avoids forbidden pairs.
    """
    from scipy.sparse import csr_array  # only this general path needs it
    from scipy.sparse.csgraph import maximum_bipartite_matching

    rows = candidate_devices(cost)
    sub = cost[rows].T  # (L, C): blocks x candidate devices
    values = np.unique(sub[np.isfinite(sub)])
    searches = 0

    def matching(threshold: float) -> NDArray[np.intp] | None:
        nonlocal searches
        searches += 1
        graph = csr_array((sub <= threshold).astype(np.int8))
        match = maximum_bipartite_matching(graph, perm_type="column")
        return None if (match < 0).any() else match

    if values.size == 0 or matching(values[-1]) is None:
        return None
    lo, hi = 0, values.size - 1  # values[hi] is feasible; below lo nothing is
    while lo < hi:
        mid = (lo + hi) // 2
        if matching(values[mid]) is None:
            lo = mid + 1
        else:
            hi = mid
    match = matching(values[hi])
    assert match is not None
    return float(values[hi]), rows[match].astype(np.intp), searches
