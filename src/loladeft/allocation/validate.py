"""What :func:`loladeft.solve` checks before it calls a scheme's answer feasible.

A scheme returns an assignment and a bandwidth split (a :class:`.Solution`) or ``None``.
:func:`validate_answer` holds that answer to every rule of a valid allocation, through
:func:`loladeft.system.instance.check_allocation` (the one place the rules live: C1, C2,
C3, the bandwidth budget and a finite latency):

* an answer that breaks C1–C3 or the budget (shape, index range, a device used twice, a
  block on a device without the memory, a non-finite, negative or over-budget bandwidth) is
  a defect of the scheme: :class:`~loladeft.exceptions.AllocationError`, naming the scheme
  and the rule;
* an answer that keeps the rules but whose latency overflows a double (an upload
  ``S / (B_k r_k)`` beyond ``~1.8e308`` s) cannot be called feasible either: the result is
  infeasible, and its ``reason`` names the device and the numbers.

:func:`infeasibility_reason` explains a ``None`` answer: the memory wall of C3 when there
is one (:func:`.memory.memory_infeasibility`), else uploads that overflow at the largest
bandwidth the scheme may give a device (``B/L`` for P1, ``B`` for P2).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from loladeft.allocation.memory import memory_infeasibility
from loladeft.allocation.result import Solution
from loladeft.exceptions import AllocationError
from loladeft.system.instance import Instance, LatencyOverflowError, check_allocation
from loladeft.system.latency import upload_latency

#: Relative slack on ``sum B_k <= B``: the equalising split of P2 is computed in floats.
BUDGET_RTOL = 1e-9


class Verdict(NamedTuple):
    """A checked answer: its arrays, the per-device latency (eq. 7), and ``reason`` when
    the answer keeps C1–C3 but has no finite latency (then it is not feasible)."""

    assignment: NDArray[np.intp]
    bandwidth: NDArray[np.float64]
    device_latency: NDArray[np.float64]
    reason: str | None


def validate_answer(instance: Instance, scheme: str, solution: Solution) -> Verdict:
    """Check a scheme's answer against every rule of a valid allocation.

    Raises
    ------
    AllocationError
        The answer breaks C1–C3 or the bandwidth budget (a defect of ``scheme``).
    """
    assignment = np.asarray(solution.assignment)
    bandwidth = np.asarray(solution.bandwidth, dtype=float)
    try:
        check_allocation(instance, assignment, bandwidth, rtol=BUDGET_RTOL)
    except LatencyOverflowError as exc:
        detail = str(exc).removeprefix("latency: ")
        reason = f"{scheme} found no allocation with a finite latency; {detail}"
        return Verdict(
            assignment, bandwidth, instance.device_latency(assignment, bandwidth), reason
        )
    except ValueError as exc:
        raise AllocationError(f"scheme {scheme} returned an invalid allocation: {exc}") from None
    assignment = assignment.astype(np.intp, copy=False)
    return Verdict(assignment, bandwidth, instance.device_latency(assignment, bandwidth), None)


def infeasibility_reason(instance: Instance, problem: str) -> str:
    """Why a scheme of ``problem`` (``"P1"`` or ``"P2"``) found no allocation."""
    memory = memory_infeasibility(instance)
    if memory is not None:
        return memory
    K, L = instance.num_devices, instance.num_blocks
    bandwidth = instance.equal_bandwidth() if problem == "P1" else instance.bandwidth
    upload = upload_latency(instance.block_bits, bandwidth, instance.spectral_efficiency)
    with np.errstate(over="ignore"):
        usable = np.isfinite(instance.J + upload[:, None]) & instance.memory_ok
    dead = np.flatnonzero(~usable.any(axis=1))
    share = "B/L" if problem == "P1" else "B"
    if dead.size:
        k = int(dead[np.argmin(instance.spectral_efficiency[dead])])
        return (
            f"the upload latency S / (B_k r_k) overflows on {dead.size} of {K} devices even "
            f"with B_k = {share} = {bandwidth:.6g} Hz (block_bits = {instance.block_bits:.6g}, "
            f"spectral_efficiency down to {instance.spectral_efficiency[k]:.6g} at device {k}); "
            f"the other {K - dead.size} cannot take the {L} blocks"
        )
    return f"no allocation has a finite latency J + S / (B_k r_k) with B_k <= {share}"
