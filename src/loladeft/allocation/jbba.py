"""Exact joint bandwidth-and-block allocation (problem P2): scheme ``jbba``.

P2 chooses the block assignment ``α`` and the bandwidth split ``{B_k}`` together to minimise
the round latency ``max_k J[k, l_k] + S / (B_k r_k)`` subject to C1–C3 and ``Σ B_k <= B``.
It is mixed-integer and non-linear, but it has an exact polynomial-time method (below).

Bandwidth needed by a deadline
------------------------------
For a deadline ``T``, device ``k`` finishes block ``l`` by ``T`` iff ``J[k, l] < T`` and it
gets at least

.. math:: w_{k,l}(T) = \\frac{S}{r_k \\, (T - J[k, l])}

of bandwidth (eq. 5). A deadline is achievable iff some memory-feasible matching ``α``
needs no more than ``B`` in total, i.e. iff ``g(T) <= B`` where

.. math:: g(T) = \\min_{α} \\sum_l w_{α(l), l}(T)

is a *linear* assignment problem for fixed ``T`` (Hungarian / shortest augmenting paths,
``scipy.optimize.linear_sum_assignment``). Each ``w`` is continuous and strictly decreasing
in ``T`` on ``(J[k, l], ∞)``, so ``g`` is too, and the optimum of P2 is the unique root
``T* = min{T : g(T) <= B}``, attained with the bandwidth ``B_k = w_{k,l}(T*)`` that
*equalises* every scheduled device's latency at ``T*`` (Lemma 1's compensation, exactly).

Algorithm (Newton–Dinkelbach on the matching)
---------------------------------------------
For a fixed matching ``α``, ``T(α)`` solves ``Σ_l w_{α(l), l}(T) = B`` (one monotone
equation, solved to machine precision). Start from the optimal P1 matching; then repeat:
``α ← argmin_α Σ w(T)`` at the current ``T``; stop when ``g(T) >= B`` (up to rounding),
else ``T ← T(α)``.

*Proof of exactness.* Each ``T`` is the root of a feasible matching, so ``T >= T*``. If
``g(T) < B`` the minimising matching ``α`` has ``Σ w_α(T) < B``, hence ``T(α) < T``: the
deadline strictly decreases, and ``α`` can never be returned again (its root is above every
later deadline), so the loop ends after finitely many distinct matchings. It ends only when
``g(T) = B``; since ``g`` is strictly decreasing, every ``T' < T`` has ``g(T') > B``, so
``T = T*``. ∎

*Polynomial bound.* The Newton–Dinkelbach steps converge in a handful of steps in practice,
but their count is only bounded by the number of matchings. So after ``max_newton`` steps
(64) the search switches to bisection on ``T`` between ``max_l min_k J[k, l]`` (no matching
meets it) and the current deadline, halving in the *representation order* of doubles: at
most 64 halvings reach two adjacent doubles, i.e. ``T*`` to the last bit. Each step, of
either kind, is one ``O(K L)`` pass that keeps each block's ``L`` cheapest devices at the
current deadline (enough: a block whose device is not among them can swap to a free one of
them at no higher cost) plus one assignment on at most ``L^2`` devices, ``O(L^4)``. In all
``O(K L + L^4)`` per step and at most 128 steps: polynomial. ``extra["converged"]`` tells
whether the Newton–Dinkelbach phase alone finished.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from loladeft.allocation.bottleneck import solve_ba
from loladeft.allocation.matching import RowCost, cheapest_per_column, min_cost_assignment
from loladeft.allocation.result import Solution
from loladeft.system.instance import Instance

FloatArray = NDArray[np.float64]


def solve_jbba(instance: Instance, *, max_newton: int = 64, **_: Any) -> Solution | None:
    """Scheme ``jbba``: the optimal block assignment and bandwidth split of P2.

    ``max_newton`` Newton–Dinkelbach steps at most; then float bisection (module
    docstring) finishes in at most 64 more assignments.
    """
    start = solve_ba(instance)
    if start is None:
        return None
    J, r, S, B = instance.J, instance.spectral_efficiency, instance.block_bits, instance.bandwidth
    L = instance.num_blocks
    blocks = np.arange(L)
    steps = 0

    def best_matching(deadline: float) -> tuple[NDArray[np.intp], float]:
        """argmin_α Σ_l w_{α(l), l}(T) and that minimum, g(T) (inf if no α meets T)."""
        nonlocal steps
        steps += 1
        return _min_bandwidth_matching(instance, deadline)

    def root(matching: NDArray[np.intp]) -> float:
        return equalized_deadline(J[matching, blocks], r[matching], S, B)

    assignment = start.assignment
    deadline = root(assignment)
    converged = False
    for _ in range(max_newton):  # Newton–Dinkelbach
        candidate, total = best_matching(deadline)
        if total >= B * (1 - 1e-12):
            converged = True  # g(T) = B: no matching meets an earlier deadline
            break
        new_deadline = root(candidate)
        if not new_deadline < deadline:  # rounding: no further progress is representable
            converged = True
            break
        assignment, deadline = candidate, new_deadline
    if not converged:  # bisection over the doubles between a deadline no matching meets and T
        lo = float(np.max(np.min(np.where(instance.memory_ok, J, np.inf), axis=0)))
        while (mid := _float_midpoint(lo, deadline)) not in (lo, deadline):
            candidate, total = best_matching(mid)
            if total <= B:
                assignment, deadline = candidate, min(mid, root(candidate))
            else:
                lo = mid
    bandwidth = np.zeros(instance.num_devices)
    bandwidth[assignment] = equalizing_bandwidth(
        J[assignment, blocks], r[assignment], S, B, deadline
    )
    return Solution(assignment, bandwidth, iterations=steps, extra={"converged": converged})


def _min_bandwidth_matching(instance: Instance, deadline: float) -> tuple[NDArray[np.intp], float]:
    """The matching needing the least total bandwidth to meet ``deadline``, and that total
    (``inf`` when no matching can meet it)."""
    J, r, S = instance.J, instance.spectral_efficiency, instance.block_bits
    K, L = J.shape
    need_rows = _required_bandwidth(instance, deadline)
    try:
        if K <= 2 * L:  # small: every pair is a candidate
            matching = linear_sum_assignment(need_rows(slice(0, K)).T)[1]
        else:  # each block's L cheapest devices are enough
            edges = cheapest_per_column(need_rows, K, L, np.full(L, L))
            if (edges.count == 0).any():
                raise ValueError("a block has no device able to meet the deadline")
            matching = min_cost_assignment(edges.column, edges.row, edges.cost, L)
    except ValueError:  # linear_sum_assignment: "cost matrix is infeasible"
        return np.arange(L), float("inf")
    slack = deadline - J[matching, np.arange(L)]
    return matching.astype(np.intp), float((S / (r[matching] * slack)).sum())


def _float_midpoint(a: float, b: float) -> float:
    """The double halfway between positive doubles ``a < b`` in representation order, so
    bisection on it ends after at most 64 halvings."""
    ia, ib = (int(i) for i in np.array([a, b]).view(np.int64))
    return float(np.array([(ia + ib) // 2], dtype=np.int64).view(np.float64)[0])


def _required_bandwidth(instance: Instance, deadline: float) -> RowCost:
    """Rows of ``w[k, l] = S / (r_k (T - J[k, l]))``, the bandwidth device ``k`` needs to
    finish block ``l`` by ``T``; ``inf`` where impossible (``J >= T``) or where C3 fails."""
    J, r, S, ok = instance.J, instance.spectral_efficiency, instance.block_bits, instance.memory_ok

    def rows(index: NDArray[np.intp] | slice) -> FloatArray:
        slack = deadline - J[index]
        with np.errstate(divide="ignore"):
            need = S / (r[index, None] * slack)
        return np.where(ok[index] & (slack > 0), need, np.inf)

    return rows


def equalized_deadline(J: FloatArray, r: FloatArray, S: float, B: float) -> float:
    """Latency of a fixed matching under its optimal bandwidth split.

    Solves ``f(T) = Σ_i S / (r_i (T - J_i)) - B = 0`` for ``T > max J``. ``f`` is convex
    and strictly decreasing there, so Newton's method started left of the root (where
    ``f >= 0``) stays left of it and increases monotonically to it: each tangent lies below
    the convex ``f``, so its zero cannot pass the root. Iterates stop when they stop moving
    (machine precision), at most 200 steps.
    """
    inv = S / r  # w_i = inv_i / (T - J_i)
    top = float(J.max())
    T = top + float(inv[J == top].max()) / B  # that device alone already needs B: f(T) >= 0
    for _ in range(200):
        gap = T - J
        f = float((inv / gap).sum()) - B
        if f <= 0:
            return T
        step = f / float((inv / gap**2).sum())  # -f / f'(T)
        if T + step == T:
            return T
        T += step
    return T


def equalizing_bandwidth(
    J: FloatArray, r: FloatArray, S: float, B: float, deadline: float
) -> FloatArray:
    """``B_i = S / (r_i (T - J_i))``: every device finishes exactly at ``T``.

    ``T`` is a float, so the sum can exceed ``B`` by a rounding residue. The residue is taken
    from the devices in proportion to ``-dB_i/dT = r_i B_i^2 / S`` (a first-order move of the
    common deadline), which delays every device by the same ~1 ulp; scaling all ``B_i`` alike
    would instead delay a device whose latency is all upload by the residue's relative size.
    """
    bandwidth = S / (r * (deadline - J))
    excess = bandwidth.sum() - B
    if excess > 0:
        slope = r * bandwidth**2 / S
        bandwidth -= excess * slope / slope.sum()
        total = bandwidth.sum()
        if total > B:
            bandwidth *= B / total
    return bandwidth
