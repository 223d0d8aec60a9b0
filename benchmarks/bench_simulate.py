"""Benchmark of the latency simulator: sampling, instance building, and each scheme's solve.

Run from the repository root::

    .venv/bin/python benchmarks/bench_simulate.py [--rounds 1000] [--devices 20 50]

It prints, for the paper's default point (roberta-base, 10 dB transmit SNR, 100 MHz) and
each requested number of devices: the time to sample R rounds (vectorised), to build the R
instances, and the mean solve time per round of every scheme, plus the implied CPU time of
the full default sweep (30 points x 1000 rounds, all six schemes). Figures only; no
assertions (the test suite stays free of timing).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from loladeft.allocation.registry import solve
from loladeft.config import PAPER_PROFILE, PAPER_SCHEMES, Config
from loladeft.experiments.simulate import load_block_costs
from loladeft.system.scenario import Scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--devices", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--profile", default=PAPER_PROFILE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    costs = load_block_costs(args.profile)
    points = sum(len(v) for v in Config().sweeps.model_dump().values())
    for K in args.devices:
        sc = Scenario(costs, num_devices=K)
        t0 = time.perf_counter()
        rounds = sc.sample(args.rounds, args.seed)
        t1 = time.perf_counter()
        instances = rounds.instances()
        t2 = time.perf_counter()
        print(
            f"K = {K}, L = {sc.num_blocks}, {args.rounds} rounds: sample "
            f"{1e3 * (t1 - t0):.2f} ms, build instances {1e6 * (t2 - t1) / args.rounds:.1f} "
            f"us/round"
        )
        rng = np.random.default_rng(args.seed)
        total = 0.0
        for name in PAPER_SCHEMES:
            start = time.perf_counter()
            inner = 0.0
            for inst in instances:
                inner += solve(inst, name, seed=rng).solve_seconds
            wall = time.perf_counter() - start
            total += wall
            print(
                f"  {name:<11} {1e3 * inner / args.rounds:8.3f} ms/solve (solver) "
                f"{1e3 * wall / args.rounds:8.3f} ms/solve (with solve() wrapper)"
            )
        per_round = total / args.rounds + (t2 - t1) / args.rounds
        print(
            f"  all schemes: {1e3 * per_round:.2f} ms/round -> default sweep at this K "
            f"~ {per_round * 1000 * points:.0f} CPU-s for {points} points x 1000 rounds"
        )


if __name__ == "__main__":
    main()
