"""Multi-block devices (issue 13): ``ba``, ``jbba`` and ``milp`` with ``max_blocks_per_device
> 1`` against brute force over every allocation, on seeded small instances (K < L, tight
memory, non-monotone J, extra block memory); Instance validation of the two new keys; and
the paper's model unchanged at the default.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest

from loladeft.allocation.jbba import equalized_deadline
from loladeft.allocation.multiblock import cover_assignment, cover_of
from loladeft.allocation.multiblock_milp import solve_jbba_milp
from loladeft.allocation.registry import SCHEMES, solve
from loladeft.exceptions import InvalidInstanceError, UnsupportedInstanceError
from loladeft.system.instance import Instance, check_allocation

REPO = Path(__file__).resolve().parents[2]


def make_instance(seed: int, K: int, L: int, *, m: int, e: float, kind: str) -> Instance:
    """A small random instance. ``kind``: ``monotone`` (the paper's setting), ``nonmonotone``
    (J and b shuffled per row), ``tight`` (memory near the deepest blocks' needs)."""
    rng = np.random.default_rng(seed)
    d = np.sort(rng.uniform(1.0, 5.0, L))
    f = rng.uniform(0.5, 1.0, K)
    J = d[None, :] / f[:, None]
    b = np.sort(rng.uniform(1.0, 3.0, L))
    mem = rng.uniform(1.5, 4.0, K)
    if kind == "nonmonotone":
        J = np.array([rng.permutation(row) for row in J])
        b = rng.permutation(b)
    elif kind == "tight":
        mem = rng.uniform(b[0], b[-1] + 0.3, K)
    return Instance(
        J=J,
        block_memory=b,
        device_memory=mem,
        spectral_efficiency=rng.uniform(0.3, 3.0, K),
        block_bits=float(rng.uniform(0.5e6, 4e6)),
        bandwidth=1e6,
        max_blocks_per_device=m,
        extra_block_memory=e,
    )


@dataclass
class Case:
    instance: Instance
    label: str

    def __repr__(self) -> str:
        return self.label

    @cached_property
    def brute(self) -> tuple[float | None, float | None]:
        """(P1', P2') optima over every allocation, ``None`` when none is feasible."""
        inst = self.instance
        K, L = inst.J.shape
        T = inst.latency_matrix()
        best1 = best2 = math.inf
        for a in itertools.product(range(K), repeat=L):
            a = np.array(a)
            level, count = cover_of(a, K)
            used = np.flatnonzero(count)
            if count.max() > inst.max_blocks_per_device:
                continue
            need = inst.block_memory[level[used]] + (count[used] - 1) * inst.extra_block_memory
            if (need > inst.device_memory[used]).any():
                continue
            best1 = min(best1, float(T[used, level[used]].max()))
            r_eff = inst.spectral_efficiency[used] / count[used]
            root = equalized_deadline(
                inst.J[used, level[used]], r_eff, inst.block_bits, inst.bandwidth
            )
            best2 = min(best2, root)
        return (None, None) if math.isinf(best1) else (best1, best2)


def _cases() -> list[Case]:
    out = []
    seed = 0
    for kind in ("monotone", "nonmonotone", "tight"):
        for K, L in ((2, 4), (3, 5), (4, 4), (3, 6), (5, 3)):
            for m, e in ((2, 0.0), (3, 0.0), (2, 0.4), (3, 0.25)):
                if K * m < L:
                    continue
                for _ in range(2):
                    seed += 1
                    label = f"{kind}-K{K}-L{L}-m{m}-e{e}-s{seed}"
                    out.append(Case(make_instance(seed, K, L, m=m, e=e, kind=kind), label))
    return out


CASES = _cases()
RTOL = 1e-9
MILP_RTOL = 1e-6  # HiGHS tolerances


def _check(case: Case, result) -> None:
    check_allocation(case.instance, result.assignment, result.bandwidth)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_milp_p1_matches_brute_force(case):
    p1, _ = case.brute
    result = solve(case.instance, "milp")
    assert result.feasible is (p1 is not None)
    if p1 is not None:
        _check(case, result)
        assert math.isclose(result.latency, p1, rel_tol=RTOL), (result.latency, p1)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_milp_p2_reference_matches_brute_force(case):
    _, p2 = case.brute
    solution = solve_jbba_milp(case.instance)
    assert (solution is not None) is (p2 is not None)
    if p2 is not None:
        check_allocation(case.instance, solution.assignment, solution.bandwidth)
        latency = case.instance.device_latency(solution.assignment, solution.bandwidth).max()
        assert math.isclose(latency, p2, rel_tol=MILP_RTOL), (latency, p2)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_ba_multiblock_against_brute_force(case):
    """Feasibility always agrees; the latency is the optimum where ``ba`` claims exactness
    (monotone, e = 0: the theorem in allocation/multiblock.py), never below it otherwise."""
    p1, _ = case.brute
    result = solve(case.instance, "ba")
    assert result.feasible is (p1 is not None)
    if p1 is None:
        assert "block" in result.reason
        return
    _check(case, result)
    inst = case.instance
    claimed = inst.is_monotone and inst.extra_block_memory == 0
    if claimed:
        assert result.extra["exact"] is True
    if result.extra["exact"]:  # the theorem, or the MILP fallback
        assert math.isclose(result.latency, p1, rel_tol=RTOL), (result.latency, p1)
    else:
        assert result.latency >= p1 * (1 - RTOL)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_jbba_multiblock_against_brute_force(case):
    """Feasibility agrees; never below the optimum, never above ``ba`` (whose allocation
    is its starting point); says it is not exact."""
    _, p2 = case.brute
    result = solve(case.instance, "jbba")
    assert result.feasible is (p2 is not None)
    if p2 is None:
        return
    _check(case, result)
    assert result.extra["exact"] is False
    assert result.latency >= p2 * (1 - RTOL)
    assert result.latency <= solve(case.instance, "ba").latency * (1 + RTOL)


def test_jbba_multiblock_gap_is_small_on_monotone():
    """The greedy P2' method is within 5% of the optimum on average over the monotone cases
    (measured mean and worst are in the benchmark)."""
    gaps = []
    for case in CASES:
        _, p2 = case.brute
        if p2 is None or not case.instance.is_monotone:
            continue
        gaps.append(solve(case.instance, "jbba").latency / p2 - 1)
    assert gaps and float(np.mean(gaps)) < 0.05, gaps


def test_cover_assignment_round_trips():
    rng = np.random.default_rng(3)
    for _ in range(50):
        K, L = 4, 9
        a = rng.integers(0, K, L)
        level, count = cover_of(a, K)
        b = cover_assignment(cover_of(a, K), L)
        assert np.array_equal(cover_of(b, K).level, level)
        assert np.array_equal(cover_of(b, K).count, count)


def test_hand_worked_two_devices_four_blocks():
    """K = 2 equal devices, L = 4, m = 2, e = 0: each device carries two blocks. The best
    P1' is both devices at depths 4 and 3 (or 4 and 2...): the deeper one must hold depth 4,
    the other at best depth 2, T = J[., 4] + SL/(B r)."""
    J = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    inst = Instance(J, [1, 1, 1, 1], [1, 1], [1.0, 2.0], 1e6, 4e6, max_blocks_per_device=2)
    result = solve(inst, "ba")
    # device 1 (better channel) can carry depth 4: 4 + 1e6*4/(4e6*2) = 4.5; device 0 then
    # carries one of depths 1-3 plus one more: at best its deepest is depth 2: 2 + 1 = 3.
    assert result.latency == pytest.approx(4.5)
    assert sorted(np.bincount(result.assignment, minlength=2)) == [2, 2]


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s not in ("jbba", "ba", "milp")])
def test_other_schemes_refuse_multiblock(scheme):
    inst = make_instance(1, 3, 4, m=2, e=0.0, kind="monotone")
    with pytest.raises(UnsupportedInstanceError, match="max_blocks_per_device"):
        solve(inst, scheme)


