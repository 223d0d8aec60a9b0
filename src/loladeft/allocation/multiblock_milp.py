"""Exact multi-block allocation through ``scipy.optimize.milp`` (HiGHS): scheme ``milp`` when
``max_blocks_per_device > 1`` (P1'), and :func:`solve_jbba_milp`, the exact reference of P2'.

Both rest on the *levels and counts* of :mod:`.multiblock`: for every pair ``(k, l)`` with a
slot (``c_k(l) >= 1``) a binary ``x_{k,l}`` (block ``l`` is device ``k``'s deepest) and an
integer ``n_{k,l}`` (how many blocks device ``k`` then carries). By the pool lemma of
:mod:`.multiblock`, the allocations are exactly the solutions of

.. math::

   x_{k,l} \\le n_{k,l} \\le c_k(l)\\, x_{k,l}, \\quad \\sum_l x_{k,l} \\le 1, \\quad
   \\sum_k x_{k,l} \\le 1, \\quad
   \\sum_{k,\\, l \\ge j} n_{k,l} \\ge L - j + 1 \\;\\forall j, \\quad \\sum_{k,l} n_{k,l} = L.

*P1'* adds ``Σ_l T_{k,l} x_{k,l} <= t`` for every ``k`` and minimises ``t`` (``T`` replaced by
its dense ranks, as in :mod:`.milp`).

*P2'* is not linear in the deadline, but for a fixed deadline ``T`` the least total bandwidth
``g(T) = min Σ w_{k,l}(T) n_{k,l}``, ``w_{k,l}(T) = S / (r_k (T - J_{k,l}))`` over pairs with
``J_{k,l} < T``, is a MILP, and ``g`` is strictly decreasing. :func:`solve_jbba_milp` runs the
Newton–Dinkelbach iteration of :mod:`.jbba` with this exact oracle, from the P1' optimum: each
step's cover has a root (:func:`.multiblock.cover_deadline`) below the last until
``g(T) >= B``, which is then ``T*`` (same proof as :mod:`.jbba`). Exact up to HiGHS's
tolerances; exponential in the worst case: a reference for tests and benchmarks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from loladeft.allocation.multiblock import (
    Cover,
    capacities,
    cover_deadline,
    p1_solution,
    p2_solution,
    per_block_bandwidth,
)
from loladeft.allocation.result import Solution
from loladeft.system.instance import Instance


class MilpTimeout(RuntimeError):
    """HiGHS hit its time limit without a proven optimum."""


def solve_milp_multiblock(
    instance: Instance, *, time_limit: float = 60.0, **_: Any
) -> Solution | None:
    """Scheme ``milp`` with multi-block devices: P1' exactly (module docstring)."""
    cap = capacities(instance)
    T = instance.latency_matrix()
    ranks = np.unique(T, return_inverse=True)[1].reshape(T.shape).astype(float)
    found = _solve_cover_milp(instance, cap > 0, cap, latency=ranks, time_limit=time_limit)
    if found is None:
        return None
    cover, status = found
    return p1_solution(instance, cover, extra={"mip_status": status, "exact": status == 0})


def solve_jbba_milp(
    instance: Instance, *, time_limit: float = 60.0, max_steps: int = 64
) -> Solution | None:
    """P2' exactly: Newton–Dinkelbach over exact minimum-bandwidth covers (module docstring).

    ``time_limit`` bounds each HiGHS call; raises :class:`MilpTimeout` when one stops
    without a proven optimum.
    """
    start = solve_milp_multiblock(instance, time_limit=time_limit)
    if start is None:
        return None
    if not start.extra["exact"]:
        raise MilpTimeout("P1' MILP stopped at its time limit")
    from loladeft.allocation.multiblock import cover_of

    cap = capacities(instance)
    cover = cover_of(start.assignment, instance.num_devices)
    deadline = cover_deadline(instance, cover)
    B = instance.bandwidth
    steps = 0
    for _ in range(max_steps):
        steps += 1
        w = per_block_bandwidth(instance, cap, deadline)
        allowed = np.isfinite(w)
        scale = float(w[allowed].min())
        found = _solve_cover_milp(
            instance, allowed, cap, cost=np.where(allowed, w / scale, 0.0), time_limit=time_limit
        )
        if found is None:
            break
        candidate, status = found
        if status != 0:
            raise MilpTimeout("P2' MILP stopped at its time limit")
        used = candidate.used
        total = float((w[used, candidate.level[used]] * candidate.count[used]).sum())
        if total >= B * (1 - 1e-9):
            break
        new_deadline = cover_deadline(instance, candidate)
        if not new_deadline < deadline:
            break
        cover, deadline = candidate, new_deadline
    return p2_solution(instance, cover, deadline, iterations=steps, extra={"exact": True})


