"""Monte-Carlo evaluation of the schemes over the sweeps (paper Figs. 5, 6, 8).

Every round of a point is solved by every scheme on the *same* instance (common random
numbers), so per-round comparisons such as ``jbba <= ba`` hold round by round and the
differences between schemes have little Monte-Carlo noise.

Seeds: point ``i`` of experiment ``e`` draws its rounds from
``SeedSequence(seed, spawn_key=(e.key, i))`` (and the ``random`` scheme from a child of
it), so a point's numbers do not depend on the other points, on the number of worker
processes or on the order in which they finish.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from loladeft.allocation.registry import get_scheme, solve
from loladeft.experiments.statistics import robust_stats
from loladeft.experiments.sweeps import Experiment
from loladeft.system.scenario import Scenario

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True, eq=False)
class PointResult:
    """All rounds of one x value of one experiment.

    Attributes
    ----------
    experiment, index, x
        Which point.
    schemes
        Scheme names, the row order of the arrays.
    latency
        ``(S, R)`` round latency (eq. 8) per scheme and round; ``nan`` where the scheme
        found no memory-feasible allocation.
    compute_share
        ``(S, R)`` computation share ``J[k, l] / T`` of the device that sets the round
        latency (the rest is upload); ``nan`` where infeasible.
    solve_seconds
        Length-``S`` total solver time per scheme over the ``R`` rounds.
    memory_wall
        Length-``S`` count of rounds in which a memory-blind version of the scheme would
        have hit the memory wall (``extra["memory_wall"]`` of comp-aware / comm-aware;
        0 for schemes that do not report it).
    wall_seconds
        Wall time of the whole point.
    assignment, bandwidth
        ``(S, R, L)`` block assignments (-1 where infeasible) and ``(S, R, K)`` bandwidths
        (nan where infeasible), only with ``keep_allocations=True``.
    """

    experiment: str
    index: int
    x: float
    schemes: tuple[str, ...]
    latency: NDArray[np.float64]
    compute_share: NDArray[np.float64]
    solve_seconds: NDArray[np.float64]
    memory_wall: NDArray[np.int64]
    wall_seconds: float = 0.0
    assignment: NDArray[np.intp] | None = None
    bandwidth: NDArray[np.float64] | None = None

    @property
    def rounds(self) -> int:
        """``R``."""
        return self.latency.shape[1]

    def stats(self) -> list[SchemeStats]:
        """Mean, 95% confidence half-width, quartiles, heavy-tail flag
        (:mod:`~loladeft.experiments.statistics`) and counts per scheme (infeasible
        excluded)."""
        out = []
        for s, name in enumerate(self.schemes):
            ok = np.isfinite(self.latency[s])
            n = int(ok.sum())
            vals = self.latency[s, ok]
            mean = float(vals.mean()) if n else math.nan
            ci = float(Z95 * vals.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            share = float(self.compute_share[s, ok].mean()) if n else math.nan
            robust = robust_stats(vals)
            out.append(
                SchemeStats(
                    name,
                    mean,
                    ci,
                    self.rounds,
                    self.rounds - n,
                    share,
                    float(self.solve_seconds[s]),
                    int(self.memory_wall[s]),
                    robust.median_latency_s,
                    robust.q25_latency_s,
                    robust.q75_latency_s,
                    robust.tail_index,
                    robust.heavy_tail,
                )
            )
        return out


@dataclass(frozen=True)
class SchemeStats:
    """Summary of one scheme at one point."""

    scheme: str
    mean_latency_s: float
    ci95_s: float
    rounds: int
    infeasible_rounds: int
    compute_share: float
    solve_seconds: float
    memory_wall_rounds: int
    median_latency_s: float = math.nan
    q25_latency_s: float = math.nan
    q75_latency_s: float = math.nan
    tail_index: float = math.nan
    heavy_tail: bool = False


def point_seed(seed: int, experiment: Experiment, index: int) -> np.random.SeedSequence:
    """The seed sequence of point ``index`` of ``experiment`` (see the module docstring)."""
    return np.random.SeedSequence(seed, spawn_key=(experiment.key, index))


def simulate_point(
    scenario: Scenario,
    schemes: Sequence[str],
    rounds: int,
    seed: np.random.SeedSequence | int,
    *,
    experiment: str = "",
    index: int = 0,
    x: float = math.nan,
    keep_allocations: bool = False,
) -> PointResult:
    """Sample ``rounds`` rounds of ``scenario`` and solve each with every scheme.

    Parameters
    ----------
    scenario
        The point's scenario.
    schemes
        Names from :data:`loladeft.allocation.SCHEMES`.
    rounds
        Number of Monte-Carlo rounds ``R``.
    seed
        Seed sequence (or integer) of this point.
    keep_allocations
        Also return every round's assignment and bandwidth (for checks).
    """
    start = time.perf_counter()
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    round_ss, scheme_ss = ss.spawn(2)
    batch = scenario.sample(rounds, np.random.default_rng(round_ss))
    scheme_rng = np.random.default_rng(scheme_ss)
    S = len(schemes)
    latency = np.full((S, rounds), np.nan)
    share = np.full((S, rounds), np.nan)
    seconds = np.zeros(S)
    walls = np.zeros(S, dtype=np.int64)
    K, L = scenario.num_devices, scenario.num_blocks
    assign = np.full((S, rounds, L), -1, dtype=np.intp) if keep_allocations else None
    bw = np.full((S, rounds, K), np.nan) if keep_allocations else None
    # the equal-split rule of each scheme (Scenario.split_for); "active" is the plain instance
    rules = [scenario.split_for(n, joint=get_scheme(n).problem == "P2") for n in schemes]
    for i in range(rounds):
        insts = {rule: batch.instance(i, rule) for rule in dict.fromkeys(rules)}
        for s, name in enumerate(schemes):
            inst = insts[rules[s]]
            res = solve(inst, name, seed=scheme_rng)
            seconds[s] += res.solve_seconds
            if res.extra.get("memory_wall"):
                walls[s] += 1
            if not res.feasible:
                continue
            assert res.device_latency is not None and res.assignment is not None
            latency[s, i] = res.latency
            if assign is not None and bw is not None:
                assign[s, i] = res.assignment
                bw[s, i] = res.bandwidth
            k = int(np.argmax(res.device_latency))
            l = int(np.flatnonzero(res.assignment == k)[0])
            share[s, i] = inst.J[k, l] / res.device_latency[k]
    return PointResult(
        experiment,
        index,
        float(x),
        tuple(schemes),
        latency,
        share,
        seconds,
        walls,
        time.perf_counter() - start,
        assign,
        bw,
    )


@dataclass(frozen=True)
class PointTask:
    """One unit of work for the process pool."""

    experiment: Experiment
    index: int
    x: float
    scenario: Scenario
    schemes: tuple[str, ...]
    rounds: int
    seed: int

    def run(self) -> PointResult:
        """Simulate this point."""
        return simulate_point(
            self.scenario,
            self.schemes,
            self.rounds,
            point_seed(self.seed, self.experiment, self.index),
            experiment=self.experiment.name,
            index=self.index,
            x=self.x,
        )


def _run_task(task: PointTask) -> PointResult:
    return task.run()


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which terminates them (no traceback per worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def pool_size(workers: int, points: int) -> int:
    """Processes to start: ``workers``, but never more than there are points."""
    return max(1, min(workers, points))


@dataclass
class SweepResults:
    """Results of every point, grouped by experiment in x order."""

    points: dict[str, list[PointResult]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    workers: int = 1


def run_tasks(
    tasks: Sequence[PointTask],
    workers: int = 2,
    on_done: Callable[[PointResult], None] | None = None,
) -> SweepResults:
    """Run the tasks, across :func:`pool_size` processes when more than one, and collect the
    results.

    On ``KeyboardInterrupt`` (Ctrl-C) the worker processes, which ignore SIGINT, are
    terminated at once and the interrupt propagates: no point is waited for.
    """
    start = time.perf_counter()
    results: list[PointResult] = []
    procs = pool_size(workers, len(tasks))
    if procs <= 1:
        for task in tasks:
            res = task.run()
            results.append(res)
            if on_done:
                on_done(res)
    else:
        import multiprocessing

        # Heaviest points first (more devices, then more rounds) for a better balance.
        order = sorted(tasks, key=lambda t: -t.scenario.num_devices * t.rounds)
        pool = multiprocessing.get_context().Pool(procs, initializer=_ignore_sigint)
        try:
            for res in pool.imap_unordered(_run_task, order):
                results.append(res)
                if on_done:
                    on_done(res)
            pool.close()
        finally:
            pool.terminate()  # at once on an interrupt or error; a no-op wait otherwise
            pool.join()
    out = SweepResults(workers=procs)
    for res in sorted(results, key=lambda r: (r.experiment, r.index)):
        out.points.setdefault(res.experiment, []).append(res)
    out.wall_seconds = time.perf_counter() - start
    return out
