"""The exact schemes against brute force (``reference``), against each other, and on
hand-worked examples.

P1 (equal bandwidth): ``ba``, ``milp`` and ``ba-hungarian`` on every instance kind;
``crunch`` on monotone ones only (it must refuse the others). P2 (joint bandwidth): ``jbba``
equals the brute force; ``jbba-dual`` is never better than the optimum and never better
than ``jbba``. Every scheme agrees on infeasibility and explains it by depth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from helpers.instances import make_medium_instance
from helpers.reference import (
    brute_force_p1,
    brute_force_p2,
    feasible_maps,
    p1_latency_of,
    p2_bandwidth_of,
    p2_latencies,
    p2_latency_of,
)
from loladeft.allocation.registry import SCHEMES, solve
from loladeft.exceptions import (
    InvalidInstanceError,
    UnknownSchemeError,
    UnsupportedInstanceError,
)
from loladeft.system.instance import Instance

P1_EXACT = ("ba", "milp", "ba-hungarian")
P1_RTOL = 1e-12  # same formula as the reference; only rounding differs
P2_RTOL = 1e-9


def _describe(case, result) -> str:
    return (
        f"{case}: {result.scheme} gave feasible={result.feasible} latency={result.latency!r} "
        f"assignment={result.assignment} (brute force P1={case.p1!r}, P2={case.p2!r})"
    )


# -- P1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", P1_EXACT)
def test_p1_exact_matches_brute_force(any_case, scheme):
    case = any_case
    result = case.result(scheme)
    assert result.feasible is (case.p1 is not None), _describe(case, result)
    if case.p1 is not None:
        assert math.isclose(result.latency, case.p1, rel_tol=P1_RTOL), _describe(case, result)


def test_crunch_matches_brute_force_on_monotone(monotone_case):
    case = monotone_case
    result = case.result("crunch")
    assert result.feasible is (case.p1 is not None), _describe(case, result)
    if case.p1 is not None:
        assert math.isclose(result.latency, case.p1, rel_tol=P1_RTOL), _describe(case, result)


def test_crunch_refuses_nonmonotone(nonmonotone_case):
    with pytest.raises(UnsupportedInstanceError, match="crunch"):
        solve(nonmonotone_case.instance, "crunch")


def test_exact_p1_schemes_agree_with_each_other(feasible_case):
    case = feasible_case
    schemes = P1_EXACT + (("crunch",) if case.instance.is_monotone else ())
    latencies = {s: case.result(s).latency for s in schemes}
    ref = latencies["ba"]
    assert all(math.isclose(v, ref, rel_tol=P1_RTOL) for v in latencies.values()), (
        f"{case}: {latencies}"
    )


# -- P2 ----------------------------------------------------------------------------------


def test_jbba_matches_brute_force_p2(any_case):
    case = any_case
    result = case.result("jbba")
    assert result.feasible is (case.p2 is not None), _describe(case, result)
    if case.p2 is not None:
        assert math.isclose(result.latency, case.p2, rel_tol=P2_RTOL), _describe(case, result)


def test_jbba_not_worse_than_ba(feasible_case):
    jbba, ba = feasible_case.result("jbba"), feasible_case.result("ba")
    assert jbba.latency <= ba.latency * (1 + P2_RTOL), _describe(feasible_case, jbba)


def test_jbba_dual_between_optimum_and_its_own_assignment(feasible_case):
    """``jbba <= jbba-dual``, ``jbba-dual >= P2 optimum``, and primal recovery: the dual
    scheme's latency is the optimal-bandwidth latency of the assignment it returns."""
    case = feasible_case
    dual, jbba = case.result("jbba-dual"), case.result("jbba")
    assert dual.feasible, _describe(case, dual)
    assert jbba.latency <= dual.latency * (1 + P2_RTOL), _describe(case, dual)
    assert dual.latency >= case.p2 * (1 - P2_RTOL), _describe(case, dual)
    recovered = p2_latency_of(case.data, dual.assignment)
    assert math.isclose(dual.latency, recovered, rel_tol=P2_RTOL), _describe(case, dual)


def test_jbba_dual_reports_iterations_and_gap(feasible_case):
    """The dual bound is a valid lower bound on P2's optimum (weak duality), and
    ``dual_gap = (latency - bound) / latency`` (documented in :mod:`loladeft.allocation.dual`)."""
    case = feasible_case
    dual = case.result("jbba-dual")
    assert isinstance(dual.iterations, int) and dual.iterations >= 1
    gap = dual.extra["dual_gap"]
    assert isinstance(gap, float) and math.isfinite(gap) and 0.0 <= gap <= 1.0
    bound = dual.extra["dual_bound"]
    assert bound <= case.p2 * (1 + P2_RTOL), f"{case}: dual bound {bound} > optimum {case.p2}"
    assert math.isclose(gap, max(0.0, (dual.latency - bound) / dual.latency), abs_tol=1e-12)


