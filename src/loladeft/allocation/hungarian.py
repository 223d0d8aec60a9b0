"""The paper's "conventional" method for P1 (Sec. IV-A): scheme ``ba-hungarian``.

Step 1 sorts the ``K L`` latencies ``T[k, l]`` in descending order; Steps 2–3 lower the
threshold ``T_th`` one entry at a time and test, with the Hungarian method, whether the
blocks can still all be matched to distinct devices using only pairs with ``T[k, l] <= T_th``
that satisfy C3; Step 4 returns the last feasible matching. ``O(K L)`` thresholds times an
``O(max(K, L)^3)`` assignment each: a benchmark baseline, exact but slow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from loladeft.allocation.result import Solution, equal_split
from loladeft.system.instance import Instance


def solve_ba_hungarian(instance: Instance, **_: Any) -> Solution | None:
    """Scheme ``ba-hungarian``: linear threshold search with Hungarian feasibility tests."""
    T = instance.latency_matrix()
    ok = instance.memory_ok.T  # (L, K): blocks x devices
    thresholds = np.sort(T, axis=None)[::-1]  # Step 1
    best = None
    tests = 0
    for threshold in thresholds:  # Step 2
        # Step 3: a zero-cost perfect matching exists iff every block has a qualified device.
        cost = np.where(ok & (T.T <= threshold), 0.0, 1.0)
        blocks, devices = linear_sum_assignment(cost)
        tests += 1
        if cost[blocks, devices].sum() > 0:
            break
        best = devices
    if best is None:  # Step 4
        return None
    return equal_split(instance, best.astype(np.intp), iterations=tests)
