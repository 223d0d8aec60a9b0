"""``loladeft simulate``: the paper's latency experiments (Figs. 5, 6, 8) as Monte-Carlo sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import typer

from loladeft.cli._common import ConfigFile, PrintConfig, fail, load, option, split
from loladeft.config import (
    QUICK_ROUNDS,
    Config,
    Experiment,
    PresetName,
    SnrConvention,
    Statistic,
)

#: The tables ``simulate`` reads (``""`` is the top level), for ``--print-config``.
TABLES = ("", "scenario", "sweeps")
ALL: tuple[str, ...] = get_args(Experiment)
ExperimentOrAll = Literal[(*ALL, "all")]  # type: ignore[valid-type]


def simulate(
    experiment: Annotated[
        ExperimentOrAll | None,
        option(
            "experiments",
            "--experiment",
            "-e",
            help="fig5 (latency vs transmit SNR), fig6 (vs uplink bandwidth), fig8 (vs number "
            "of devices), or all.",
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        option("rounds", help=f"Monte-Carlo rounds per point (--quick: {QUICK_ROUNDS})."),
    ] = None,
    devices: Annotated[int | None, option("scenario.num_devices", "--devices", "-K")] = None,
    seed: Annotated[int | None, option("seed")] = None,
    out: Annotated[
        Path | None, option("out", help="Output folder for CSV, PNG/PDF and manifest.json.")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help=f"{QUICK_ROUNDS} rounds per point (unless --rounds is given)."
        ),
    ] = False,
    config: ConfigFile = None,
    workers: Annotated[
        int | None,
        option("workers", help="Worker processes across points (at most one per point)."),
    ] = None,
    schemes: Annotated[
        str | None, option("schemes", help="Comma-separated schemes to compare.")
    ] = None,
    profile: Annotated[str | None, option("scenario.profile")] = None,
    snr_db: Annotated[float | None, option("scenario.snr_db")] = None,
    snr_convention: Annotated[SnrConvention | None, option("scenario.snr_convention")] = None,
    bandwidth_mhz: Annotated[float | None, option("scenario.bandwidth_mhz")] = None,
    local_iterations: Annotated[
        int | None, option("scenario.local_iterations", "--local-iterations", "-M")
    ] = None,
    preset: Annotated[PresetName | None, option("preset")] = None,
    stat: Annotated[Statistic | None, option("stat")] = None,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Write only CSV and manifest.")
    ] = False,
    print_config: PrintConfig = False,
) -> None:
    """Average round latency of every scheme over thousands of simulated rounds.

    Writes <name>.csv, <name>.png, <name>.pdf per experiment and manifest.json into --out
    (all at once, when the sweep is done), and prints each scheme's latency relative to
    comm-aware beside the paper's figures.
    """
    if quick and rounds is None:
        rounds = QUICK_ROUNDS
    whole = None if experiment is None else ALL if experiment == "all" else [experiment]
    cfg = load(
        config,
        {
            "experiments": whole,
            "rounds": rounds,
            "scenario.num_devices": devices,
            "seed": seed,
            "out": None if out is None else str(out),
            "workers": workers,
            "schemes": split(schemes),
            "scenario.profile": profile,
            "scenario.snr_db": snr_db,
            "scenario.snr_convention": snr_convention,
            "scenario.bandwidth_mhz": bandwidth_mhz,
            "scenario.local_iterations": local_iterations,
            "preset": preset,
            "stat": stat,
        },
        command="simulate",
        print_config=print_config,
        tables=TABLES,
    )
    run(cfg, plots=not no_plots)


def run(cfg: Config, *, plots: bool = True) -> None:
    """Run the sweep of ``cfg`` and print its summary (one-line errors)."""
    from rich.console import Console

    from loladeft.exceptions import LoladeftError
    from loladeft.experiments.simulate import print_summary, run_simulation

    console = Console(stderr=False)
    try:
        report = run_simulation(cfg, plots=plots, console=console)
    except LoladeftError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"out: cannot write {cfg.out}: {exc.strerror or exc}")
    print_summary(report, console)