def test_jbba_bandwidth_is_optimal_for_its_assignment(feasible_case):
    case = feasible_case
    result = case.result("jbba")
    recovered = p2_latency_of(case.data, result.assignment)
    assert math.isclose(result.latency, recovered, rel_tol=P2_RTOL), _describe(case, result)


# -- the reference itself --------------------------------------------------------------------


def test_reference_is_self_consistent(feasible_case):
    """P2 <= P1; the optimal P2 map's bandwidth uses the whole band and equalises the
    devices; the vectorised P1 brute force equals a plain loop over the maps."""
    case = feasible_case
    assert case.p2 <= case.p1 * (1 + 1e-12)
    maps = feasible_maps(case.data)
    assert min(p1_latency_of(case.data, m) for m in maps) == pytest.approx(case.p1, rel=1e-15)
    best = maps[np.argmin(p2_latencies(case.data, maps))]
    bw = p2_bandwidth_of(case.data, best)
    assert bw.sum() == pytest.approx(case.data["bandwidth"], rel=1e-9)
    J, r = np.array(case.data["J"]), np.array(case.data["spectral_efficiency"])
    S = case.data["block_bits"]
    T = [J[k, i] + S / (bw[k] * r[k]) for i, k in enumerate(best)]
    np.testing.assert_allclose(T, case.p2, rtol=1e-9)


# -- medium instances: exact schemes against each other -----------------------------------

MEDIUM = [(seed, monotone) for seed in range(12) for monotone in (True, False)]


@pytest.mark.parametrize(("seed", "monotone"), MEDIUM)
def test_medium_exact_schemes_agree(seed, monotone):
    data = make_medium_instance(seed, monotone=monotone)
    schemes = [*P1_EXACT, "crunch"] if monotone else list(P1_EXACT)
    results = {s: solve(data, s) for s in schemes}
    feasible = {s: r.feasible for s, r in results.items()}
    assert len(set(feasible.values())) == 1, feasible
    if not results["ba"].feasible:
        return
    latencies = {s: r.latency for s, r in results.items()}
    assert all(math.isclose(v, latencies["ba"], rel_tol=P1_RTOL) for v in latencies.values()), (
        latencies
    )
    jbba, dual = solve(data, "jbba"), solve(data, "jbba-dual")
    assert jbba.latency <= latencies["ba"] * (1 + P2_RTOL)
    assert jbba.latency <= dual.latency * (1 + P2_RTOL)


@pytest.mark.parametrize(("seed", "monotone"), MEDIUM)
def test_medium_jbba_is_locally_optimal(seed, monotone):
    """No swap of two blocks' devices and no move of a block to an idle (memory-feasible)
    device gives a lower optimal-bandwidth latency than ``jbba``'s allocation."""
    data = make_medium_instance(seed, monotone=monotone)
    result = solve(data, "jbba")
    if not result.feasible:
        return
    a = result.assignment.tolist()
    b, mem = data["block_memory"], data["device_memory"]
    K, L = len(mem), len(b)
    neighbours = []
    for i in range(L):
        for j in range(i + 1, L):
            if b[i] <= mem[a[j]] and b[j] <= mem[a[i]]:
                n = list(a)
                n[i], n[j] = n[j], n[i]
                neighbours.append(n)
        for k in set(range(K)) - set(a):
            if b[i] <= mem[k]:
                n = list(a)
                n[i] = k
                neighbours.append(n)
    own = p2_latency_of(data, a)
    assert math.isclose(result.latency, own, rel_tol=P2_RTOL)
    best_neighbour = p2_latencies(data, np.array(neighbours, dtype=np.intp)).min()
    assert best_neighbour >= result.latency * (1 - P2_RTOL), (seed, monotone, best_neighbour)


# -- infeasibility -------------------------------------------------------------------------


def _hall_violation(data) -> tuple[str, str]:
    """Phrases the reason must contain, from Hall's condition on nested device sets: the
    ``j``-th largest block memory ``t`` with fewer than ``j`` devices holding ``>= t``."""
    b = sorted(data["block_memory"], reverse=True)
    mem = data["device_memory"]
    for j, t in enumerate(b, start=1):
        n_dev = sum(m >= t for m in mem)
        if n_dev < j:
            n_blocks = sum(x >= t for x in b)
            devices = "no device" if n_dev == 0 else f"{n_dev} device"
            return devices, f"{n_blocks} block"
    raise AssertionError("feasible instance")


