"""The paper's dual-ascent JBBA (Algorithm 3): scheme ``jbba-dual``.

Problem P4 introduces device-involvement binaries ``β_k`` so that the Lagrangian (14)
splits (15) into three parts minimised separately at fixed duals ``λ >= 0`` (C4.1),
``μ >= 0`` (C4.2) and ``σ`` (C4.3):

* ``L_T = (1 - Σ λ_k) T`` — ``T = 0`` or ``T = T_max`` by the sign of the coefficient, with
  ``T_max`` the best latency found so far (an upper bound of the optimum);
* ``L_α = Σ α_{k,l} (λ_k J_{k,l} - σ_k)`` — CRUNCH (Alg. 2) on the matrix ``λ_k J_{k,l} -
  σ_k`` leaves the pairs under its bottleneck threshold, and the Hungarian method finds the
  minimum-weight perfect matching among them (Sec. V-C);
* ``L_{B,β}`` — Lemma 1: ``β_k = 1`` for the ``L`` least ``2 sqrt(λ_k S μ / r_k) + σ_k`` and
  ``B_k = sqrt(β_k λ_k S / (r_k μ))`` (eq. 17);

then the duals take a projected sub-gradient step (16) with step ``ε_i = step / sqrt(i + 1)``.

Implementation notes
--------------------
* Units are normalised (time by a latency scale ``τ``, bandwidth by ``B``, ``μ`` by its
  initial value) so that one step size fits all three dual blocks; (16) is otherwise as
  printed, with the upload term ``S / (B_k r_k)`` (the paper's ``S / B_k`` drops ``r_k``).
* The normalised upload times ``S / (B τ r_k)`` must lie within ``[1e-150, 1e150]`` for
  the duals' products to stay within the doubles; on instances beyond that (far from any
  physical setting) the iterations are skipped and the answer is BA's (below).
* CRUNCH's sparsification keeps exactly the pairs at or below the bottleneck threshold of the
  matrix; that threshold is computed in closed form (:mod:`.bottleneck`), which yields the
  same sparse matrix as running the cuts one by one.
* **Primal recovery.** The iterates' ``β, B`` need not match ``α`` (C4.3 holds only at
  convergence), so every iterate's assignment ``α`` gets the bandwidth split that is optimal
  for it (:func:`.jbba.equalized_deadline`); the best one is returned, so the result is
  always feasible and its latency is true.
* **Never worse than BA.** Algorithm 3's recovered primal is compared at the end with the
  BA solution (:func:`.bottleneck.solve_ba`, the exact P1 optimum) given its optimal
  bandwidth split, exactly as the iterates' assignments are; the better one is returned.
  Algorithm 3 itself is not changed (its ``T_max`` still starts from its own iterates), so
  the answer differs from the plain algorithm only where BA's is better, and the result is
  never above ``ba``'s latency. ``extra["dual_primal_latency"]`` is the plain algorithm's
  own best latency, ``extra["warm_start"]`` whether BA's solution won.
* **Duality gap.** The dual function ``d(λ, μ, σ)`` is evaluated exactly (the ``α`` part by
  a Hungarian solve over *all* memory-feasible pairs), a valid lower bound on P2's optimum;
  ``extra["dual_gap"]`` is ``(best latency - best bound) / best latency``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from loladeft.allocation.bottleneck import (
    bottleneck_assignment,
    monotone_bottleneck_value,
    solve_ba,
)
from loladeft.allocation.jbba import equalized_deadline, equalizing_bandwidth
from loladeft.allocation.matching import candidate_devices
from loladeft.allocation.memory import memory_infeasibility
from loladeft.allocation.result import Solution
from loladeft.system.instance import Instance

FloatArray = NDArray[np.float64]
#: Smallest normalised upload time (and inverse of the largest) Algorithm 3 runs with.
SCALE = 1e-150


def solve_jbba_dual(
    instance: Instance,
    *,
    max_iter: int = 30,
    step: float = 0.01,
    tol: float = 1e-3,
    patience: int = 5,
    **_: Any,
) -> Solution | None:
    """Scheme ``jbba-dual``: Algorithm 3 with primal recovery and a duality-gap certificate.

    Never worse than ``ba``: the result is the better of Algorithm 3's recovered primal and
    BA's assignment with its optimal bandwidth split (module docstring).

    Parameters
    ----------
    max_iter
        Dual-ascent iterations at most.
    step
        Initial step ``ε_0`` of the diminishing rule ``ε_i = ε_0 / sqrt(i + 1)``.
    tol
        Stop once the relative duality gap is below ``tol``.
    patience
        Stop once the recovered latency has not improved for ``patience`` iterations (the
        primal iterates have settled; the Lagrangian bound of this mixed-integer problem
        rarely closes the gap).
    """
    if memory_infeasibility(instance) is not None:
        return None
    J, r, S, B = instance.J, instance.spectral_efficiency, instance.block_bits, instance.bandwidth
    K, L = J.shape
    blocks = np.arange(L)
    ok = instance.memory_ok
    # Normalised units: time by tau, bandwidth by B.
    with np.errstate(all="ignore"):
        full = B * float(np.median(r))  # 0 when it underflows: tau is then out of range
        tau = float(np.mean(J[ok])) + (L * S / full if full > 0 else math.inf)
        upload = np.float64(S) / (np.float64(B) * tau) / r  # normalised, at full bandwidth
        scaled = 0 < tau < math.inf and bool(((upload >= SCALE) & (upload <= 1 / SCALE)).all())
    if not scaled:  # magnitudes the normalised dual cannot hold: BA stands (module docstring)
        return _keep_better(instance, None, math.inf, -math.inf, 0)
    Jn, Sn = J / tau, S / (B * tau)
    lam = np.full(K, 1.0 / K)
    sigma = np.zeros(K)
    mu_scale = float(np.sum(np.sort(np.sqrt(lam * Sn / r))[:L])) ** 2
    mu = mu_scale
    best_latency, best_assignment, best_bound, best_at = np.inf, None, -np.inf, 0
    recovered: dict[bytes, float] = {}  # assignments recur: recover each one once
    it = 0
    for it in range(1, max_iter + 1):
        cost = np.where(ok, lam[:, None] * Jn - sigma[:, None], np.inf)
        # Block allocation: CRUNCH-sparsified Hungarian (Sec. V-C).
        assignment = _sparsified_hungarian(cost, instance.is_monotone)
        # Device involvement and bandwidth: Lemma 1, eq. (17).
        coef = 2 * np.sqrt(lam * Sn * mu / r) + sigma
        beta = np.zeros(K, dtype=bool)
        beta[np.argpartition(coef, L - 1)[:L]] = True
        bw = np.where(beta, np.sqrt(lam * Sn / (r * mu)), 0.0)
        # Primal recovery: the optimal bandwidth split for this assignment.
        key = assignment.tobytes()
        if key not in recovered:
            recovered[key] = equalized_deadline(J[assignment, blocks], r[assignment], S, B)
        latency = recovered[key]
        if latency < best_latency:
            best_latency, best_assignment, best_at = latency, assignment, it
        t_max = best_latency / tau
        # Latency variable: minimises (1 - Σλ) T over [0, T_max].
        coef_t = 1.0 - lam.sum()
        t = 0.0 if coef_t >= 0 else t_max
        # Dual function: an exact lower bound on the optimum (full Hungarian for L_α).
        rows = candidate_devices(cost)
        sub = cost[rows].T
        b_idx, d_idx = linear_sum_assignment(sub)
        bound = coef_t * t + sub[b_idx, d_idx].sum() + coef[beta].sum() - mu
        best_bound = max(best_bound, bound * tau)
        if best_latency - best_bound <= tol * best_latency or it - best_at >= patience:
            break
        # Dual ascent, eq. (16), projected onto λ > 0, μ > 0.
        eps = step / np.sqrt(it)
        involved = np.zeros(K)
        involved[assignment] = 1.0
        device_time = np.zeros(K)
        device_time[assignment] = Jn[assignment, blocks]
        with np.errstate(divide="ignore", over="ignore"):  # capped at 1e6 just below
            device_time += np.where(beta, Sn / (np.maximum(bw, 1e-300) * r), 0.0)
        lam = np.maximum(lam + eps * np.minimum(device_time - t, 1e6), 1e-9)
        mu = max(mu + eps * mu_scale * (bw.sum() - 1.0), 1e-9 * mu_scale)
        sigma = sigma + eps * (beta - involved)
    return _keep_better(instance, best_assignment, best_latency, best_bound, it)


def _keep_better(
    instance: Instance,
    assignment: NDArray[np.intp] | None,
    latency: float,
    bound: float,
    iterations: int,
) -> Solution | None:
    """The better of Algorithm 3's recovered primal (``assignment``, ``latency``) and BA's
    assignment under its optimal bandwidth split; ``None`` if neither has a finite latency."""
    J, r, S, B = instance.J, instance.spectral_efficiency, instance.block_bits, instance.bandwidth
    blocks = np.arange(instance.num_blocks)
    own = latency
    ba = solve_ba(instance)
    warm = False
    if ba is not None:
        ba_latency = equalized_deadline(J[ba.assignment, blocks], r[ba.assignment], S, B)
        if ba_latency < latency:
            assignment, latency, warm = ba.assignment, ba_latency, True
    if assignment is None or not math.isfinite(latency):
        return None
    bandwidth = np.zeros(instance.num_devices)
    bandwidth[assignment] = equalizing_bandwidth(
        J[assignment, blocks], r[assignment], S, B, latency
    )
    gap = max(0.0, (latency - bound) / latency)
    finite = math.isfinite(bound) and math.isfinite(gap)
    return Solution(
        assignment.astype(np.intp),
        bandwidth,
        iterations=iterations,
        extra={
            "dual_gap": gap if finite else None,
            "dual_bound": bound if finite else None,
            "dual_primal_latency": own if math.isfinite(own) else None,
            "warm_start": warm,
        },
    )


def _sparsified_hungarian(cost: FloatArray, monotone: bool) -> NDArray[np.intp]:
    """Minimum-weight perfect matching among the pairs CRUNCH keeps (Sec. V-C)."""
    if monotone:
        threshold = monotone_bottleneck_value(cost)
    else:
        found = bottleneck_assignment(cost)
        assert found is not None
        threshold = found[0]
    sparse = np.where(cost <= threshold, cost, np.inf)
    rows = candidate_devices(sparse)
    _, cols = linear_sum_assignment(sparse[rows].T)
    return rows[cols].astype(np.intp)
