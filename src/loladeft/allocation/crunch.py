"""The paper's CRUNCH algorithm (Algorithm 2): scheme ``crunch``.

Cutting–RecoUNting–CHecking solves P3 (equivalently P1) on monotone instances, where every
row of the latency matrix ``T`` and the memory ``b(l)`` are non-decreasing in depth (eq. 10):

1. **Initialisation.** ``Q`` holds ``T[k, l]`` for memory-feasible pairs and 0 elsewhere
   (eq. 9 with ``T_th = inf``); ``s_k`` counts the non-zeros of row ``k`` (eq. 11).
2. **Cutting.** Remove the largest remaining element ``q_{k*, l*}`` (set it to 0), recording
   ``T_temp``. By eq. (10) a row's largest element is its rightmost non-zero, so only one
   value per row is looked at.
3. **Recounting.** ``s_{k*} -= 1`` and re-sort the counts, ``π``.
4. **Checking.** Proposition 1: the remaining pairs admit an allocation iff
   ``π(K - L + l) >= l`` for ``l = 1..L`` (eq. 12). If yes, cut again; if not, the cut
   element was indispensable: ``T_th = T_temp`` is optimal, and assignment (13) on the
   counts before that cut, ``α_{κ_π(K-L+l), l} = 1``, attains it.

This is the faithful reference implementation, kept as a benchmark baseline: up to ``K L``
cuts of ``O(K log K)`` each. :mod:`.bottleneck` reaches the same optimum in closed form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from loladeft.allocation.result import Solution, equal_split
from loladeft.exceptions import UnsupportedInstanceError
from loladeft.system.instance import Instance


def solve_crunch(instance: Instance, **_: Any) -> Solution | None:
    """Scheme ``crunch``: Algorithm 2 of the paper, on a monotone instance.

    Raises
    ------
    UnsupportedInstanceError
        If a row of ``J`` or ``block_memory`` decreases with depth: Proposition 1 does not
        hold there (use ``ba``, which is exact on any instance).
    """
    if not instance.is_monotone:
        raise UnsupportedInstanceError(
            "crunch: needs every row of J and block_memory non-decreasing in depth "
            "(paper eq. 10); use scheme 'ba', which is exact on any instance"
        )
    T = instance.latency_matrix()
    K, L = T.shape
    # Initialisation: the non-zeros of row k of Q are the blocks device k can hold, a prefix.
    s = np.searchsorted(instance.block_memory, instance.device_memory, side="right")
    if not proposition_1(s, L):
        return None
    rows = np.arange(K)
    cuts = 0
    while True:
        frontier = np.where(s > 0, T[rows, np.maximum(s - 1, 0)], -np.inf)  # Cutting
        k = int(np.argmax(frontier))
        s[k] -= 1  # Recounting
        cuts += 1
        if not proposition_1(s, L):  # Checking failed: the cut element is T_th
            s[k] += 1
            break
    return equal_split(instance, assignment_13(s, L), iterations=cuts)


def proposition_1(s: NDArray[np.integer], L: int) -> bool:
    """Proposition 1 (eq. 12): ``π(K - L + l) >= l`` for ``1 <= l <= L``, with ``π`` the
    counts ``s_k`` sorted ascending."""
    pi = np.sort(s)
    K = pi.size
    depth = np.arange(1, L + 1)
    return bool((pi[K - L + depth - 1] >= depth).all())


def assignment_13(s: NDArray[np.integer], L: int) -> NDArray[np.intp]:
    """Assignment (13): block ``l`` goes to ``κ_π(K-L+l)``, the device with the
    ``(K-L+l)``-th smallest count."""
    kappa = np.argsort(s, kind="stable")
    K = kappa.size
    return kappa[K - L + np.arange(L)].astype(np.intp)
