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
    experiment: Experiment,
    points: list[PointResult],
    out_dir: Path,
    subtitle: str = "",
    stat: str = "median",
) -> list[Path]:
    """Round latency of every scheme (top) and its ratio to comm-aware (bottom).

    ``stat="median"`` (default) draws the median with the interquartile band, numbers that
    exist for every distribution; ``stat="mean"`` draws the mean with its 95% confidence
    band, and leaves out the points where a scheme is heavy-tailed
    (:mod:`~loladeft.experiments.statistics`): there its mean does not converge and is not
    drawn as if it were a number. A heavy-tailed scheme says so in the legend. The bottom
    panel is each scheme's statistic divided by comm-aware's at the same point (when
    comm-aware is among the schemes). The y axis is logarithmic when the values span more
    than a factor of 10. Writes ``<name>.png`` (150 dpi) and ``<name>.pdf`` into ``out_dir``.
    """
    plt = pyplot()
    xs = np.array([p.x for p in points])
    stats = [p.stats() for p in points]
    schemes = points[0].schemes

    def table(key: str) -> np.ndarray:
        return np.array([[getattr(st, key) for st in row] for row in stats], dtype=float)

    heavy = np.array([[st.heavy_tail for st in row] for row in stats], dtype=bool)
    if stat == "mean":
        centre = table("mean_latency_s")
        ci = np.nan_to_num(table("ci95_s"))
        centre = np.where(heavy, np.nan, centre)
        low, high = centre - ci, centre + ci
        band = "mean ± 95% CI; heavy-tailed points not drawn"
    else:
        centre = table("median_latency_s")
        low, high = table("q25_latency_s"), table("q75_latency_s")
        band = "median, interquartile band"
    ref = schemes.index("comm-aware") if "comm-aware" in schemes else None
    finite = centre[np.isfinite(centre) & (centre > 0)]
    log = finite.size > 0 and finite.max() > 10 * finite.min()
    rows = 2 if ref is not None else 1
    fig, axes = plt.subplots(
        rows,
        1,
        figsize=(6.4, 4.4 + 2.4 * (rows - 1)),
        layout="constrained",
        sharex=True,
        height_ratios=(5, 3)[:rows],
        squeeze=False,
    )
    ax = axes[0, 0]
    clipped = False
    for s, name in enumerate(schemes):
        style = STYLE.get(name, {"label": name})
        label = style["label"]
        if heavy[:, s].any():
            n = int(heavy[:, s].sum())
            label += " [heavy tail" + ("" if n == len(xs) else f" at {n}/{len(xs)}") + "]"
        line = ax.plot(
            xs,
            centre[:, s],
            label=label,
            color=style.get("color"),
            linestyle=style.get("ls", "-"),
            marker=style.get("marker"),
            markersize=4,
            linewidth=1.5,
        )[0]
        lo = low[:, s]
        if log and (lo <= 0).any():  # a band reaching 0 on a log axis: drawn from the centre
            clipped = True
            lo = np.where(lo > 0, lo, centre[:, s])
        ax.fill_between(xs, lo, high[:, s], color=line.get_color(), alpha=0.2, linewidth=0)
        if ref is not None:
            axes[1, 0].plot(
                xs,
                centre[:, s] / centre[:, ref],
                color=line.get_color(),
                linestyle=style.get("ls", "-"),
                marker=style.get("marker"),
                markersize=4,
                linewidth=1.5,
            )
    if log:
        ax.set_yscale("log")
    else:
        # keep the schemes with a finite mean readable next to the heavy-tailed ones
        light = ~heavy.any(axis=0)
        tops = high[:, light][np.isfinite(high[:, light])]
        if heavy.any() and tops.size:
            ax.set_ylim(0, min(ax.get_ylim()[1], 2.0 * float(tops.max())))
    ax.set_ylabel(f"{'Mean' if stat == 'mean' else 'Median'} round latency (s)")
    ax.set_title(experiment.title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    title = band + (" (lower bound ≤ 0 not drawn)" if clipped else "")
    ax.legend(fontsize=7, title=title, title_fontsize=7)
    bottom = axes[-1, 0]
    if ref is not None:
        rel = axes[1, 0]
        rel.axhline(1.0, color="tab:gray", linewidth=0.8)
        rel.set_ylabel(f"{stat.capitalize()} / comm-aware")
        rel.grid(True, which="both", alpha=0.3)
        ratios = centre / centre[:, [ref]]
        shown = ratios[np.isfinite(ratios)]
        if shown.size and shown.max() > 3:
            rel.set_ylim(0, max(1.5, min(3.0, float(np.nanmax(shown)))))
    if xs.size <= 12:
        bottom.set_xticks(xs)
    bottom.set_xlabel(experiment.label)
    return save(fig, Path(out_dir) / experiment.name)
