"""Benchmark of the multi-block schedulers (issue 13): solve time of the fast methods against
the exact MILP reference, and their gap on seeded instance families.

Run from the repository root::

    .venv/bin/python benchmarks/bench_multiblock.py              # timing and gaps
    .venv/bin/python benchmarks/bench_multiblock.py --quick      # fewer seeds, 20 s limit

*Timing.* ``K x L`` = 20x32, 100x32 and 1000x96, paper-like monotone instances (as in
``bench_solvers.py``: ``J = 4 d(l) / f_k``, ``d`` 1x -> 2x with depth, memory 1 -> 4 GB with
depth, devices U[1, 6] GB, Rayleigh channels at 10 dB, B = 100 MHz) with
``max_blocks_per_device = 4`` and ``extra_block_memory`` 0 and 0.05 GB. The fast methods are
``ba`` (P1') and ``jbba`` (P2') through :func:`loladeft.solve` (median of 3 after a warm-up);
the references are ``milp`` (P1') and :func:`solve_jbba_milp` (P2'), each in a child process
killed after ``--limit`` seconds (reported as ``>limit``).

*Gap.* ``latency / optimum - 1`` of ``ba`` and ``jbba`` against the references on seeded
families (monotone and non-monotone ``J``/``b``, ``e`` = 0 and > 0, ``K < L`` and ``K >= L``):
mean and worst per family.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(20, 32), (100, 32), (1000, 96)]
BLOCKS_PER_DEVICE = 4


def paper_like(K: int, L: int, extra: float, seed: int = 0):
    """A paper-like monotone multi-block instance (module docstring)."""
    from loladeft import Instance

    rng = np.random.default_rng([seed, K, L])
    d = np.linspace(1.0, 2.0, L)
    f = rng.uniform(0.5, 1.0, K)
    return Instance(
        J=4 * d[None, :] / f[:, None],
        block_memory=np.linspace(1.0, 4.0, L),
        device_memory=rng.uniform(1.0, 6.0, K),
        spectral_efficiency=np.log2(1 + 10.0 * rng.exponential(size=K)),
        block_bits=24_576 * 32,
        bandwidth=100e6,
        max_blocks_per_device=BLOCKS_PER_DEVICE,
        extra_block_memory=extra,
    )


def family(kind: str, K: int, L: int, m: int, extra: float, seed: int):
    """Seeded small instance of a gap family (``kind``: monotone / nonmonotone / tight)."""
    from loladeft import Instance

    rng = np.random.default_rng([seed, K, L, m, int(extra * 100), len(kind)])
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
        extra_block_memory=extra,
    )


def reference_worker(problem: str, K: int, L: int, extra: float, limit: float) -> None:
    """Child process: solve one reference, print {"seconds", "latency"} as JSON."""
    from loladeft import solve
    from loladeft.allocation.multiblock_milp import solve_jbba_milp

    inst = paper_like(K, L, extra)
    t0 = time.perf_counter()
    if problem == "P1":
        latency = solve(inst, "milp", time_limit=limit).latency
    else:
        sol = solve_jbba_milp(inst, time_limit=limit)
        latency = float(inst.device_latency(sol.assignment, sol.bandwidth).max())
    print(json.dumps({"seconds": time.perf_counter() - t0, "latency": latency}))


def time_fast(scheme: str, inst) -> tuple[float, float, bool]:
    from loladeft import solve

    solve(inst, scheme)  # warm-up
    runs = [solve(inst, scheme) for _ in range(3)]
    return (
        statistics.median(r.solve_seconds for r in runs),
        runs[0].latency,
        bool(runs[0].extra["exact"]),
    )


def time_reference(problem: str, K: int, L: int, extra: float, limit: float) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", problem, str(K), str(L), str(extra), str(limit)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 5, check=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError):
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing(limit: float) -> None:
    print(
        f"Solve time, fast method vs exact reference (m = {BLOCKS_PER_DEVICE}, limit {limit:g} s)"
    )
    head = f"{'K x L':>10} {'e':>5} {'prob':>4} {'fast s':>9} {'exact?':>6} {'ref s':>9} {'gap':>8}"
    print(head)
    for K, L in SIZES:
        for extra in (0.0, 0.05):
            inst = paper_like(K, L, extra)
            for problem, scheme in (("P1", "ba"), ("P2", "jbba")):
                seconds, latency, exact = time_fast(scheme, inst)
                ref = time_reference(problem, K, L, extra, limit)
                ref_s = f">{limit:g}" if ref is None else f"{ref['seconds']:.3f}"
                gap = "-" if ref is None else f"{latency / ref['latency'] - 1:.2e}"
                print(
                    f"{f'{K}x{L}':>10} {extra:>5g} {problem:>4} {seconds:>9.4f} "
                    f"{exact!s:>6} {ref_s:>9} {gap:>8}",
                    flush=True,
                )


def gaps(seeds: int) -> None:
    from loladeft import solve
    from loladeft.allocation.multiblock_milp import solve_jbba_milp

    print(f"\nGap latency/optimum - 1 over {seeds} seeds per family (mean, worst)")
    print(f"{'family':>34} {'ba mean':>9} {'ba worst':>9} {'jbba mean':>10} {'jbba worst':>10}")
    for kind in ("monotone", "nonmonotone", "tight"):
        for K, L, m in ((4, 8, 3), (8, 12, 2), (12, 16, 2), (16, 12, 2)):
            for extra in (0.0, 0.2):
                g1, g2 = [], []
                for seed in range(seeds):
                    inst = family(kind, K, L, m, extra, seed)
                    p1 = solve(inst, "milp")
                    if not p1.feasible:
                        continue
                    ref = solve_jbba_milp(inst)
                    p2 = float(inst.device_latency(ref.assignment, ref.bandwidth).max())
                    g1.append(solve(inst, "ba").latency / p1.latency - 1)
                    g2.append(solve(inst, "jbba").latency / p2 - 1)
                name = f"{kind} {K}x{L} m={m} e={extra:g} (n={len(g1)})"
                if not g1:
                    print(f"{name:>34}  all infeasible")
                    continue
                print(
                    f"{name:>34} {np.mean(g1):>9.2%} {np.max(g1):>9.2%} "
                    f"{np.mean(g2):>10.2%} {np.max(g2):>10.2%}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds, 20 s reference limit")
    parser.add_argument("--limit", type=float, default=None, help="reference limit (s)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per gap family")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        problem, K, L, extra, limit = args.worker
        reference_worker(problem, int(K), int(L), float(extra), float(limit))
        return
    limit = args.limit or (20.0 if args.quick else 60.0)
    seeds = args.seeds or (5 if args.quick else 20)
    timing(limit)
    gaps(seeds)


if __name__ == "__main__":
    main()
