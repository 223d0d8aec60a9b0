"""Assignment primitives shared by the schedulers.

Minimum-cost assignments use ``scipy.optimize.linear_sum_assignment`` (shortest augmenting
paths) on the pairs that can matter. SciPy's sparse LAPJVsp solver
(``scipy.sparse.csgraph.min_weight_full_bipartite_matching``) would spare the import of
``scipy.optimize``, but it can loop forever on some inputs (scipy issue 17269; a regression
test keeps one such instance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

FloatArray = NDArray[np.float64]
#: A ``(K, L)`` cost matrix given by rows on demand: ``cost_rows(rows) -> cost[rows]``.
RowCost = Callable[[NDArray[np.intp] | slice], FloatArray]


def min_cost_assignment(
    block: NDArray[np.intp], device: NDArray[np.intp], cost: FloatArray, L: int
) -> NDArray[np.intp]:
    """Minimum-cost assignment of ``L`` blocks to distinct devices over a sparse set of
    allowed pairs ``(block[i], device[i])`` costing ``cost[i]``.

    The pairs may be pruned to each block's ``L`` cheapest devices (enough for an optimal
    assignment, see :func:`candidate_devices`). A complete assignment must exist.
    Returns the device of each block.
    """
    columns, index = np.unique(device, return_inverse=True)
    dense = np.full((L, columns.size), np.inf)
    dense[block, index] = cost
    _, chosen = linear_sum_assignment(dense)
    return columns[chosen].astype(np.intp)


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


#: Rows sampled to bound each column's order statistic before the full scan.
SAMPLE_ROWS = 8192
#: Rows per chunk of the full scan (keeps a chunk's costs in cache).
CHUNK_ROWS = 4096


class ColumnMinima(NamedTuple):
    """The cheapest entries of each column of a ``(K, L)`` cost matrix, as flat arrays
    sorted by column, then cost, then row; column ``j``'s run starts at ``start[j]`` and
    holds ``count[j]`` finite entries."""

    row: NDArray[np.intp]
    column: NDArray[np.intp]
    cost: FloatArray
    start: NDArray[np.intp]
    count: NDArray[np.intp]


def cheapest_per_column(
    cost_rows: RowCost,
    K: int,
    L: int,
    keep: NDArray[np.intp],
    allowed: Callable[[NDArray[np.intp], NDArray[np.intp]], NDArray[np.bool_]] | None = None,
) -> ColumnMinima:
    """The ``keep[j]`` cheapest allowed entries of every column ``j`` of a ``(K, L)`` matrix.

    ``cost_rows(rows)`` returns the matrix rows ``rows`` (``inf`` = forbidden), so the
    matrix is never held whole: a sample of rows bounds each column's ``keep[j]``-th
    smallest from above (a subset's order statistic is never below the full set's), one
    chunked pass keeps the entries under the bounds, and an exact selection finishes.
    ``O(K L)`` with a small constant; ties are broken by row index.

    ``allowed(rows, columns)``, if given, marks the permitted pairs elementwise; the pass
    then tests it only on the few entries under the bounds, which spares masking every row.
    """
    depth = np.arange(L)

    def masked(rows: NDArray[np.intp]) -> FloatArray:
        cost = cost_rows(rows)
        return cost if allowed is None else np.where(allowed(rows[:, None], depth), cost, np.inf)

    if K <= 2 * SAMPLE_ROWS:
        bound = order_statistics(masked(np.arange(K)), keep)
    else:
        bound = order_statistics(masked(np.linspace(0, K - 1, SAMPLE_ROWS, dtype=np.intp)), keep)
    # A column short of finite entries keeps all of them: bound it by the largest float,
    # which a forbidden (inf) entry exceeds.
    bound = np.minimum(bound, np.finfo(float).max)
    flat, value = [], []
    for k0 in range(0, K, CHUNK_ROWS):
        block = cost_rows(slice(k0, min(K, k0 + CHUNK_ROWS)))
        hit = np.flatnonzero(block <= bound)
        flat.append(hit + k0 * L)
        value.append(block.ravel()[hit])
    row, column = np.divmod(np.concatenate(flat), L)
    cost = np.concatenate(value)
    if allowed is not None:
        ok = allowed(row, column)
        row, column, cost = row[ok], column[ok], cost[ok]
    order = np.lexsort((row, cost, column))
    row, column, cost = row[order], column[order], cost[order]
    start = np.searchsorted(column, depth)
    count = np.minimum(np.diff(np.r_[start, column.size]), keep)
    kept = np.concatenate([np.arange(s, s + c) for s, c in zip(start, count, strict=True)])
    start = np.r_[0, np.cumsum(count)[:-1]].astype(np.intp)
    return ColumnMinima(row[kept], column[kept], cost[kept], start, count)


def order_statistics(cost: FloatArray, rank: NDArray[np.intp]) -> FloatArray:
    """The ``rank[j]``-th smallest entry of each column ``j`` (``inf`` if there are fewer)."""
    K, L = cost.shape
    top = int(rank.max())
    if K * L <= 4096 and K >= top:  # small: a plain sort is cheapest
        return np.sort(cost, axis=0)[rank - 1, np.arange(L)]
    if K < top:
        cost = np.vstack([cost, np.full((top - K, L), np.inf)])
    columns = np.ascontiguousarray(cost.T)
    if columns.shape[1] > top:
        columns = np.partition(columns, top - 1, axis=1)[:, :top]
    smallest = np.sort(columns, axis=1)
    return smallest[np.arange(L), rank - 1]
