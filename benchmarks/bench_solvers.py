"""Benchmark of the schedulers: solve time against (K, L), printed as a table and a CSV.

Run from the repository root::

    .venv/bin/python benchmarks/bench_solvers.py                 # all sizes, all schemes
    .venv/bin/python benchmarks/bench_solvers.py --quick         # the two smallest sizes

Every (scheme, size) runs in its own process with a time limit (default 60 s); a scheme that
timed out is not tried at larger sizes. Instances follow the paper's setting (monotone:
``J = M d(l) / f_k`` with ``d`` rising 1x -> 2x with depth, memory linear in depth, devices
U[1, 6] GB, Rayleigh channels at 10 dB mean received SNR, B = 100 MHz), generated from a
fixed seed. Reported figures are medians over repeats after one warm-up solve. ``floor`` is
the time numpy takes to build the ``(K, L)`` latency matrix ``J + S / ((B/L) r)`` once;
``ba / floor`` is the ratio the scheduling-core issue asks about. ``startup`` is the wall
time of ``loladeft solve`` on the small example instance (a fresh process, median of 7).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = [(20, 12), (100, 12), (1000, 24), (1000, 96), (10_000, 96), (100_000, 96)]
SCHEMES = [
    "ba",
    "jbba",
    "crunch",
    "jbba-dual",
    "ba-hungarian",
    "milp",
    "comp-aware",
    "comm-aware",
    "random",
]
ROOT = Path(__file__).resolve().parents[1]


def make_instance(K: int, L: int, seed: int = 0):
    """A paper-like monotone instance (see the module docstring)."""
    from loladeft import Instance

    rng = np.random.default_rng([seed, K, L])
    d = np.linspace(1.0, 2.0, L)  # s per step on the reference device, 1x -> 2x with depth
    f = rng.uniform(0.5, 1.0, K)
    J = 4 * d[None, :] / f[:, None]  # M = 4 local iterations
    b = np.linspace(1.0, 4.0, L)  # GB
    mem = rng.uniform(1.0, 6.0, K)
    r = np.log2(1 + 10.0 * rng.exponential(size=K))
    return Instance(
        J=J,
        block_memory=b,
        device_memory=mem,
        spectral_efficiency=r,
        block_bits=24_576 * 32,
        bandwidth=100e6,
    )


def worker(scheme: str, K: int, L: int, repeats: int) -> dict:
    """Run in a child process: time ``repeats`` solves, return medians as a dict."""
    from loladeft import solve
    from loladeft.allocation.registry import get_scheme

    _ = get_scheme(scheme).function  # import the scheme's module outside the timed region
    t0 = time.perf_counter()
    inst = make_instance(K, L)
    build = time.perf_counter() - t0
    solve(inst, scheme, seed=0)  # warm-up: first-touch pages and caches, as for the floor
    times, result = [], None
    for _ in range(repeats):
        result = solve(inst, scheme, seed=0)
        times.append(result.solve_seconds)
    comm = inst.block_bits / (inst.equal_bandwidth() * inst.spectral_efficiency)
    floor = []
    for _ in range(max(repeats, 5)):
        t0 = time.perf_counter()
        _ = inst.J + comm[:, None]
        floor.append(time.perf_counter() - t0)
    return {
        "scheme": scheme,
        "K": K,
        "L": L,
        "median_s": statistics.median(times),
        "repeats": repeats,
        "latency_s": result.latency if result.feasible else None,
        "iterations": result.iterations,
        "floor_s": statistics.median(floor),
        "instance_s": build,
        "dual_gap": result.extra.get("dual_gap"),
        # jbba-dual: Algorithm 3's own recovered primal, and whether BA's solution won
        "dual_primal_latency_s": result.extra.get("dual_primal_latency"),
        "warm_start": result.extra.get("warm_start"),
    }


def run_one(scheme: str, K: int, L: int, timeout: float) -> dict | str:
    repeats = 5 if K * L <= 100_000 else 3
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
        f"from bench_solvers import worker; "
        f"print(json.dumps(worker({scheme!r}, {K}, {L}, {repeats})))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s"
    except subprocess.CalledProcessError as exc:
        return "error: " + (exc.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_dual(console, rows: list[dict]) -> None:
    """jbba-dual against ba and jbba: Algorithm 3's own primal and the final answer (the
    better of it and BA's solution under its optimal bandwidth split)."""
    from rich.table import Table

    latency = {(r["scheme"], r["K"], r["L"]): r.get("latency_s") for r in rows}
    duals = [r for r in rows if r["scheme"] == "jbba-dual" and r.get("latency_s") is not None]
    if not duals:
        return
    table = Table(title="jbba-dual latency (s): Algorithm 3's own primal vs the final answer")
    for col in ("K", "L", "ba", "jbba-dual own", "jbba-dual final", "BA won", "jbba (exact)"):
        table.add_column(col, justify="right")
    for r in duals:
        K, L = r["K"], r["L"]
        cells = (latency.get(("ba", K, L)), r["dual_primal_latency_s"], r["latency_s"])
        table.add_row(
            f"{K:,}",
            str(L),
            *(f"{v:.6g}" if v is not None else "" for v in cells),
            "yes" if r["warm_start"] else "no",
            f"{latency[('jbba', K, L)]:.6g}" if latency.get(("jbba", K, L)) else "",
        )
    console.print(table)


