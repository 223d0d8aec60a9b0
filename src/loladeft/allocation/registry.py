"""Scheme registry and :func:`solve`, the one entry point every tool uses.

A scheme is a function ``(instance, rng, **options) -> Solution | None`` that returns
``None`` exactly when no memory-feasible allocation with a finite latency exists.
:func:`solve` times it (the solve only: its module is imported before the clock starts),
checks the answer against C1–C3, the budget and a finite latency (:mod:`.validate`),
recomputes the latency from the returned assignment and bandwidth (eqs. 7–8), explains
infeasibility, and wraps everything in an :class:`AllocationResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import numpy as np

from loladeft.allocation.result import AllocationResult, Solution
from loladeft.allocation.validate import infeasibility_reason, validate_answer
from loladeft.exceptions import FieldError, UnknownSchemeError
from loladeft.system.instance import Instance

SchemeFunction = Callable[..., Solution | None]


@dataclass(frozen=True)
class Scheme:
    """A registered scheme: where its function lives and what it solves."""

    name: str
    target: str  # "module:function", imported on first use
    problem: str  # "P1" (equal bandwidth B/L) or "P2" (joint bandwidth)
    exact: bool
    summary: str

    @property
    def function(self) -> SchemeFunction:
        module, func = self.target.split(":")
        return getattr(import_module(f"loladeft.allocation.{module}"), func)


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme(
            "jbba",
            "jbba:solve_jbba",
            "P2",
            True,
            "exact joint bandwidth-and-block allocation (parametric assignment)",
        ),
        Scheme(
            "jbba-dual",
            "dual:solve_jbba_dual",
            "P2",
            False,
            "paper's Algorithm 3: dual ascent, CRUNCH-sparsified Hungarian, Lemma 1",
        ),
        Scheme(
            "ba",
            "bottleneck:solve_ba",
            "P1",
            True,
            "exact block allocation with equal bandwidth B/L (bottleneck assignment)",
        ),
        Scheme(
            "crunch",
            "crunch:solve_crunch",
            "P1",
            True,
            "paper's Algorithm 2 (CRUNCH), monotone instances only",
        ),
        Scheme(
            "ba-hungarian",
            "hungarian:solve_ba_hungarian",
            "P1",
            True,
            "paper's conventional method: linear threshold search + Hungarian test",
        ),
        Scheme(
            "milp",
            "milp:solve_milp",
            "P1",
            True,
            "P1 as a MILP through scipy.optimize.milp (HiGHS), for verification",
        ),
        Scheme(
            "comp-aware",
            "baselines:solve_comp_aware",
            "P1",
            False,
            "fastest devices get the deepest blocks, equal bandwidth",
        ),
        Scheme(
            "comm-aware",
            "baselines:solve_comm_aware",
            "P1",
            False,
            "best-channel devices get the deepest blocks, equal bandwidth",
        ),
        Scheme(
            "random",
            "baselines:solve_random",
            "P1",
            False,
            "uniformly random memory-feasible assignment, equal bandwidth",
        ),
    )
}


def get_scheme(name: str) -> Scheme:
    """Look up a scheme by name, with a helpful error."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnknownSchemeError(
            f"scheme: unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}"
        ) from None


def solve(
    instance: Instance | Mapping[str, Any],
    scheme: str = "jbba",
    *,
    seed: int | np.random.Generator | None = None,
    **options: Any,
) -> AllocationResult:
    """Allocate the ``L`` blocks (and the uplink bandwidth) of one round.

    Parameters
    ----------
    instance
        An :class:`~loladeft.system.Instance` or a mapping with the instance-file keys
        (lists or numpy arrays).
    scheme
        A name from :data:`SCHEMES` (``loladeft solve --help`` lists them).
    seed
        Seed or generator for randomised schemes (``random``); ignored by the others.
    **options
        Passed to the scheme function (e.g. ``max_iter`` for ``jbba-dual``).

    Returns
    -------
    AllocationResult
        ``latency`` is recomputed from the returned assignment and bandwidth with eqs.
        (7)–(8), so it is the true round latency of that allocation.

    Raises
    ------
    InvalidInstanceError
        Malformed instance. UnknownSchemeError: unknown scheme name.
    UnsupportedInstanceError
        The scheme does not accept this instance (``crunch`` on a non-monotone one, an
        instance beyond ``milp``'s size limit; any scheme but ``jbba``, ``ba`` and ``milp``
        with ``max_blocks_per_device > 1``).
    FieldError
        A negative ``seed``.
    AllocationError
        The scheme returned an allocation that breaks C1–C3 or the budget (a defect of the
        scheme: every answer is checked, :func:`.validate.validate_answer`).

    Notes
    -----
    A feasible result always has a finite latency. An answer that keeps C1–C3 but whose
    latency overflows (an upload ``S / (B_k r_k)`` beyond the doubles) is reported
    infeasible, with a ``reason`` naming the device; so is a scheme that finds nothing, with
    the memory wall or the overflowing uploads as its reason.
    """
    spec = get_scheme(scheme)
    inst = instance if isinstance(instance, Instance) else Instance.from_mapping(instance)
    rng = _generator(seed)
    function, explain = _scheme_for(spec, inst)  # imported here, outside the timed region
    start = time.perf_counter()
    solution = function(inst, rng=rng, **options)
    seconds = time.perf_counter() - start
    if solution is None:
        return _infeasible(spec, seconds, explain(inst))
    assignment, bandwidth, device_latency, reason = validate_answer(inst, spec.name, solution)
    if reason is not None:
        return _infeasible(spec, seconds, reason)
    return AllocationResult(
        scheme=spec.name,
        feasible=True,
        latency=float(device_latency.max()),
        assignment=assignment,
        bandwidth=bandwidth,
        device_latency=device_latency,
        solve_seconds=seconds,
        iterations=solution.iterations,
        extra=dict(solution.extra),
    )


def _scheme_for(spec: Scheme, inst: Instance) -> tuple[SchemeFunction, Callable[[Instance], str]]:
    """The scheme function and infeasibility explanation for this instance: the paper's,
    or with ``max_blocks_per_device > 1`` those of :mod:`.multiblock` (issue 13)."""
    if inst.max_blocks_per_device == 1:
        return spec.function, lambda i: infeasibility_reason(i, spec.problem)
    from loladeft.allocation.multiblock import multiblock_infeasibility, multiblock_scheme

    def explain(i: Instance) -> str:
        return multiblock_infeasibility(i) or "no memory-feasible allocation"

    return multiblock_scheme(spec.name), explain


def _generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """``numpy.random.default_rng(seed)``, refusing a negative seed in one line."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed < 0:
        raise FieldError("seed", f"must be >= 0, got {seed}")
    return np.random.default_rng(seed)


def _infeasible(spec: Scheme, seconds: float, reason: str) -> AllocationResult:
    return AllocationResult(
        scheme=spec.name,
        feasible=False,
        latency=float("nan"),
        assignment=None,
        bandwidth=None,
        device_latency=None,
        solve_seconds=seconds,
        reason=reason,
    )