# -- Instance ------------------------------------------------------------------------------


def _example() -> dict:
    return json.loads((REPO / "examples" / "paper-example.json").read_text())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_blocks_per_device", 0, "must be >= 1"),
        ("max_blocks_per_device", -2, "must be >= 1"),
        ("max_blocks_per_device", 1.5, "integer"),
        ("max_blocks_per_device", "2", "integer"),
        ("max_blocks_per_device", True, "integer"),
        ("max_blocks_per_device", None, "integer"),
        ("max_blocks_per_device", float("inf"), "integer"),
        ("extra_block_memory", -0.1, "must be >= 0"),
        ("extra_block_memory", float("nan"), "finite"),
        ("extra_block_memory", "1", "number"),
        ("extra_block_memory", False, "number"),
        ("extra_block_memory", [1], "number"),
    ],
)
def test_instance_rejects_bad_multiblock_keys(key, value, message):
    data = _example() | {key: value}
    with pytest.raises(InvalidInstanceError, match=message) as info:
        Instance.from_mapping(data)
    assert str(info.value).startswith(f"{key}: ")
    assert "\n" not in str(info.value)


def test_instance_multiblock_keys_parse_and_round_trip():
    data = _example() | {"max_blocks_per_device": 3, "extra_block_memory": 0.5}
    inst = Instance.from_mapping(data)
    assert inst.max_blocks_per_device == 3 and inst.extra_block_memory == 0.5
    again = Instance.from_mapping(inst.to_dict())
    assert again.max_blocks_per_device == 3 and again.extra_block_memory == 0.5
    assert Instance.from_mapping(data | {"max_blocks_per_device": 2.0}).max_blocks_per_device == 2


def test_missing_keys_mean_the_papers_model():
    inst = Instance.from_mapping(_example())
    assert inst.max_blocks_per_device == 1 and inst.extra_block_memory == 0.0
    assert "max_blocks_per_device" not in inst.to_dict()
    data = _example()
    data["J"] = data["J"][:2]  # L = 4 > K = 2
    for key in ("device_memory", "spectral_efficiency"):
        data[key] = data[key][:2]
    with pytest.raises(InvalidInstanceError, match=r"L > K"):
        Instance.from_mapping(data)
    assert Instance.from_mapping(data | {"max_blocks_per_device": 2}).num_devices == 2
    one = {k: data[k][:1] for k in ("J", "device_memory", "spectral_efficiency")}
    with pytest.raises(InvalidInstanceError, match="carry at most 2"):
        Instance.from_mapping(data | one | {"max_blocks_per_device": 2})


def test_default_setting_matches_single_block_schemes():
    """m = 1 written explicitly is the paper's model: same answers as without the key."""
    data = _example()
    for scheme in ("jbba", "ba", "milp", "crunch"):
        a = solve(data, scheme)
        b = solve(data | {"max_blocks_per_device": 1, "extra_block_memory": 0.7}, scheme)
        assert a.latency == b.latency and np.array_equal(a.assignment, b.assignment)


def test_multiblock_with_m_above_l_still_finds_the_single_block_optimum_or_better():
    data = _example()
    single = solve(data, "jbba")
    multi = solve(data | {"max_blocks_per_device": 2}, "jbba")
    assert multi.latency <= single.latency * (1 + 1e-12)
