"""The three latency sweeps of the paper: what each varies and how it is labelled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loladeft.system.scenario import Scenario


@dataclass(frozen=True)
class Experiment:
    """One sweep: a scenario parameter varied over a list of x values.

    Attributes
    ----------
    name
        ``fig5``, ``fig6`` or ``fig8`` (the paper's figure numbers).
    column
        Name of the x column in the CSV (``snr_db``, ``bandwidth_mhz``, ``num_devices``).
    label
        Axis label with the unit.
    key
        Stable integer mixed into each point's seed, so results do not depend on which
        experiments run together or in which order.
    title
        Plot title.
    paper_point
        x value at which the paper quotes its percentages, if any.
    """

    name: str
    column: str
    label: str
    key: int
    title: str
    paper_point: float | None = None

    def apply(self, base: Scenario, x: float) -> Scenario:
        """The scenario of the point ``x``."""
        change: dict[str, Any]
        if self.column == "snr_db":
            change = {"snr_db": float(x)}
        elif self.column == "bandwidth_mhz":
            change = {"bandwidth_hz": float(x) * 1e6}
        else:
            change = {"num_devices": int(x)}
        return base.with_(**change)

    def default_x(self, base: Scenario) -> float:
        """x value of the scenario's default point (e.g. 10 dB for ``fig5``)."""
        if self.column == "snr_db":
            return base.snr_db
        if self.column == "bandwidth_mhz":
            return base.bandwidth_hz / 1e6
        return float(base.num_devices)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "fig5",
            "snr_db",
            "Transmit SNR (dB)",
            5,
            "Round latency vs transmit SNR (paper Fig. 5)",
            paper_point=10.0,
        ),
        Experiment(
            "fig6",
            "bandwidth_mhz",
            "Uplink bandwidth budget B (MHz)",
            6,
            "Round latency vs uplink bandwidth (paper Fig. 6)",
        ),
        Experiment(
            "fig8",
            "num_devices",
            "Number of devices K",
            8,
            "Round latency vs number of devices (paper Fig. 8)",
            paper_point=50.0,
        ),
    )
}

#: Ratios the paper reports, for the summary table: (experiment, x, scheme, reference
#: scheme) -> ratio of mean latencies.
PAPER_RATIOS: dict[tuple[str, float, str, str], float] = {
    ("fig5", 10.0, "ba", "comm-aware"): 0.60,  # "nearly 40% reduction ... at 10 dB"
    ("fig8", 50.0, "jbba", "comm-aware"): 0.40,  # "latency of JBBA is 40% of the benchmark"
    ("fig8", 50.0, "jbba", "ba"): 0.60,  # "... and 60% of the BA when 50 devices"
}

#: The best (lowest) value each of those ratios reaches, each on its own, under the paper's
#: written model (every equal-split scheme gives ``B/L``), over compute_scale 1e-3..10 and
#: mean received SNR -20..30 dB: the minima of ``loladeft calibrate --preset calibrated
#: --fit-snr`` (seed 2024, 100 rounds per evaluation, "grid range"). README, "Regimes".
MODEL_BEST: dict[tuple[str, float, str, str], float] = {
    ("fig5", 10.0, "ba", "comm-aware"): 0.67,
    ("fig8", 50.0, "jbba", "comm-aware"): 0.61,
    ("fig8", 50.0, "jbba", "ba"): 0.69,
}
#: Where the README explains the regimes (printed by the summary).
REGIMES_POINTER = 'README.md, section "Regimes: presets and the paper\'s ratios"'
