"""The result type every scheme returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from loladeft.system.instance import Instance


@dataclass(frozen=True, eq=False)
class AllocationResult:
    """Outcome of one scheme on one instance.

    Attributes
    ----------
    scheme
        Registered name of the scheme that produced it.
    feasible
        Whether an allocation satisfying C1–C3 was found. ``False`` only when none exists
        (the memory wall): every scheme is memory-aware.
    latency
        Round latency ``T`` (eq. 8) of the returned allocation, recomputed from
        ``assignment`` and ``bandwidth``; ``nan`` when infeasible.
    assignment
        Length-``L`` device index (row of ``J``) of each block, depth order; ``None`` when
        infeasible.
    bandwidth
        Length-``K`` bandwidth ``B_k`` in Hz (0 for unused devices); ``None`` when infeasible.
    device_latency
        Length-``K`` per-device latency ``T_k`` (eq. 7; 0 for unused devices); ``None``
        when infeasible.
    solve_seconds
        Wall time of the solver, validation excluded.
    iterations
        Iterations of iterative schemes (CRUNCH cuts, dual-ascent steps, threshold
        searches...), ``None`` for direct methods.
    reason
        Why the instance is infeasible, naming the depth where blocks cannot be placed.
    extra
        Scheme-specific diagnostics, e.g. ``dual_gap`` for ``jbba-dual`` or
        ``memory_wall`` for the memory-blind baselines.
    """

    scheme: str
    feasible: bool
    latency: float
    assignment: NDArray[np.intp] | None
    bandwidth: NDArray[np.float64] | None
    device_latency: NDArray[np.float64] | None
    solve_seconds: float = 0.0
    iterations: int | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the keys of the ``loladeft solve --json`` contract."""

        def _list(a: NDArray[Any] | None) -> list[Any] | None:
            return None if a is None else a.tolist()

        out: dict[str, Any] = {
            "scheme": self.scheme,
            "feasible": self.feasible,
            "latency": self.latency if self.feasible else None,
            "assignment": _list(self.assignment),
            "bandwidth": _list(self.bandwidth),
            "device_latency": _list(self.device_latency),
            "solve_seconds": self.solve_seconds,
            "iterations": self.iterations,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        out.update(self.extra)
        return out


class Solution(NamedTuple):
    """What a scheme function returns when it finds an allocation (``None`` when none
    exists); :func:`~loladeft.allocation.solve` turns it into an :class:`AllocationResult`."""

    assignment: NDArray[np.intp]
    bandwidth: NDArray[np.float64]
    iterations: int | None = None
    extra: dict[str, Any] = {}  # noqa: RUF012 - NamedTuple default, never mutated


def equal_split(instance: Instance, assignment: NDArray[np.intp], **kwargs: Any) -> Solution:
    """Problem P1's bandwidth: ``B/L`` to each scheduled device, 0 to the others."""
    bandwidth = np.zeros(instance.num_devices)
    bandwidth[assignment] = instance.equal_bandwidth()
    return Solution(np.asarray(assignment, dtype=np.intp), bandwidth, **kwargs)