def _solve_cover_milp(
    instance: Instance,
    allowed: NDArray[np.bool_],
    cap: NDArray[np.intp],
    *,
    latency: NDArray[np.float64] | None = None,
    cost: NDArray[np.float64] | None = None,
    time_limit: float,
) -> tuple[Cover, int] | None:
    """Solve the cover MILP over the ``allowed`` pairs: minimise the largest ``latency`` of a
    used pair (P1'), or ``Σ cost · n`` (P2'). Returns the cover and HiGHS's status (0 =
    optimal, 1 = time limit with a feasible point), or ``None`` if infeasible."""
    K, L = instance.J.shape
    k_idx, l_idx = np.nonzero(allowed)
    P = k_idx.size
    if P == 0:
        return None
    pair = np.arange(P)
    x, n, pool = pair, P + pair, 2 * P + np.arange(L)  # variable indices
    t = 2 * P + L  # the threshold (P1' only)
    nvar = t + int(latency is not None)
    rows, cols, vals, lo, hi = [], [], [], [], []
    offset = 0

    def add(row_idx, col_idx, val, lower, upper):
        nonlocal offset
        count = int(np.max(row_idx)) + 1
        rows.append(np.asarray(row_idx) + offset)
        cols.append(np.asarray(col_idx))
        vals.append(np.asarray(val, dtype=float))
        lo.append(np.broadcast_to(np.asarray(lower, dtype=float), (count,)))
        hi.append(np.broadcast_to(np.asarray(upper, dtype=float), (count,)))
        offset += count

    ones = np.ones(P)
    c = cap[k_idx, l_idx].astype(float)
    add(np.r_[pair, pair], np.r_[n, x], np.r_[ones, -ones], 0, np.inf)  # n >= x
    add(np.r_[pair, pair], np.r_[n, x], np.r_[ones, -c], -np.inf, 0)  # n <= c x
    add(k_idx, x, ones, -np.inf, 1)  # one level per device
    add(l_idx, x, ones, -np.inf, 1)  # distinct levels
    # Pool after block j (deepest first): p_j = p_{j+1} + Σ_k n_{k,j} - 1 >= 0, p_L = 0;
    # p_0 = 0 (its bound) makes Σ n = L. This is the suffix condition of the lemma.
    depth = np.arange(L)
    add(
        np.r_[depth, depth[:-1], l_idx],
        np.r_[pool, pool[1:], n],
        np.r_[np.ones(L), -np.ones(L - 1), -ones],
        -1,
        -1,
    )
    obj = np.zeros(nvar)
    if latency is not None:
        add(
            np.r_[k_idx, np.arange(K)],
            np.r_[x, np.full(K, t)],
            np.r_[latency[k_idx, l_idx], -np.ones(K)],
            -np.inf,
            0,
        )
        obj[t] = 1.0
    else:
        assert cost is not None
        obj[n] = cost[k_idx, l_idx]
    A = coo_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(offset, nvar),
    )
    upper = np.r_[np.ones(P), c, 0.0, np.full(L - 1, np.inf), [np.inf] * (nvar - t)]
    integral = np.r_[np.ones(2 * P), np.zeros(nvar - 2 * P)]
    res = milp(
        obj,
        constraints=LinearConstraint(A, np.concatenate(lo), np.concatenate(hi)),
        integrality=integral,
        bounds=Bounds(np.zeros(nvar), upper),
        options={"time_limit": time_limit, "mip_rel_gap": 0.0},
    )
    if res.status == 2:
        return None
    if res.x is None:
        raise MilpTimeout(f"milp: HiGHS stopped without a solution: {res.message}")
    chosen = res.x[x] > 0.5
    level = np.full(K, -1, dtype=np.intp)
    count = np.zeros(K, dtype=np.intp)
    level[k_idx[chosen]] = l_idx[chosen]
    count[k_idx[chosen]] = np.rint(res.x[n][chosen]).astype(np.intp)
    return Cover(level, count), int(res.status)
