"""The benchmark schemes ``comp-aware``, ``comm-aware`` and ``random`` (paper Sec. VI-A-4).

Against the rule documented in :mod:`loladeft.allocation.baselines`, re-implemented here
from the text: blocks go from the most demanding (largest ``b(l)``, deepest among ties) to
the strongest unused device whose memory holds it; strongest means smallest ``Σ_l J[k, l]``
(comp-aware) or largest ``r_k`` (comm-aware); equal bandwidth ``B/L``. The memory-blind
version gives the ``L`` strongest devices to the blocks in that order, memory ignored;
``extra["memory_wall"]`` says whether it would violate C3. ``random`` is uniform over the
memory-feasible allocations.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare
from test_allocation_exact import HAND_P1

from helpers.reference import brute_force_p1, feasible_maps
from loladeft.allocation.registry import solve

HEURISTICS = ("comp-aware", "comm-aware", "random")


def _strength(data, scheme):
    """Device scores, smaller = stronger."""
    if scheme == "comp-aware":
        return np.array(data["J"], dtype=float).sum(axis=1)
    return -np.array(data["spectral_efficiency"], dtype=float)


def _documented_greedy(data, scheme):
    """(assignment or None, memory_wall) of the documented rule, from scratch."""
    score = _strength(data, scheme)
    b = data["block_memory"]
    mem = data["device_memory"]
    L = len(b)
    blocks = sorted(range(L), key=lambda i: (-b[i], -i))  # largest memory, deepest first
    ranking = sorted(range(len(score)), key=lambda k: score[k])
    blind_wall = any(b[i] > mem[k] for i, k in zip(blocks, ranking[:L], strict=False))
    used: set[int] = set()
    assignment = [None] * L
    for i in blocks:
        able = [k for k in ranking if k not in used and mem[k] >= b[i]]
        if not able:
            return None, blind_wall
        assignment[i] = able[0]
        used.add(able[0])
    return assignment, blind_wall


@pytest.mark.parametrize("scheme", HEURISTICS)
def test_heuristics_feasible_iff_memory_allows(any_case, scheme):
    case = any_case
    result = case.result(scheme)
    assert result.feasible is (case.p1 is not None), f"{case}: {scheme}"


@pytest.mark.parametrize("scheme", HEURISTICS)
def test_heuristics_not_better_than_p1_optimum(feasible_case, scheme):
    case = feasible_case
    result = case.result(scheme)
    assert result.latency >= case.p1 * (1 - 1e-12), f"{case}: {scheme} beat the optimum"
    L = case.instance.num_blocks
    np.testing.assert_allclose(result.bandwidth[result.assignment], case.data["bandwidth"] / L)


def test_comp_aware_follows_the_documented_rule(compute_ranked_case):
    _assert_documented_rule(compute_ranked_case, "comp-aware")


def test_comm_aware_follows_the_documented_rule(channel_ranked_case):
    _assert_documented_rule(channel_ranked_case, "comm-aware")


def _assert_documented_rule(case, scheme):
    """Only on cases without ties in strength: any tie-break is allowed."""
    expected, wall = _documented_greedy(case.data, scheme)
    result = case.result(scheme)
    if expected is None:
        assert not result.feasible, f"{case}: {scheme}"
        return
    assert result.assignment.tolist() == expected, f"{case}: {scheme}"
    assert result.extra["memory_wall"] is wall, f"{case}: {scheme}"


def test_comp_aware_on_the_paper_model():
    """``J = d(l) / f_k``: the fastest devices take the deepest blocks. Memory for all."""
    f = np.array([1.0, 3.0, 2.0, 0.5, 2.5])
    d = np.array([1.0, 2.0, 4.0])
    data = {
        "J": (d[None, :] / f[:, None]).tolist(),
        "block_memory": [1.0, 1.0, 1.0],
        "device_memory": [1.0] * 5,
        "spectral_efficiency": [1.0, 1.0, 8.0, 4.0, 2.0],
        "block_bits": 1e6,
        "bandwidth": 3e6,
    }
    comp = solve(data, "comp-aware")
    # f ranks devices 1 (3.0), 4 (2.5), 2 (2.0): depth 3 -> 1, depth 2 -> 4, depth 1 -> 2
    assert comp.assignment.tolist() == [2, 4, 1]
    assert comp.extra["memory_wall"] is False
    comm = solve(data, "comm-aware")
    # r ranks devices 2 (8), 3 (4), 4 (2): depth 3 -> 2, depth 2 -> 3, depth 1 -> 4
    assert comm.assignment.tolist() == [4, 3, 2]
    assert comm.extra["memory_wall"] is False


def test_memory_wall_is_counted_and_avoided():
    """The fastest device (3) cannot hold the deepest block: memory-blind comp-aware would
    hit the wall; the memory-aware rule skips device 3 for depth 3 and uses it for depth 1."""
    data = HAND_P1  # the hand-worked instance of test_allocation_exact
    result = solve(data, "comp-aware")
    assert result.extra["memory_wall"] is True
    # row sums: dev3 3.5, dev0 8, dev1 11, dev2 14; depth 3 -> dev0 (dev3 lacks memory),
    # depth 2 -> dev1 (dev3 lacks memory), depth 1 -> dev3
    assert result.assignment.tolist() == [3, 1, 0]
    # latencies (upload 1 s each): dev3 0.5 + 1, dev1 4 + 1, dev0 5 + 1; here also optimal
    assert result.latency == 6.0 == brute_force_p1(data)


def test_random_is_reproducible():
    data = {
        "J": np.arange(24, dtype=float).reshape(6, 4).tolist(),
        "block_memory": [1.0, 1.0, 2.0, 2.0],
        "device_memory": [2.0, 1.0, 2.0, 2.0, 1.0, 2.0],
        "spectral_efficiency": [1.0] * 6,
        "block_bits": 1.0,
        "bandwidth": 1.0,
    }
    first = solve(data, "random", seed=123).assignment.tolist()
    assert solve(data, "random", seed=123).assignment.tolist() == first
    draws = {tuple(solve(data, "random", seed=s).assignment.tolist()) for s in range(30)}
    assert len(draws) > 5  # it does vary with the seed


@pytest.mark.parametrize(
    ("block_memory", "device_memory"),
    [
        # 4 feasible maps; drawing the shallow block first would not be uniform
        ([1.0, 2.0], [2.0, 2.0, 1.0]),
        # non-monotone memory order, 5 devices, 3 blocks
        ([2.0, 1.0, 3.0], [3.0, 1.0, 2.0, 3.0, 2.0]),
    ],
)
def test_random_is_uniform_over_memory_feasible_maps(block_memory, device_memory):
    K, L = len(device_memory), len(block_memory)
    data = {
        "J": [[1.0] * L for _ in range(K)],
        "block_memory": block_memory,
        "device_memory": device_memory,
        "spectral_efficiency": [1.0] * K,
        "block_bits": 1.0,
        "bandwidth": 1.0,
    }
    maps = [tuple(m) for m in feasible_maps(data).tolist()]
    rng = np.random.default_rng(2024)
    n = 400 * len(maps)
    counts = Counter(tuple(solve(data, "random", seed=rng).assignment.tolist()) for _ in range(n))
    assert set(counts) == set(maps)  # every feasible map appears, nothing else
    p = chisquare([counts[m] for m in maps]).pvalue
    assert p > 1e-4, (p, counts)


def test_random_draws_only_memory_feasible_maps(feasible_case):
    case = feasible_case
    for seed in range(5):
        a = solve(case.instance, "random", seed=seed).assignment.tolist()
        assert all(
            case.data["block_memory"][i] <= case.data["device_memory"][k] for i, k in enumerate(a)
        )
        assert len(set(a)) == len(a)


def test_heuristic_latency_is_the_equal_bandwidth_latency(feasible_case):
    case = feasible_case
    T = case.instance.latency_matrix()
    L = case.instance.num_blocks
    for scheme in HEURISTICS:
        result = case.result(scheme)
        assert math.isclose(result.latency, T[result.assignment, np.arange(L)].max(), rel_tol=1e-12)
