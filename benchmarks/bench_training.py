"""Benchmark of the training engine on this CPU (issue 5, "Performance").

Prints, for MiniLM (or ``--model``) with LoRA r=8 on query/value:

1. the wall time of one DEFT round of the engine (``Trainer.step``: schedule, L device
   computations, head averaging, Adam) against the sum over depths of the bare step times
   measured by the profiler's :func:`loladeft.profiling.profiler.measure_depth` on the same
   batch -> engine overhead (target <= 10%);
2. the FLOP/s of the DEFT round (sum of the counted per-depth FLOPs / round time) against a
   centralized PEFT step (counted FLOPs of one full step / its time) -> ratio (target >= 0.8);
3. the same in bf16 autocast where the CPU supports it.

Every device gets the same fixed batch (``--batch`` x ``--seq`` random tokens), so the engine
round and the profiler steps do exactly the same arithmetic. Timings are medians of
``--repeats`` runs after one warm-up; the machine's load average is printed beside them,
because other processes on a shared host inflate every number.

Run: ``.venv/bin/python benchmarks/bench_training.py [--batch 16] [--seq 128] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _central_step(trainer, batch, precision, full_gradient) -> None:
    """One centralized PEFT step: full backward on every LoRA and head parameter, AdamW."""
    grads, _ = full_gradient(trainer.model, trainer.params, batch, precision)
    for p, g in zip(trainer.params, grads, strict=True):
        p.grad = g
    trainer.optimizer.step()
    for p in trainer.params:
        p.grad = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--profile", default=None, help="profile JSON for a non-builtin model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()

    import torch

    from loladeft.config import load_config
    from loladeft.profiling.profiler import flop_counter, measure_depth
    from loladeft.training.blocks import train_only
    from loladeft.training.engine import Trainer, full_gradient

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue"
    print(
        f"host: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}; model {args.model}, batch {args.batch}, "
        f"seq {args.seq}, repeats {args.repeats}"
    )
    for precision in args.precisions.split(","):
        cfg = load_config(
            None,
            {
                "train.task": "mrpc",
                "train.scheme": "jbba",
                "train.rounds": 10_000,
                "scenario.num_devices": 20,
                "train.batch": args.batch,
                "train.model": args.model,
                "scenario.profile": args.profile,
                "train.data_dir": str(data),
                "lora.dropout": 0.0,
                "train.precision": precision,
            },
        )
        trainer = Trainer(cfg).setup()
        gen = torch.Generator().manual_seed(0)
        vocab = trainer.model.config.vocab_size
        low = min(1000, vocab // 2)
        batch = {
            "input_ids": torch.randint(low, vocab, (args.batch, args.seq), generator=gen),
            "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long),
            "labels": torch.randint(0, 2, (args.batch,), generator=gen),
        }
        trainer._batch = lambda _k, b=batch: b  # every device: the same fixed batch
        model = trainer.model
        lora_input_first = list(reversed(trainer.blocks))
        L = len(lora_input_first)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        # interleaved: each repeat times one engine round, then every depth's bare step
        # (profiler), so that load changes on a shared host hit both sides alike
        train_only(model, [])
        trainer.step()  # warm-up
        rounds, sums, per_depth = [], [], []
        depth_flops: list[int] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            trainer.step()
            rounds.append(time.perf_counter() - t0)
            steps = []
            with autocast:
                for depth in range(1, L + 1):
                    m = measure_depth(model, lora_input_first, depth, batch, repeats=1)
                    steps.append(m.seconds[0])
                    if len(depth_flops) < L:
                        depth_flops.append(m.flops)
            train_only(model, [])
            per_depth.append(steps)
            sums.append(sum(steps))
        round_s = statistics.median(rounds)
        sum_s = statistics.median(sums)
        depth_s = [statistics.median(col) for col in zip(*per_depth, strict=True)]
        # centralized PEFT step: batch M x b = b (M = 1), full backward + AdamW
        cent_params = trainer.params

        cent_s = _median_time(
            functools.partial(_central_step, trainer, batch, precision, full_gradient), args.repeats
        )
        train_only(model, cent_params)
        counter = flop_counter()
        with counter, autocast:
            model(**batch).loss.backward()
        cent_flops = counter.get_total_flops()
        train_only(model, [])
        deft_rate = sum(depth_flops) / round_s
        cent_rate = cent_flops / cent_s
        print(
            f"\n[{precision}] per-depth step times (profiler, s): "
            + ", ".join(f"l={i + 1}: {s:.3f}" for i, s in enumerate(depth_s))
        )
        print(
            f"[{precision}] DEFT round (engine, L={L} devices): {round_s:.3f} s; sum of "
            f"per-depth steps {sum_s:.3f} s; engine overhead {100 * (round_s / sum_s - 1):+.1f}%"
            f" (per-repeat ratios: "
            + ", ".join(f"{r / q:.3f}" for r, q in zip(rounds, sums, strict=True))
            + ")"
        )
        print(
            f"[{precision}] FLOP/s: DEFT round {deft_rate / 1e9:.1f} GFLOP/s "
            f"({sum(depth_flops) / 1e9:.1f} GFLOP), centralized step "
            f"{cent_rate / 1e9:.1f} GFLOP/s ({cent_flops / 1e9:.1f} GFLOP in {cent_s:.3f} s); "
            f"ratio {deft_rate / cent_rate:.2f}"
        )
        print(f"[{precision}] load average now {os.getloadavg()[0]:.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
