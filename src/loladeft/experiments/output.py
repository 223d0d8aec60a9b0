"""Files written by ``loladeft simulate``: one CSV per experiment and ``manifest.json``."""

from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from loladeft.experiments.runner import PointResult
from loladeft.experiments.sweeps import Experiment

#: Columns after the x column, in this order, exactly.
CSV_COLUMNS = ("scheme", "mean_latency_s", "ci95_s", "rounds", "infeasible_rounds")


def _num(x: float) -> str:
    """A float in CSV: full precision (repr), empty for nan."""
    return "" if math.isnan(x) else repr(float(x))


def _x(experiment: Experiment, x: float) -> str:
    return str(int(x)) if experiment.column == "num_devices" else repr(float(x))


def write_csv(path: Path, experiment: Experiment, points: list[PointResult]) -> None:
    """``<x>,scheme,mean_latency_s,ci95_s,rounds,infeasible_rounds``, one row per scheme and
    point; the mean and CI are empty when every round was infeasible."""
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
                    )
                )


def git_revision(root: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding the code."""
    root = root or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages the results depend on."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("loladeft", "numpy", "scipy", "matplotlib", "rich", "typer"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _clean(value: Any) -> Any:
    """Replace nan/inf by None, recursively, so the manifest is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as strict JSON (nan becomes null)."""
    path.write_text(
        json.dumps(_clean(manifest), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
