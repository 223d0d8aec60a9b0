"""The paper's benchmark schemes (Sec. VI-A-4) and a random allocation, equal bandwidth.

``comp-aware`` activates the devices with the best computation, ``comm-aware`` those with
the best channels, and both give the most demanding blocks to the strongest devices.
``random`` draws an allocation uniformly among the memory-feasible ones.

Memory rule (documented contract)
---------------------------------
Blocks are placed one by one from the most demanding: largest memory need ``b(l)`` first,
deepest first among ties — in the paper's setting (``b`` increasing in depth) simply deepest
first. Each block goes to the strongest unused device *whose memory holds it*; devices that
cannot hold it are skipped for that block but stay available for shallower ones. Because the
sets of devices able to hold each block are nested in this order, the greedy pass places
every block whenever any memory-feasible allocation exists, so these schemes report
infeasible only when none does.

``extra["memory_wall"]`` records whether the memory-blind version of the scheme — the ``L``
strongest devices, strongest to deepest, memory ignored — would have hit the memory wall.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from loladeft.allocation.memory import blocks_by_memory
from loladeft.allocation.result import Solution, equal_split
from loladeft.system.instance import Instance


def solve_comp_aware(instance: Instance, **_: Any) -> Solution | None:
    """Scheme ``comp-aware``: strongest computation first (smallest total ``Σ_l J[k, l]``,
    i.e. largest ``f_k`` when ``J = M d(l) / f_k``)."""
    with np.errstate(over="ignore"):  # a total beyond the doubles ranks last, as inf
        total = instance.J.sum(axis=1)
    return _strongest_first(instance, np.argsort(total, kind="stable"))


def solve_comm_aware(instance: Instance, **_: Any) -> Solution | None:
    """Scheme ``comm-aware``: best channel first (largest spectral efficiency ``r_k``)."""
    return _strongest_first(instance, np.argsort(-instance.spectral_efficiency, kind="stable"))


def solve_random(instance: Instance, *, rng: np.random.Generator, **_: Any) -> Solution | None:
    """Scheme ``random``: a uniformly random memory-feasible allocation.

    Blocks are drawn in the memory order of the module docstring, each uniformly among the
    unused devices that hold it. With nested device sets the number of choices at each step
    does not depend on earlier choices, so every feasible allocation has the same probability.
    """
    L = instance.num_blocks
    used = np.zeros(instance.num_devices, dtype=bool)
    assignment = np.empty(L, dtype=np.intp)
    for l in blocks_by_memory(instance):
        free = np.flatnonzero(instance.memory_ok[:, l] & ~used)
        if free.size == 0:
            return None
        assignment[l] = free[rng.integers(free.size)]
        used[assignment[l]] = True
    return equal_split(instance, assignment)


def _strongest_first(instance: Instance, ranking: NDArray[np.intp]) -> Solution | None:
    """Greedy of the module docstring; ``ranking`` lists devices strongest first."""
    L = instance.num_blocks
    order = blocks_by_memory(instance)
    ok = instance.memory_ok[ranking]  # rows in rank order
    blind = np.empty(L, dtype=np.intp)
    blind[order] = ranking[:L]
    memory_wall = bool((instance.block_memory > instance.device_memory[blind]).any())
    used = np.zeros(ranking.size, dtype=bool)
    assignment = np.empty(L, dtype=np.intp)
    for l in order:
        free = np.flatnonzero(ok[:, l] & ~used)
        if free.size == 0:
            return None
        used[free[0]] = True
        assignment[l] = ranking[free[0]]
    return equal_split(instance, assignment, extra={"memory_wall": memory_wall})
