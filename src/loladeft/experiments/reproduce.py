"""``loladeft reproduce``: every artifact of the paper from one configuration.

=========  ===================================================  =============================
target     what                                                 files (in ``out``)
=========  ===================================================  =============================
fig4       Fig. 4(a)/(b): memory and latency against depth,     ``fig4a.*``, ``fig4b.*``
           from the scenario's profile (no torch needed)
fig5       the latency sweep of ``loladeft simulate -e fig5``   ``fig5.*``, ``manifest.json``
fig6       ... ``-e fig6``                                      ``fig6.*``, ``manifest.json``
fig8       ... ``-e fig8``                                      ``fig8.*``, ``manifest.json``
fig7       Table I's training runs and their curves (needs      ``table1/``
table1     the ``train`` extra); both targets make both
all        all of the above; the three sweeps in one run
fewer-     not in the paper (issue 13): round latency against   ``fewer_devices.csv``,
devices    K = 4..64 for the 32-block Llama-7B, with grouped    ``fewer_devices.png/pdf``
           layers and multi-block devices (not part of ``all``)
=========  ===================================================  =============================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from loladeft.config import PAPER_PROFILE, Config

Target = Literal["fig4", "fig5", "fig6", "fig7", "fig8", "table1", "all", "fewer-devices"]
#: Every target, in the order ``all`` makes them.
TARGETS: tuple[str, ...] = ("fig4", "fig5", "fig6", "fig8", "table1")
#: The sweeps of ``loladeft simulate``.
SWEEPS = ("fig5", "fig6", "fig8")
#: Tasks of Table I when none are given (the two smallest GLUE tasks with a dev set that
#: separates the schemes within 100 rounds).
TABLE1_TASKS = ("mrpc", "rte")


def plan(target: str) -> tuple[str, ...]:
    """The artifacts a target makes: ``fig4``, sweep names, ``table1``, in order."""
    if target == "all":
        return TARGETS
    return ("table1",) if target == "fig7" else (target,)


def reproduce_fig4(cfg: Config, out: Path) -> list[Path]:
    """Fig. 4(a) and 4(b) from ``cfg.scenario.profile`` (default: the paper's model)."""
    from loladeft.experiments.fig4 import plot_fig4a, plot_fig4b
    from loladeft.profiling.profile import load_profile

    profile = load_profile(cfg.scenario.profile or PAPER_PROFILE)
    return plot_fig4a(profile, out / "fig4a") + plot_fig4b(profile, out / "fig4b")


def reproduce(
    target: str,
    cfg: Config,
    *,
    tasks: Sequence[str] = TABLE1_TASKS,
    shared: bool = False,
    sweep: Callable[[Config], Any],
    train: Callable[[Config, Path, str], Any],
    say: Callable[[str], Any] = print,
) -> None:
    """Make ``target`` into ``cfg.out``.

    Parameters
    ----------
    sweep
        ``sweep(cfg)`` runs ``loladeft simulate``'s sweep of ``cfg.experiments``.
    train
        ``train(cfg, folder, label)`` trains (resuming) one run of Table I.
    say
        Reports each written file.
    """
    out = Path(cfg.out)
    steps = plan(target)
    if "fig4" in steps:
        files = reproduce_fig4(cfg, out)
        say("wrote " + ", ".join(str(f) for f in files))
    sweeps = [s for s in steps if s in SWEEPS]
    if sweeps:
        sweep(cfg.updated({"experiments": sweeps}))
    if "table1" in steps:
        from loladeft.experiments.table1 import run_table1

        rows = run_table1(cfg, tasks, out / "table1", shared=shared, run=train)
        say(f"wrote {out / 'table1'}/table1.md, table1.csv, fig7_<task>.png ({len(rows)} rows)")
    if "fewer-devices" in steps:
        from loladeft.experiments import fewer_devices as fd

        rows = fd.fewer_devices(seed=cfg.seed)
        out.mkdir(parents=True, exist_ok=True)
        files = [
            fd.write_csv(rows, out / "fewer_devices.csv"),
            *fd.plot(rows, out / "fewer_devices"),
        ]
        say("wrote " + ", ".join(str(f) for f in files))
