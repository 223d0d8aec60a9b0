"""Seeded random instances shared by the test suite, and the fixtures that hand them out.

Instance kinds (:func:`make_instance`), all with ``K <= 6`` and ``L <= 4`` so the brute
force in :mod:`reference` stays cheap:

``monotone``
    The paper's setting: ``J = M d(l) / f_k`` with ``d`` increasing in depth, and
    ``block_memory`` non-decreasing.
``nonmonotone``
    Arbitrary ``J`` and ``block_memory`` (rows in no order).
``ties`` / ``ties-monotone``
    Small-integer ``J`` (unsorted / sorted rows), equal spectral efficiencies and duplicate
    devices: many optimal allocations.
``infeasible``
    A memory wall: for some depth group, fewer devices have the memory than blocks need it.
``square``
    ``K == L`` (every device is used), monotone or not.

Tests ask for a fixture by name and get parametrised over the matching cases (see
``pytest_generate_tests`` in ``tests/conftest.py``): ``any_case`` (all),
``monotone_case``, ``nonmonotone_case``, ``feasible_case``, ``infeasible_case``, their
``monotone_`` variants, and
``compute_ranked_case`` / ``channel_ranked_case`` (no two devices tie in strength).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from helpers.reference import brute_force_p1, brute_force_p2
from loladeft.allocation.registry import solve
from loladeft.system.instance import Instance

KINDS = ("monotone", "nonmonotone", "ties", "ties-monotone", "infeasible", "square")
SEEDS_PER_KIND = 20


def _shape(rng: np.random.Generator, *, square: bool = False) -> tuple[int, int]:
    L = int(rng.integers(1, 5))
    K = L if square else int(rng.integers(L, 7))
    return K, L


def _channel(rng: np.random.Generator, K: int, L: int) -> dict[str, Any]:
    """S, B, r with an upload term S / ((B/L) r) of 0.1–10 s, like the compute term."""
    return {
        "spectral_efficiency": rng.uniform(0.5, 8.0, K).tolist(),
        "block_bits": float(rng.uniform(0.5e6, 2e6)),
        "bandwidth": float(L * rng.uniform(0.2e6, 1e6)),
    }


def _monotone(rng: np.random.Generator, K: int, L: int) -> dict[str, Any]:
    d = np.cumsum(rng.uniform(0.2, 2.0, L))  # run time down to depth l, increasing (eq. 3)
    f = rng.uniform(0.5, 3.0, K)
    M = int(rng.integers(1, 4))
    J = (M * d)[None, :] / f[:, None]
    return {
        "J": J.tolist(),
        "block_memory": np.sort(rng.integers(1, 5, L)).astype(float).tolist(),
        "device_memory": rng.integers(1, 6, K).astype(float).tolist(),
        **_channel(rng, K, L),
    }


def _nonmonotone(rng: np.random.Generator, K: int, L: int) -> dict[str, Any]:
    return {
        "J": rng.uniform(0.0, 10.0, (K, L)).tolist(),
        "block_memory": rng.integers(1, 5, L).astype(float).tolist(),
        "device_memory": rng.integers(1, 6, K).astype(float).tolist(),
        **_channel(rng, K, L),
    }


def _ties(rng: np.random.Generator, K: int, L: int, *, monotone: bool) -> dict[str, Any]:
    J = rng.integers(0, 4, (K, L)).astype(float)
    mem = rng.integers(2, 5, K).astype(float)
    if K > 1:  # a duplicate device: identical row, memory and channel
        J[-1], mem[-1] = J[0], mem[0]
    b = rng.integers(1, 4, L).astype(float)
    if monotone:
        J, b = np.sort(J, axis=1), np.sort(b)
    data = {"J": J.tolist(), "block_memory": b.tolist(), "device_memory": mem.tolist()}
    data.update(_channel(rng, K, L))
    data["spectral_efficiency"] = [2.0] * K
    data["block_bits"], data["bandwidth"] = 1e6, L * 1e6  # upload term exactly 0.5 s
    return data


def _infeasible(rng: np.random.Generator, K: int, L: int) -> dict[str, Any]:
    """A memory wall: the ``j`` largest blocks need ``>= t``, only ``j - 1`` devices have it."""
    K, L = max(K, 2), max(L, 2)
    K = max(K, L)
    data = _monotone(rng, K, L) if rng.random() < 0.5 else _nonmonotone(rng, K, L)
    b = np.array(data["block_memory"])
    j = int(rng.integers(1, L + 1))
    t = np.sort(b)[::-1][j - 1]  # at least j blocks need memory >= t
    mem = rng.uniform(0.0, t, K) * 0.999  # every device below t ...
    mem[rng.choice(K, j - 1, replace=False)] = t + rng.uniform(0.0, 2.0, j - 1)  # ... but j-1
    data["device_memory"] = mem.tolist()
    return data


def make_instance(kind: str, seed: int) -> dict[str, Any]:
    """The instance-file mapping (plain lists) of kind ``kind`` for ``seed``."""
    rng = np.random.default_rng([KINDS.index(kind), seed])
    if kind == "square":
        K, L = _shape(rng, square=True)
        return (_monotone if seed % 2 else _nonmonotone)(rng, K, L)
    K, L = _shape(rng)
    if kind == "monotone":
        return _monotone(rng, K, L)
    if kind == "nonmonotone":
        return _nonmonotone(rng, K, L)
    if kind in ("ties", "ties-monotone"):
        return _ties(rng, K, L, monotone=kind == "ties-monotone")
    if kind == "infeasible":
        return _infeasible(rng, K, L)
    raise ValueError(kind)


def make_medium_instance(seed: int, *, monotone: bool) -> dict[str, Any]:
    """A larger instance (``K`` up to 40, ``L`` up to 10), beyond brute force: for
    cross-checks between exact schemes and local-optimality checks."""
    rng = np.random.default_rng([99, seed, monotone])
    L = int(rng.integers(3, 11))
    K = int(rng.integers(L, 41))
    data = (_monotone if monotone else _nonmonotone)(rng, K, L)
    if rng.random() < 0.5:  # ties: round J to a coarse grid
        data["J"] = np.round(np.array(data["J"]) * 2).tolist()
        if monotone:
            data["J"] = np.sort(data["J"], axis=1).tolist()
    return data


@dataclass(eq=False)
class Case:
    """One seeded instance, with its brute-force optima and cached solver results."""

    kind: str
    seed: int
    data: dict[str, Any]
    _results: dict[str, Any] = field(default_factory=dict, repr=False)

    @cached_property
    def instance(self) -> Instance:
        return Instance.from_mapping(self.data)

    @cached_property
    def p1(self) -> float | None:
        return brute_force_p1(self.data)

    @cached_property
    def p2(self) -> float | None:
        return brute_force_p2(self.data)

    def result(self, scheme: str):
        """``solve(instance, scheme, seed=0)``, computed once per case and scheme."""
        if scheme not in self._results:
            self._results[scheme] = solve(self.instance, scheme, seed=0)
        return self._results[scheme]

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.seed}"

    def __str__(self) -> str:
        return f"Case({self.id}, data={self.data})"


CASES = [
    Case(kind, seed, make_instance(kind, seed)) for kind in KINDS for seed in range(SEEDS_PER_KIND)
]
