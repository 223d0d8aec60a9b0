"""``loladeft simulate``: the paper's latency experiments (Figs. 5, 6, 8) as Monte-Carlo sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loladeft.cli._common import fail

_EXPERIMENTS = ("fig5", "fig6", "fig8", "all")


def simulate(
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            "-e",
            help="fig5 (latency vs transmit SNR), fig6 (vs uplink bandwidth), "
            "fig8 (vs number of devices), or all (default: all, or the "
            "config file's list).",
            show_default=False,
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Monte-Carlo rounds per point (default: 1000, --quick: 100).", show_default=False
        ),
    ] = None,
    devices: Annotated[
        int | None,
        typer.Option(
            "--devices",
            "-K",
            help="Number of devices K at the default point (default: 20).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Master seed (default: 2024).", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder for CSV, PNG/PDF and manifest.json (default: results).",
            show_default=False,
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="100 rounds per point (unless --rounds is given).")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML file with any setting (see configs/paper.toml); flags override it.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes across points (default: 2).", show_default=False),
    ] = None,
    schemes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated schemes (default: comm-aware,comp-aware,random,"
            "ba,jbba-dual,jbba).",
            show_default=False,
        ),
    ] = None,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Write only CSV and manifest.")
    ] = False,
) -> None:
    """Average round latency of every scheme over thousands of simulated rounds.

    Writes <name>.csv, <name>.png, <name>.pdf per experiment and manifest.json into --out,
    and prints each scheme's latency relative to comm-aware beside the paper's figures.
    """
    from loladeft.exceptions import LoladeftError
    from loladeft.experiments.config import QUICK_ROUNDS, load_config

    if experiment is not None and experiment not in _EXPERIMENTS:
        fail(f"--experiment: unknown {experiment!r}; choose one of {', '.join(_EXPERIMENTS)}")
    try:
        cfg = load_config(config)
        if quick and rounds is None:
            rounds = QUICK_ROUNDS
        cfg = cfg.with_overrides(
            rounds=rounds,
            seed=seed,
            out=None if out is None else str(out),
            workers=workers,
            num_devices=devices,
            experiments=(
                None
                if experiment is None
                else ("fig5", "fig6", "fig8")
                if experiment == "all"
                else (experiment,)
            ),
            schemes=None
            if schemes is None
            else tuple(s.strip() for s in schemes.split(",") if s.strip()),
        )
    except LoladeftError as exc:
        fail(str(exc))

    from rich.console import Console

    from loladeft.experiments.simulate import print_summary, run_simulation

    console = Console(stderr=False)
    try:
        report = run_simulation(cfg, plots=not no_plots, console=console)
    except (LoladeftError, OSError) as exc:
        fail(str(exc))
    print_summary(report, console)
