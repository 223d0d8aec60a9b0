"""The result type every scheme returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


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