def startup_seconds(runs: int = 7) -> float:
    exe = Path(sys.executable).with_name("loladeft")
    cmd = [str(exe), "solve", str(ROOT / "examples" / "paper-example.json"), "--json"]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two smallest sizes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per (scheme, size)")
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sizes = SIZES[:2] if args.quick else SIZES
    schemes = args.schemes.split(",")
    rows: list[dict] = []
    cells: dict[tuple[str, tuple[int, int]], str] = {}
    floors: dict[tuple[int, int], float] = {}
    timed_out: set[str] = set()
    for K, L in sizes:
        for scheme in schemes:
            if scheme in timed_out:
                cells[scheme, (K, L)] = "skipped"
                continue
            console.log(f"{scheme} at K={K}, L={L}")
            res = run_one(scheme, K, L, args.timeout)
            if isinstance(res, str):
                cells[scheme, (K, L)] = res
                if res.startswith(">"):
                    timed_out.add(scheme)
                rows.append({"scheme": scheme, "K": K, "L": L, "status": res})
                continue
            floors[K, L] = res["floor_s"]
            cells[scheme, (K, L)] = _fmt(res["median_s"])
            rows.append({**res, "status": "ok"})
    table = Table(title="median solve time (validation excluded)")
    table.add_column("scheme")
    for K, L in sizes:
        table.add_column(f"K={K:,}\nL={L}", justify="right")
    for scheme in schemes:
        table.add_row(scheme, *(cells.get((scheme, s), "") for s in sizes))
    table.add_row("floor: numpy J + comm", *(_fmt(floors.get(s, float("nan"))) for s in sizes))
    ba = {(r["K"], r["L"]): r["median_s"] for r in rows if r["scheme"] == "ba" and "median_s" in r}
    table.add_row(
        "ba / floor",
        *(f"{ba[s] / floors[s]:.2f}" if s in ba and s in floors else "" for s in sizes),
    )
    console.print(table)
    _print_dual(console, rows)
    startup = startup_seconds()
    console.print(
        f"`loladeft solve` on examples/paper-example.json (jbba), fresh process: "
        f"median {startup:.3f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "solvers.csv"
    fields = [
        "scheme",
        "K",
        "L",
        "status",
        "median_s",
        "repeats",
        "latency_s",
        "iterations",
        "floor_s",
        "instance_s",
        "dual_gap",
        "dual_primal_latency_s",
        "warm_start",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    console.print(f"wrote {path}")


def _fmt(seconds: float) -> str:
    if seconds != seconds:
        return ""
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


if __name__ == "__main__":
    main()
