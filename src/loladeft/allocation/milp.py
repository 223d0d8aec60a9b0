"""Problem P1 as a mixed-integer linear program: scheme ``milp`` (verification only).

Variables: binaries ``α[k, l]`` for memory-feasible pairs (C3) and the threshold ``t``.

.. math::

   \\min t \\quad \\text{s.t.} \\quad \\sum_k α_{k,l} = 1 \\;(C1), \\quad
   \\sum_l α_{k,l} <= 1 \\;(C2), \\quad \\sum_l α_{k,l} T_{k,l} - t <= 0 \\;\\forall k,

which is (P3), with ``T`` replaced by its dense ranks (same optimal assignments). Solved by
HiGHS through :func:`scipy.optimize.milp`; independent of the
combinatorial schemes, so the tests use it as a reference.

Size limit: at most :data:`MAX_PAIRS` memory-feasible (device, block) pairs, i.e. binaries
(e.g. 1000 devices x 20 blocks). HiGHS needed ~15 s for 16,500 pairs and hit its 60 s
limit at 67,000 on a shared 2-core machine; larger instances are refused in one line
(:class:`~loladeft.exceptions.UnsupportedInstanceError`): ``ba`` solves P1 exactly at any size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from loladeft.allocation.result import Solution, equal_split
from loladeft.exceptions import UnsupportedInstanceError
from loladeft.system.instance import Instance

#: Most memory-feasible (device, block) pairs, i.e. binary variables, ``milp`` accepts.
MAX_PAIRS = 20_000


def solve_milp(instance: Instance, *, time_limit: float = 60.0, **_: Any) -> Solution | None:
    """Scheme ``milp``: P1 through ``scipy.optimize.milp`` (HiGHS)."""
    n = int(np.count_nonzero(instance.memory_ok))
    if n > MAX_PAIRS:
        raise UnsupportedInstanceError(
            f"milp: {n} memory-feasible (device, block) pairs exceed its limit of {MAX_PAIRS}; "
            "use ba, which solves P1 exactly at any size"
        )
    # The bottleneck optimum depends only on the order of the latencies, so the MILP works
    # on their dense ranks: small integers that HiGHS's feasibility tolerances cannot blur.
    T = instance.latency_matrix()
    T = np.unique(T, return_inverse=True)[1].reshape(T.shape).astype(float)
    K, L = T.shape
    k_idx, l_idx = np.nonzero(instance.memory_ok)
    if n == 0:
        return None
    var = np.arange(n)
    t = n  # index of the threshold variable
    one_per_block = coo_array((np.ones(n), (l_idx, var)), shape=(L, n + 1))
    one_per_device = coo_array((np.ones(n), (k_idx, var)), shape=(K, n + 1))
    latency_rows = np.concatenate([k_idx, np.arange(K)])
    latency_cols = np.concatenate([var, np.full(K, t)])
    latency_vals = np.concatenate([T[k_idx, l_idx], -np.ones(K)])
    latency = coo_array((latency_vals, (latency_rows, latency_cols)), shape=(K, n + 1))
    c = np.zeros(n + 1)
    c[t] = 1.0
    res = milp(
        c,
        constraints=[
            LinearConstraint(one_per_block, 1, 1),
            LinearConstraint(one_per_device, -np.inf, 1),
            LinearConstraint(latency, -np.inf, 0),
        ],
        integrality=np.r_[np.ones(n), 0],
        bounds=Bounds(np.zeros(n + 1), np.r_[np.ones(n), np.inf]),
        options={"time_limit": time_limit, "mip_rel_gap": 0.0},
    )
    if res.status == 2:  # infeasible
        return None
    if res.x is None:
        raise UnsupportedInstanceError(
            f"milp: HiGHS stopped without a solution ({' '.join(str(res.message).split())})"
        )
    chosen = res.x[:n] > 0.5
    assignment = np.empty(L, dtype=np.intp)
    assignment[l_idx[chosen]] = k_idx[chosen]
    return equal_split(instance, assignment, extra={"mip_status": int(res.status)})
