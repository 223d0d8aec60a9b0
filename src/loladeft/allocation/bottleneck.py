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
the device with the largest count. Only devices whose *cheapest* pair beats an upper bound
(the ``L``-th best cost of the deepest block) can matter, so after one pass over two columns
the work is on a small candidate set: ``O(K + C L log L)`` for ``C`` candidates, against the
paper's ``O(K^2 L)`` for CRUNCH (Alg. 2) and ``O(K L max(K, L)^3)`` for the linear search
with Hungarian checks (Sec. IV-A).

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
    """Depth-count solution of P1 on a monotone instance (module docstring)."""
    J, b, mem = instance.J, instance.block_memory, instance.device_memory
    L = J.shape[1]
    comm = upload_latency(
        instance.block_bits, instance.equal_bandwidth(), instance.spectral_efficiency
    )
    able = mem >= b[0]
    holds_all = mem >= b[-1]
    if np.count_nonzero(holds_all) >= L:
        # Any L devices able to hold the deepest block give an allocation no worse than the
        # L-th smallest T[k, L] among them (rows are non-decreasing): an upper bound.
        bound = np.partition(J[holds_all, -1] + comm[holds_all], L - 1)[L - 1]
        # A device whose cheapest pair exceeds the bound is in no optimal allocation.
        candidates = np.flatnonzero(able & (J[:, 0] + comm <= bound))
    else:
        candidates = np.flatnonzero(able)
    if candidates.size < L:
        return None
    cost = np.where(mem[candidates, None] >= b, J[candidates] + comm[candidates, None], np.inf)
    value = monotone_bottleneck_value(cost)
    if not np.isfinite(value):
        return None
    return candidates[prefix_assignment(cost <= value)]


def monotone_bottleneck_value(cost: FloatArray) -> float:
    """Optimal bottleneck value of a ``(K, L)`` cost matrix with non-decreasing rows.

    ``inf`` marks forbidden pairs (a forbidden pair is followed only by forbidden pairs in its
    row). Returns ``max_l`` of the ``(L-l+1)``-th smallest entry of column ``l``: the least
    threshold at which Hall's condition holds for every depth; ``inf`` if none does.
    """
    K, L = cost.shape
    smallest = np.partition(cost, np.arange(L), axis=0) if K > L else np.sort(cost, axis=0)
    depth = np.arange(L)
    return float(smallest[L - 1 - depth, depth].max())


def prefix_assignment(allowed: NDArray[np.bool_]) -> NDArray[np.intp]:
    """Assignment (13) of the paper for nested (prefix) device sets.

    ``allowed[k]`` must be a prefix ``{1, ..., s_k}`` of the blocks that satisfies Hall's
    condition. Devices are sorted by ``s_k`` (ties by index); the ``i``-th largest takes
    block ``L - i``, so the deepest block goes to the device that can take the most.
    """
    L = allowed.shape[1]
    counts = allowed.sum(axis=1)
    order = np.argsort(-counts, kind="stable")[:L]
    return order[::-1].astype(np.intp)


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
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_bipartite_matching

    K, L = cost.shape
    rows = np.unique(np.argpartition(cost, L - 1, axis=0)[:L]) if K > L else np.arange(K)
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
