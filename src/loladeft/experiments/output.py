"""The CSV files of the latency sweeps (``manifest.json`` goes through
:func:`loladeft.results.write_manifest`)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from loladeft.experiments.runner import PointResult
from loladeft.experiments.sweeps import Experiment

#: Columns after the x column, in this order, exactly: the original five, then the robust
#: statistics (:mod:`loladeft.experiments.statistics`; ``heavy_tail`` is ``true`` when the
#: scheme's mean does not converge at that point).
CSV_COLUMNS = (
    "scheme",
    "mean_latency_s",
    "ci95_s",
    "rounds",
    "infeasible_rounds",
    "median_latency_s",
    "q25_latency_s",
    "q75_latency_s",
    "heavy_tail",
)


def _num(x: float) -> str:
    """A float in CSV: full precision (repr), empty for nan."""
    return "" if math.isnan(x) else repr(float(x))


def _x(experiment: Experiment, x: float) -> str:
    return str(int(x)) if experiment.column == "num_devices" else repr(float(x))


def write_csv(path: Path, experiment: Experiment, points: list[PointResult]) -> None:
    """``<x>,`` then :data:`CSV_COLUMNS`, one row per scheme and point; the statistics are
    empty when every round was infeasible."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow((experiment.column, *CSV_COLUMNS))
        for point in points:
            for st in point.stats():
                writer.writerow(
                    (
                        _x(experiment, point.x),
                        st.scheme,
                        _num(st.mean_latency_s),
                        _num(st.ci95_s),
                        st.rounds,
                        st.infeasible_rounds,
                        _num(st.median_latency_s),
                        _num(st.q25_latency_s),
                        _num(st.q75_latency_s),
                        "true" if st.heavy_tail else "false",
                    )
                )
