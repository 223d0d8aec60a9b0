"""Round latency against the number of devices ``K``, from well below ``L`` to above it, for a
32-block model (issue 13, item 3; not in the paper).

The paper needs ``K >= L``: a 32-layer Llama-7B cannot be scheduled on fewer than 32 devices.
This experiment compares, on the same Monte-Carlo rounds, the ways around that:

* ``jbba`` and ``comm-aware``: the paper's schemes on the 32 single-layer blocks, only where
  ``K >= 32``;
* ``grouped-jbba``: the layers grouped into ``32 / group_size`` blocks of ``group_size``
  consecutive layers (:mod:`loladeft.system.grouping`), then the paper's ``jbba``; needs
  ``K >= 32 / group_size``;
* ``multiblock-jbba`` and ``multiblock-ba``: the 32 blocks with multi-block devices
  (``max_blocks_per_device = max_blocks``, :mod:`loladeft.allocation.multiblock`); needs
  ``K * max_blocks >= 32``. ``extra_block_memory`` is the profile's LoRA parameter-and-gradient
  bytes of one block.

Rounds follow the paper's scenario (Sec. VI-A, :class:`~loladeft.system.scenario.Scenario`):
``f_k ~ U(0.5, 1)``, Rayleigh fading at 10 dB transmit SNR with path loss 1e-3, ``B`` = 100
MHz, except the device memory: a 7B model in fp32 needs 27-55 GiB (``b(l)`` of the profile),
so memory is drawn from ``memory_gb`` (default U[32, 80] GB). ``64`` devices are drawn per
round and the first ``K`` take part, so every ``K`` sees the same devices (common random
numbers). A round where a scheme finds no memory-feasible allocation counts as infeasible and
is left out of its mean.

Entry point (library only)::

    from loladeft.experiments.fewer_devices import fewer_devices, write_csv, plot
    rows = fewer_devices()                      # K = 4, 8, ..., 64; 50 rounds; seed 0
    write_csv(rows, "results/fewer_devices.csv")
    plot(rows, "results/fewer_devices")         # .png and .pdf
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loladeft.allocation.registry import solve
from loladeft.system.grouping import group_depth_costs
from loladeft.system.instance import Instance
from loladeft.system.scenario import BlockCosts, Scenario

#: The shipped Llama-7B profile, a builtin (``scripts/regenerate_profiles.sh``: fp32, batch
#: 32, seq 128, LoRA r = 8 on q_proj and v_proj).
LLAMA_7B = "llama-7b"
DEVICES = tuple(range(4, 65, 4))
SCHEMES = ("jbba", "comm-aware", "grouped-jbba", "multiblock-jbba", "multiblock-ba")
#: CSV columns, the same as ``loladeft simulate``'s (x column: ``num_devices``).
CSV_COLUMNS = ("num_devices", "scheme", "mean_latency_s", "ci95_s", "rounds", "infeasible_rounds")


def llama_7b_profile() -> Path:
    """Path of the shipped 32-layer Llama-7B profile."""
    from loladeft.profiling.profile import builtin_profile_path

    return builtin_profile_path(LLAMA_7B)


@dataclass(frozen=True)
class Row:
    """Latency statistics of one scheme at one ``K`` (``nan`` where every round failed or
    the scheme does not apply)."""

    num_devices: int
    scheme: str
    mean_latency_s: float
    ci95_s: float
    rounds: int
    infeasible_rounds: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.num_devices,
            self.scheme,
            self.mean_latency_s,
            self.ci95_s,
            self.rounds,
            self.infeasible_rounds,
        )


def fewer_devices(
    profile: str | Path | None = None,
    devices: Sequence[int] = DEVICES,
    *,
    rounds: int = 50,
    seed: int = 0,
    group_size: int = 4,
    max_blocks: int = 8,
    memory_gb: tuple[float, float] = (32.0, 80.0),
) -> list[Row]:
    """Run the experiment (module docstring); one :class:`Row` per ``K`` and scheme.

    Parameters
    ----------
    profile
        Profile name or JSON path (default: the shipped Llama-7B profile).
    devices
        Values of ``K``.
    rounds
        Monte-Carlo rounds per ``K`` (the same rounds for every ``K``).
    seed
        Seed of the rounds.
    group_size
        Layers per group for ``grouped-jbba`` (must divide ``L``).
    max_blocks
        ``max_blocks_per_device`` of the multi-block schemes.
    memory_gb
        Range of the uniform device memory in GB.
    """
    from loladeft.profiling.profile import load_profile  # numpy-only module

    prof = load_profile(profile or llama_7b_profile())
    costs = BlockCosts.from_profile(prof)
    L = costs.num_blocks
    k_max = max(max(devices), L)
    scenario = Scenario(costs, num_devices=k_max, memory_gb=memory_gb)
    drawn = scenario.sample(rounds, seed)
    extra = float(max(d.block_param_bytes for d in prof.depths))  # LoRA params + grads
    groups = [group_size] * (L // group_size) if L % group_size == 0 else group_size
    grouped = group_depth_costs(
        scenario.block_seconds, costs.block_memory, costs.block_bits, groups
    )
    hi = np.cumsum(grouped.sizes) - 1
    latencies: dict[tuple[int, str], list[float]] = {}
    for i in range(rounds):
        J = drawn.J(i)
        for K in devices:
            base = {
                "J": J[:K],
                "block_memory": costs.block_memory,
                "device_memory": drawn.device_memory[i, :K],
                "spectral_efficiency": drawn.spectral_efficiency[i, :K],
                "block_bits": costs.block_bits,
                "bandwidth": scenario.bandwidth_hz,
            }
            cases: dict[str, tuple[Instance, str] | None] = dict.fromkeys(SCHEMES)
            if K >= L:
                single = Instance(**base)
                cases["jbba"] = (single, "jbba")
                cases["comm-aware"] = (single, "comm-aware")
            if K >= hi.size:
                grouped_inst = Instance(
                    **base
                    | {
                        "J": J[:K, hi],
                        "block_memory": grouped.memory,
                        "block_bits": float(grouped.bits[0]),
                    }
                )
                cases["grouped-jbba"] = (grouped_inst, "jbba")
            if K * max_blocks >= L:
                multi = Instance(**base, max_blocks_per_device=max_blocks, extra_block_memory=extra)
                cases["multiblock-jbba"] = (multi, "jbba")
                cases["multiblock-ba"] = (multi, "ba")
            for name, case in cases.items():
                if case is None:
                    continue
                result = solve(case[0], case[1], seed=0)
                latencies.setdefault((K, name), []).append(
                    result.latency if result.feasible else math.nan
                )
    return [_row(K, name, latencies.get((K, name), [])) for K in devices for name in SCHEMES]


def _row(K: int, scheme: str, values: list[float]) -> Row:
    x = np.asarray(values, dtype=float)
    ok = x[np.isfinite(x)]
    mean = float(ok.mean()) if ok.size else math.nan
    ci = float(1.96 * ok.std(ddof=1) / math.sqrt(ok.size)) if ok.size > 1 else math.nan
    return Row(K, scheme, mean, ci, int(x.size), int(x.size - ok.size))


def write_csv(rows: Sequence[Row], path: str | Path) -> Path:
    """One line per ``K`` and scheme, columns :data:`CSV_COLUMNS`; empty mean and CI where
    the scheme does not apply (``rounds = 0``) or every round was infeasible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            values = row.as_tuple()
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in values])
    return path


def plot(rows: Sequence[Row], path: str | Path) -> list[Path]:
    """Mean round latency against ``K``, one line per scheme: ``path`` as PNG and PDF."""
    from loladeft.experiments.plotting import pyplot, save

    fig, ax = pyplot().subplots(figsize=(6.4, 4.0))
    for scheme in SCHEMES:
        mine = [r for r in rows if r.scheme == scheme and math.isfinite(r.mean_latency_s)]
        if mine:
            ax.plot(
                [r.num_devices for r in mine],
                [r.mean_latency_s for r in mine],
                marker="o",
                label=scheme,
            )
    ax.set_xlabel("number of devices K")
    ax.set_ylabel("mean round latency (s)")
    ax.set_yscale("log")
    ax.set_title("Llama-7B, 32 blocks: fewer devices than blocks")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save(fig, path, tight=True)


__all__ = ["CSV_COLUMNS", "DEVICES", "SCHEMES", "Row", "fewer_devices", "plot", "write_csv"]
