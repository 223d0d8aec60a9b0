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

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from loladeft.allocation.bottleneck import solve_ba
from loladeft.allocation.matching import RowCost, cheapest_per_column, min_cost_assignment
from loladeft.allocation.result import Solution
from loladeft.system.instance import Instance

FloatArray = NDArray[np.float64]
_TINY = float(np.finfo(float).tiny)  # least positive normal double
_SMALLEST = float(np.finfo(float).smallest_subnormal)  # least positive double


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
    with np.errstate(over="ignore"):
        total = float(_bandwidth_for(S, r[matching], slack).sum())
    return matching.astype(np.intp), total


def _bandwidth_for(S: float, r: FloatArray, slack: FloatArray) -> FloatArray:
    """``S / (r slack)``, the bandwidth that uploads ``S`` bits at ``r`` within ``slack``
    seconds (``inf`` where ``slack = 0``). Where the product ``r slack`` overflows (it would
    read as needing no bandwidth at all) or underflows (it would read as needing all of it),
    it is computed as ``(S / slack) / r`` instead; a need below the least positive double is
    that double, never 0."""
    with np.errstate(over="ignore", divide="ignore", under="ignore"):
        product = r * slack
        need = np.divide(S, product)
        if product.size and not (product.min() >= _TINY and product.max() < np.inf):
            odd = ~((product >= _TINY) & (product < np.inf))  # over- or underflowed
            need = np.where(odd, (S / slack) / r, need)  # one factor at a time
        if need.size and need.min() < _SMALLEST:  # a need below the least positive double
            np.maximum(need, _SMALLEST, out=need)
    return need


def _float_midpoint(a: float, b: float) -> float:
    """The double halfway between positive doubles ``a < b`` in representation order, so
    bisection on it ends after at most 64 halvings."""
    ia, ib = (int(i) for i in np.array([a, b]).view(np.int64))
    return float(np.array([(ia + ib) // 2], dtype=np.int64).view(np.float64)[0])


def _required_bandwidth(instance: Instance, deadline: float) -> RowCost:
    """Rows of ``w[k, l] = S / (r_k (T - J[k, l]))``, the bandwidth device ``k`` needs to
    finish block ``l`` by ``T``; ``inf`` where impossible (``J >= T``) or where C3 fails."""
    J, r, S, ok = instance.J, instance.spectral_efficiency, instance.block_bits, instance.memory_ok
    # Fast path (every physical instance): no product r_k (T - J) can overflow, and one that
    # underflows means a need above S / tiny >= B, which no matching can use anyway; so the
    # plain quotient is exact where it matters. Otherwise :func:`_bandwidth_for`.
    with np.errstate(over="ignore"):
        plain = float(r.max()) * deadline < np.inf  # slack <= T since J >= 0
    plain = plain and S >= instance.bandwidth * _TINY

    def rows(index: NDArray[np.intp] | slice) -> FloatArray:
        slack = deadline - J[index]
        if plain:
            with np.errstate(divide="ignore", over="ignore"):  # only where slack < 0: masked
                need = S / (r[index, None] * slack)
        else:
            need = _bandwidth_for(S, r[index, None], slack)
        return np.where(ok[index] & (slack > 0), need, np.inf)

    return rows


def equalized_deadline(J: FloatArray, r: FloatArray, S: float, B: float) -> float:
    """Latency of a fixed matching under its optimal bandwidth split.

    Solves ``f(T) = Σ_i S / (r_i (T - J_i)) - B = 0`` for ``T > max J``. ``f`` is convex
    and strictly decreasing there, so Newton's method started left of the root (where
    ``f >= 0``) stays left of it and increases monotonically to it: each tangent lies below
    the convex ``f``, so its zero cannot pass the root. Iterates stop when they stop moving
    (machine precision), at most 200 steps.

    The start is the least double above ``max J`` at which the slowest device alone already
    needs ``B``; when uploads are far below one ulp of ``J`` (a huge ``B``, a tiny ``S``)
    ``max J + S / (r B)`` rounds down onto ``max J``, so the start is then the next double
    up (where ``f`` may already be ``<= 0``: that double is the answer). Where the doubles
    defeat Newton's step (an overflowing or underflowing ``f`` or ``f'``), the root is
    bracketed and bisected instead (:func:`_bisected_deadline`). ``inf`` means no
    representable deadline exists (an upload overflows even with all of ``B``).
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
        inv = S / r  # w_i = inv_i / (T - J_i)
        top = float(J.max())
        T = top + float(inv[J == top].max()) / B  # that device alone already needs B: f(T) >= 0
        if not T > top:  # the upload is below one ulp of max J
            T = math.nextafter(top, math.inf)
        if not (math.isfinite(T) and np.isfinite(inv).all()):
            return _bisected_deadline(J, S / B / r, top)
        for _ in range(200):
            gap = T - J
            f = float((inv / gap).sum()) - B
            if f <= 0:
                return T
            slope = float((inv / gap**2).sum())  # -f'(T); 0 once it underflows
            step = f / slope if slope > 0 else math.inf  # -f / f'(T)
            if not (math.isfinite(step) and step > 0):  # f or f' out of the doubles' range
                return _bisected_deadline(J, S / B / r, T)
            if T + step == T:
                return T
            T += step
    return T


def _bisected_deadline(J: FloatArray, c: FloatArray, lo: float) -> float:
    """Root of ``Σ_i c_i / (T - J_i) = 1`` (``c_i = S / (r_i B)``, the upload time at full
    bandwidth) above ``lo``, for the extreme magnitudes where Newton's step is not
    representable: double the distance above ``max J`` until the deadline is met, then bisect
    in representation order (at most 64 halvings) and return the least deadline met."""
    top = float(J.max())
    lo = max(lo, top)

    def met(T: float) -> bool:
        gap = T - J
        return bool((gap > 0).all()) and float((c / gap).sum()) <= 1.0

    if not np.isfinite(c).all():
        return math.inf
    hi = math.nextafter(lo, math.inf)
    while not met(hi):
        hi = top + 2 * max(hi - top, math.ulp(top) if top > 0 else 5e-324)
        if not math.isfinite(hi):
            return math.inf
    while (mid := _float_midpoint(lo, hi)) not in (lo, hi):
        lo, hi = (lo, mid) if met(mid) else (mid, hi)
    return hi


def equalizing_bandwidth(
    J: FloatArray, r: FloatArray, S: float, B: float, deadline: float
) -> FloatArray:
    """``B_i = S / (r_i (T - J_i))``: every device finishes exactly at ``T``.

    ``T`` is a float, so the sum can exceed ``B`` by a rounding residue. The residue is taken
    from the devices in proportion to ``-dB_i/dT = r_i B_i^2 / S`` (a first-order move of the
    common deadline), which delays every device by the same ~1 ulp; scaling all ``B_i`` alike
    would instead delay a device whose latency is all upload by the residue's relative size.
    """
    bandwidth = _bandwidth_for(S, r, deadline - J)
    excess = bandwidth.sum() - B
    if excess > 0:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            slope = r * bandwidth**2 / S
            move = excess * slope / slope.sum()
        if np.isfinite(move).all() and (move < bandwidth).all():  # else only the scaling
            bandwidth -= move
        total = bandwidth.sum()
        if total > B:
            bandwidth *= B / total
            if bandwidth.min() <= 0:  # a share rounded to 0 (extreme magnitudes only)
                np.maximum(bandwidth, _SMALLEST, out=bandwidth)
    return bandwidth
