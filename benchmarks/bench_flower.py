"""Benchmark of the Flower runtimes against the in-process engine (issue 6, "Performance").

Runs the same DEFT work (MiniLM, LoRA on query/value, MRPC from ``--data-dir``, ``--nodes``
devices, ``--rounds`` rounds, fp32, no evaluation between the first and the last round) on

* ``in-process``   :func:`loladeft.training.run.train`;
* ``virtual``      :func:`loladeft.runtime.virtual.run_virtual` (Flower's simulation
                   runtime, Ray actors);
* ``deployment``   :func:`loladeft.runtime.deployment.deploy` (SuperLink + SuperNodes on
                   127.0.0.1) with loladeft's latency patches and warm executor
                   (:mod:`loladeft.runtime.flower_patches`); with ``--cold``, also with the
                   patches but Flower's process per message; with ``--stock``, also on
                   stock Flower (``LOLADEFT_FLOWER_PATCHES=0``: no patch, no warm executor,
                   Flower's own polling, as on a Flower release the patches were not
                   written for);

and prints, per runtime, the median wall time of one round (rounds 2.. ``R - 1``: round 1
carries start-up, round ``R`` the final evaluation) and its overhead over in-process: the
price of messages, serialisation and polling for the same computation. ``--lora-r`` sets the
LoRA rank, hence the size of the weights message (printed). Every run's files stay in
``--out``; the table goes to ``bench-results/flower.csv``.

The federations run without TLS and node authentication (``tls=False``), as the README's
figures were measured: the figures are about transport and polling.

``--idle-cpu`` instead measures the CPU an idle warm federation of ``--nodes`` spends
polling.

Run: ``.venv/bin/python benchmarks/bench_flower.py --data-dir ../shared/data/glue``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import time
from pathlib import Path


def _round_times(out: Path) -> list[float]:
    from loladeft.training.run import read_metrics

    rows = read_metrics(out / "metrics.csv")
    return [float(r["wall_s"]) for r in rows if r["round"] not in ("0",)]


def idle_cpu(nodes: int, seconds: float = 10.0) -> float:
    """CPU cores an idle warm local federation of ``nodes`` SuperNodes uses (polling)."""
    from loladeft.runtime.federation import MARKER_ENV, FederationSpec, LocalFederation
    from loladeft.runtime.processes import pids_with_env

    def cpu_seconds(marker: str) -> float:
        total = 0
        for pid in pids_with_env(MARKER_ENV, marker):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / os.sysconf("SC_CLK_TCK")

    with LocalFederation(FederationSpec(nodes=nodes, tls=False, warm=True)) as fed:
        time.sleep(8)  # executors import torch & co.
        c0, t0 = cpu_seconds(fed.marker), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(fed.marker) - c0) / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora-r", type=int, nargs="+", default=[8])
    ap.add_argument("--runtimes", default="in-process,virtual,deployment")
    ap.add_argument("--cold", action="store_true", help="also deployment without warm executor")
    ap.add_argument("--stock", action="store_true", help="also deployment on stock Flower")
    ap.add_argument("--out", default="bench-results/flower-runs")
    ap.add_argument("--idle-cpu", action="store_true", help="only measure idle polling CPU")
    args = ap.parse_args()
    if args.idle_cpu:
        cores = idle_cpu(args.nodes)
        print(f"idle warm federation of {args.nodes} nodes: {cores:.2f} CPU cores")
        return

    from loladeft.config import load_config
    from loladeft.runtime.deployment import deploy
    from loladeft.runtime.federation import FederationSpec
    from loladeft.runtime.flower_patches import ENV
    from loladeft.runtime.virtual import run_virtual
    from loladeft.training.run import train

    out_root = Path(args.out)
    shutil.rmtree(out_root, ignore_errors=True)
    results = []
    runtimes = args.runtimes.split(",") + (["deployment-cold"] if args.cold else [])
    runtimes += ["deployment-stock"] if args.stock else []
    for r in args.lora_r:
        cfg = load_config(
            None,
            {
                "train.task": args.task,
                "train.rounds": args.rounds,
                "scenario.num_devices": args.nodes,
                "train.batch": args.batch,
                "lora.r": r,
                "train.data_dir": args.data_dir,
                "train.eval_every": args.rounds,
                "train.max_eval_samples": 64,
                "train.precision": "fp32",
                "runtime.insecure": True,
            },
        )
        base = None
        for runtime in runtimes:
            out = out_root / f"r{r}-{runtime}"
            t0 = time.perf_counter()
            if runtime == "in-process":
                train(cfg, out)
            elif runtime == "virtual":
                run_virtual(cfg, out)
            elif runtime == "deployment-stock":  # every process: no patch (one log line says so)
                spec = FederationSpec(nodes=args.nodes, tls=False, fast_poll=False, env={ENV: "0"})
                deploy(cfg, out, spec=spec)
            else:
                warm = runtime == "deployment"
                spec = FederationSpec(nodes=args.nodes, tls=False, warm=warm)
                deploy(cfg, out, spec=spec)
            total = time.perf_counter() - t0
            times = _round_times(out)[1:-1]
            med = statistics.median(times)
            base = med if runtime == "in-process" else base
            manifest = json.loads((out / "manifest.json").read_text())
            rt = manifest.get("runtime", {})
            size = rt.get("largest_weights_message_bytes")
            # over all rounds: time spent in the exchanges, and within them the slowest
            # node's own computation; the difference is transport (messages, polling)
            exchange = rt.get("exchange_seconds", 0) / args.rounds
            compute = rt.get("slowest_node_compute_seconds", 0) / args.rounds
            results.append(
                {
                    "lora_r": r,
                    "runtime": runtime,
                    "round_s_median": round(med, 4),
                    "overhead_s": "" if base is None else round(med - base, 4),
                    "weights_message_bytes": size or "",
                    "exchange_s_per_round": round(exchange, 4) if rt else "",
                    "node_compute_s_per_round": round(compute, 4) if rt else "",
                    "total_s": round(total, 1),
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
            print(results[-1], flush=True)
    path = Path("bench-results/flower.csv")
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    cols = [
        ("lora_r", 6),
        ("runtime", 16),
        ("round_s_median", 15),
        ("overhead_s", 11),
        ("exchange_s_per_round", 21),
        ("node_compute_s_per_round", 25),
        ("weights_message_bytes", 22),
    ]
    print("\n" + " ".join(f"{c:>{w}}" for c, w in cols))
    for row in results:
        print(" ".join(f"{row[c]!s:>{w}}" for c, w in cols))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
