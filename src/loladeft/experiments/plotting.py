"""Every figure's plotting: one matplotlib setup (Agg back end, imported lazily), one way to
save, and the latency-sweep figures (Figs. 5, 6, 8)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loladeft.experiments.runner import PointResult
from loladeft.experiments.sweeps import Experiment

#: Display names and styles, one per scheme; baselines dashed, paper's schemes solid.
STYLE: dict[str, dict[str, str]] = {
    "comm-aware": {"label": "Comm-aware DEFT", "color": "tab:gray", "ls": "--", "marker": "v"},
    "comp-aware": {"label": "Comp-aware DEFT", "color": "tab:brown", "ls": "--", "marker": "^"},
    "random": {"label": "Random", "color": "tab:olive", "ls": ":", "marker": "x"},
    "ba": {"label": "BA for DEFT", "color": "tab:blue", "ls": "-", "marker": "o"},
    "jbba-dual": {
        "label": "JBBA (dual ascent, Alg. 3)",
        "color": "tab:orange",
        "ls": "-.",
        "marker": "s",
    },
    "jbba": {"label": "JBBA (exact)", "color": "tab:red", "ls": "-", "marker": "D"},
}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg back end (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(
    fig: Any,
    path: str | Path,
    exts: Sequence[str] = ("png", "pdf"),
    *,
    dpi: int = 150,
    tight: bool = False,
) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix of ``exts`` (folder created), close it, and
    return the written paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(f".{ext}") for ext in exts]
    for p in out:
        fig.savefig(p, dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return out


def plot_experiment(
    experiment: Experiment, points: list[PointResult], out_dir: Path, subtitle: str = ""
) -> list[Path]:
    """Mean round latency with a 95% confidence band, one line per scheme.

    Writes ``<name>.png`` (150 dpi) and ``<name>.pdf`` into ``out_dir``; returns the paths.
    The y axis is logarithmic when the means span more than a factor of 10; there, a band
    whose lower bound ``mean - CI`` is not positive (heavy-tailed latencies of the
    channel-blind baselines) is drawn from the mean up only, and the legend says so.
    """
    plt = pyplot()
    xs = np.array([p.x for p in points])
    stats = [p.stats() for p in points]
    means = np.array([[st.mean_latency_s for st in row] for row in stats])  # (points, S)
    cis = np.nan_to_num(np.array([[st.ci95_s for st in row] for row in stats]))
    log = bool(np.isfinite(means).any()) and np.nanmax(means) > 10 * np.nanmin(means)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    clipped = False
    for s, name in enumerate(points[0].schemes):
        mean, ci = means[:, s], cis[:, s]
        style = STYLE.get(name, {"label": name})
        line = ax.plot(
            xs,
            mean,
            label=style["label"],
            color=style.get("color"),
            linestyle=style.get("ls", "-"),
            marker=style.get("marker"),
            markersize=4,
            linewidth=1.5,
        )[0]
        low = mean - ci
        if log and (low <= 0).any():  # a heavy tail: the lower bound is not positive
            clipped = True
            low = np.where(low > 0, low, mean)
        ax.fill_between(xs, low, mean + ci, color=line.get_color(), alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")
    if xs.size <= 12:
        ax.set_xticks(xs)
    ax.set_xlabel(experiment.label)
    ax.set_ylabel("Average round latency (s)")
    ax.set_title(experiment.title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    title = "mean ± 95% CI" + (" (lower bound ≤ 0 not drawn)" if clipped else "")
    ax.legend(fontsize=8, title=title, title_fontsize=8)
    return save(fig, Path(out_dir) / experiment.name)
