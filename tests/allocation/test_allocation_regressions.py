"""Regressions found by the simulator, pinned on their instances."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

DATA = Path(__file__).parents[1] / "data"


def p2_optimum_by_bisection(data: dict) -> float:
    """P2's optimum as the least deadline T whose min-cost matching of the bandwidth
    S / (r_k (T - J)) fits in B: plain bisection, independent of jbba's iteration."""
    J = np.asarray(data["J"], dtype=float)
    r = np.asarray(data["spectral_efficiency"], dtype=float)
    ok = np.asarray(data["block_memory"])[None, :] <= np.asarray(data["device_memory"])[:, None]
    S, B = data["block_bits"], data["bandwidth"]

    def fits(T: float) -> bool:
        slack = T - J
        with np.errstate(divide="ignore"):
            need = np.where(ok & (slack > 0), S / (r[:, None] * slack), np.inf)
        try:
            rows, cols = linear_sum_assignment(need.T)
        except ValueError:
            return False
        return need.T[rows, cols].sum() <= B

    lo, hi = 0.0, float(J.max()) + S * J.shape[1] / (B * r.min())
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def test_jbba_scipy_17269_instance_terminates_and_is_optimal():
    """Seed 2024, fig8 at K = L = 12, round 602: scipy's sparse LAPJV
    (min_weight_full_bipartite_matching) looped forever on jbba's matching step here."""
    path = DATA / "scipy-17269.json"
    code = (
        "import json, sys; from loladeft import solve; "
        f"r = solve(json.load(open({str(path)!r})), 'jbba'); print(r.latency)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    latency = float(out.stdout.strip())
    optimum = p2_optimum_by_bisection(json.loads(path.read_text()))
    assert math.isclose(latency, optimum, rel_tol=1e-9)


def test_jbba_bisection_phase_finds_the_same_optimum():
    """The float-bisection fallback (no Newton–Dinkelbach step) reaches the same optimum,
    on monotone and non-monotone instances, small (dense) and large (pruned) ones."""
    from loladeft import Instance
    from loladeft.allocation.jbba import solve_jbba

    rng = np.random.default_rng(17269)
    for K, L, monotone in [(6, 3, True), (6, 3, False), (40, 6, True), (300, 8, False)]:
        d = np.sort(rng.uniform(1, 2, L)) if monotone else rng.uniform(1, 2, L)
        J = d[None, :] / rng.uniform(0.5, 1, K)[:, None]
        b = np.sort(rng.uniform(0, 3, L)) if monotone else rng.uniform(0, 3, L)
        inst = Instance(
            J=J,
            block_memory=b,
            device_memory=rng.uniform(2, 6, K),
            spectral_efficiency=rng.uniform(0.1, 3, K),
            block_bits=1e6,
            bandwidth=1e6,
        )
        newton, bisection = solve_jbba(inst), solve_jbba(inst, max_newton=0)
        latency = [
            inst.device_latency(s.assignment, s.bandwidth).max() for s in (newton, bisection)
        ]
        assert bisection.extra["converged"] is False and bisection.iterations > 10
        assert math.isclose(latency[1], latency[0], rel_tol=1e-12), (K, L, latency)
        assert math.isclose(latency[0], p2_optimum_by_bisection(inst.to_dict()), rel_tol=1e-9)