def _assert_reports_memory_wall(case, scheme):
    result = case.result(scheme)
    assert result.feasible is False, _describe(case, result)
    assert math.isnan(result.latency)
    assert result.assignment is None and result.bandwidth is None
    assert result.device_latency is None
    assert "depth" in result.reason
    for needle in _hall_violation(case.data):
        assert needle in result.reason, f"{case}: {needle!r} not in {result.reason!r}"
    record = result.to_dict()
    assert record["feasible"] is False and record["reason"] == result.reason


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "crunch"])
def test_every_scheme_reports_the_memory_wall(infeasible_case, scheme):
    _assert_reports_memory_wall(infeasible_case, scheme)


def test_crunch_reports_the_memory_wall(monotone_infeasible_case):
    _assert_reports_memory_wall(monotone_infeasible_case, "crunch")


# -- hand-worked examples ------------------------------------------------------------------

# K = 4 devices, L = 3 blocks, unit spectral efficiency, S = 1e6 bit, B = 3e6 Hz, so the
# equal share B/L = 1e6 Hz and every upload takes exactly 1 s. Memory: block depths need
# b = (1, 2, 3); devices have (3, 3, 2, 1), so
#   block 3 -> device 0 or 1,  block 2 -> device 0, 1 or 2,  block 1 -> anyone.
# Latency matrix T = J + 1 (rows: devices; columns: depth 1, 2, 3):
#   dev 0: 2   3   6
#   dev 1: 2   5   7
#   dev 2: 3   4  (10, no memory)
#   dev 3: 1.5 (2, no memory) (3, no memory)
# Block 3 costs at least 6 (device 0) and 6 is reachable: 3 -> dev 0, 2 -> dev 2 (4),
# 1 -> dev 3 (1.5) or dev 1 (2). Optimum 6, and every optimum puts block 3 on device 0.
# Device 3 is the fastest everywhere but can hold only block 1: a memory-blind
# "fastest device gets the deepest block" rule would hit the memory wall.
HAND_P1 = {
    "J": [[1.0, 2.0, 5.0], [1.0, 4.0, 6.0], [2.0, 3.0, 9.0], [0.5, 1.0, 2.0]],
    "block_memory": [1.0, 2.0, 3.0],
    "device_memory": [3.0, 3.0, 2.0, 1.0],
    "spectral_efficiency": [1.0, 1.0, 1.0, 1.0],
    "block_bits": 1e6,
    "bandwidth": 3e6,
}


@pytest.mark.parametrize("scheme", (*P1_EXACT, "crunch"))
def test_hand_example_p1(scheme):
    assert brute_force_p1(HAND_P1) == 6.0
    result = solve(HAND_P1, scheme)
    assert result.latency == 6.0
    assert result.assignment[2] == 0
    np.testing.assert_array_equal(result.bandwidth[result.assignment], [1e6] * 3)


def test_hand_example_p1_jbba_is_not_worse():
    assert solve(HAND_P1, "jbba").latency <= 6.0


# K = L = 2, r = 1, S = 1 bit, B = 1 Hz, no memory limits, J = [[1, 2], [1, 4]].
# P1 (B/L = 0.5, upload 2 s): map (block 1 -> dev 0, block 2 -> dev 1) costs max(3, 6) = 6;
# the swap (block 1 -> dev 1, block 2 -> dev 0) costs max(3, 4) = 4. Optimum 4.
# P2: with bandwidths B_k = 1 / (T - J_k) summing to 1,
#   swap:  1/(T-2) + 1/(T-1) = 1  ->  T^2 - 5T + 5 = 0  ->  T = (5 + sqrt 5) / 2 = 3.618...
#   other: 1/(T-1) + 1/(T-4) = 1  ->  T^2 - 7T + 9 = 0  ->  T = (7 + sqrt 13) / 2 = 5.30...
# Optimum (5 + sqrt 5)/2 with B_0 = 1/(T-2) = (sqrt 5 - 1)/2, B_1 = 1/(T-1) = (3 - sqrt 5)/2.
HAND_P2 = {
    "J": [[1.0, 2.0], [1.0, 4.0]],
    "block_memory": [0.0, 0.0],
    "device_memory": [0.0, 0.0],
    "spectral_efficiency": [1.0, 1.0],
    "block_bits": 1.0,
    "bandwidth": 1.0,
}
SQRT5 = math.sqrt(5.0)


