"""Assignment primitives shared by the schedulers (blocks are rows, devices columns).

The minimum-cost assignment uses SciPy's sparse LAPJVsp solver
(:func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching`), exact like
``scipy.optimize.linear_sum_assignment`` but importable without the whole of
``scipy.optimize``, which keeps ``loladeft solve`` fast to start.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

FloatArray = NDArray[np.float64]


def min_cost_assignment(cost: FloatArray) -> NDArray[np.intp]:
    """Column of each row in a minimum-cost assignment of all rows to distinct columns.

    Parameters
    ----------
    cost
        ``(L, C)`` costs with ``L <= C``; ``inf`` marks a forbidden pair. At least one
        assignment avoiding forbidden pairs must exist.
    """
    finite = np.isfinite(cost)
    # Every row is matched exactly once, so a per-row shift leaves the optimum unchanged;
    # shift to >= 1 because the sparse solver cannot store zero weights.
    shifted = cost - np.min(cost, axis=1, keepdims=True) + 1.0
    rows, cols = np.nonzero(finite)  # row-major order: already CSR order
    indptr = np.zeros(cost.shape[0] + 1, dtype=np.int32)
    np.cumsum(finite.sum(axis=1), out=indptr[1:])
    graph = csr_array((shifted[rows, cols], cols.astype(np.int32), indptr), shape=cost.shape)
    r, c = min_weight_full_bipartite_matching(graph)
    out = np.empty(cost.shape[0], dtype=np.intp)
    out[r] = c
    return out


def candidate_devices(cost: FloatArray) -> NDArray[np.intp]:
    """Devices (rows of a ``(K, L)`` cost) that can appear in an optimal assignment.

    A block whose device is not among its ``L`` cheapest can swap to one of them that no
    other block uses, at no higher cost; so min-sum and bottleneck assignments only ever need
    each block's ``L`` cheapest devices.
    """
    K, L = cost.shape
    if K <= 2 * L:
        return np.arange(K)
    return np.unique(np.argpartition(cost, L - 1, axis=0)[:L])