def test_hand_example_p2_reference():
    assert brute_force_p1(HAND_P2) == 4.0
    assert math.isclose(brute_force_p2(HAND_P2), (5 + SQRT5) / 2, rel_tol=1e-12)


@pytest.mark.parametrize("scheme", (*P1_EXACT, "crunch"))
def test_hand_example_p2_under_equal_bandwidth(scheme):
    result = solve(HAND_P2, scheme)
    assert result.latency == 4.0
    np.testing.assert_array_equal(result.assignment, [1, 0])


@pytest.mark.parametrize("scheme", ["jbba", "jbba-dual"])
def test_hand_example_p2_joint_bandwidth(scheme):
    result = solve(HAND_P2, scheme)
    assert math.isclose(result.latency, (5 + SQRT5) / 2, rel_tol=1e-9)
    np.testing.assert_array_equal(result.assignment, [1, 0])
    np.testing.assert_allclose(result.bandwidth, [(SQRT5 - 1) / 2, (3 - SQRT5) / 2], rtol=1e-9)
    np.testing.assert_allclose(result.device_latency, [(5 + SQRT5) / 2] * 2, rtol=1e-9)


def test_identical_devices_jbba_equals_ba():
    """All devices identical and every J equal: every allocation is optimal and the equal
    split is the optimal one, so P1 = P2 = J + S L / (B r) = 2 + 1e6 * 3 / (3e6 * 2)."""
    data = {
        "J": [[2.0] * 3] * 5,
        "block_memory": [1.0] * 3,
        "device_memory": [1.0] * 5,
        "spectral_efficiency": [2.0] * 5,
        "block_bits": 1e6,
        "bandwidth": 3e6,
    }
    for scheme in SCHEMES:
        assert math.isclose(solve(data, scheme, seed=1).latency, 2.5, rel_tol=1e-12), scheme


def test_single_block_picks_best_memory_feasible_device():
    """L = 1: the whole band goes to one device; device 1 would finish in 0.1 + 2/4 = 0.6 s
    but lacks memory, so device 2 wins with 2 + 2/2 = 3 s (device 0: 3 + 2/1 = 5 s)."""
    data = {
        "J": [[3.0], [0.1], [2.0]],
        "block_memory": [2.0],
        "device_memory": [2.0, 1.0, 5.0],
        "spectral_efficiency": [1.0, 4.0, 2.0],
        "block_bits": 2.0,
        "bandwidth": 1.0,
    }
    for scheme in ("ba", "crunch", "ba-hungarian", "milp", "jbba", "jbba-dual"):
        result = solve(data, scheme)
        assert result.latency == pytest.approx(3.0, rel=1e-12), scheme
        assert result.assignment.tolist() == [2], scheme


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples(path):
    """Every instance file under ``examples/`` (brute-force sized) against the references."""
    data = json.loads(path.read_text())
    inst = Instance.from_mapping(data)
    if inst.num_devices > 6 or inst.num_blocks > 4:
        pytest.skip("too large for brute force")
    p1, p2 = brute_force_p1(data), brute_force_p2(data)
    schemes = [*P1_EXACT, "crunch"] if inst.is_monotone else list(P1_EXACT)
    for scheme in schemes:
        assert math.isclose(solve(data, scheme).latency, p1, rel_tol=P1_RTOL), scheme
    assert math.isclose(solve(data, "jbba").latency, p2, rel_tol=P2_RTOL)


def test_solve_rejects_bad_input():
    with pytest.raises(UnknownSchemeError, match="scheme"):
        solve(HAND_P1, "fastest")
    with pytest.raises(InvalidInstanceError, match="bandwidth"):
        solve({**HAND_P1, "bandwidth": -1.0}, "ba")


def test_hand_example_infeasible_reason():
    """Blocks of depth 2 and 3 need memory 3; only device 0 has it."""
    data = {
        "J": [[1.0, 2.0, 3.0]] * 4,
        "block_memory": [1.0, 3.0, 3.0],
        "device_memory": [3.0, 1.0, 1.0, 2.0],
        "spectral_efficiency": [1.0] * 4,
        "block_bits": 1.0,
        "bandwidth": 1.0,
    }
    assert brute_force_p1(data) is None
    for scheme in SCHEMES:
        result = solve(data, scheme)
        assert not result.feasible, scheme
        assert "depth >= 2" in result.reason and "1 device" in result.reason, result.reason
