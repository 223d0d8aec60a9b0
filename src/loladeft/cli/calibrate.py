"""``loladeft calibrate``: fit the unstated compute scale and mean received SNR of a preset to
the paper's latency ratios (or to ratios given with ``--target``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loladeft.cli._common import ConfigFile, fail, load, option
from loladeft.config import PresetName


def calibrate(
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help="EXP:SCHEME/REFERENCE=RATIO or EXP@K:SCHEME/REFERENCE=RATIO, repeatable; "
            "EXP is fig5, fig6, fig8 (alone: K = 50) or table1 (default: the paper's "
            "fig5:ba/comm-aware=0.6, fig8:jbba/comm-aware=0.4, fig8:jbba/ba=0.6, "
            "table1:ba/comm-aware=0.7, table1:jbba/comm-aware=0.6).",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[PresetName | None, option("preset")] = None,
    config: ConfigFile = None,
    seed: Annotated[int | None, option("seed")] = None,
    rounds: Annotated[
        int,
        typer.Option(min=10, help="Monte-Carlo rounds per evaluation (common random numbers)."),
    ] = 100,
    fit_snr: Annotated[
        bool,
        typer.Option(
            "--fit-snr",
            help="Fit the mean received SNR too (-20..30 dB grid); default: hold the preset's.",
        ),
    ] = False,
    out: Annotated[
        Path,
        typer.Option(help="Where to write the fitted configuration (TOML for --config)."),
    ] = Path("calibrated.toml"),
) -> None:
    """Fit scenario.compute_scale (and with --fit-snr the mean received SNR) to target
    latency ratios.

    Prints, per ratio, the target, the fitted value and the range the model reaches over the
    search grid (compute scale 1e-3..10; with --fit-snr also mean received SNR -20..30 dB),
    and writes the fitted configuration: loladeft simulate --config calibrated.toml. The same
    seed gives the same fit.
    """
    import tomli_w

    from loladeft.exceptions import LoladeftError
    from loladeft.experiments.calibrate import calibrate as fit_ratios
    from loladeft.experiments.calibrate import fitted_config, parse_target

    cfg = load(config, {"preset": preset, "seed": seed}, command="calibrate")
    try:
        targets = None if not target else [parse_target(t) for t in target]
        fit = fit_ratios(cfg, targets, rounds=rounds, fit_snr=fit_snr)
    except LoladeftError as exc:
        fail(str(exc))
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"Fit of preset {cfg.preset or '(none)'}, seed {cfg.seed}, {rounds} rounds",
        title_justify="left",
        title_style="bold",
    )
    for col in ("ratio", "K", "target", "fitted", "grid range"):
        table.add_column(col, no_wrap=True, justify="left" if col == "ratio" else "right")
    sources = []
    for t in fit.targets:
        lo, hi = fit.bounds[t.label]
        k = t.num_devices or cfg.scenario.num_devices
        table.add_row(
            t.label, str(k), f"{t.ratio:.2f}", f"{fit.ratios[t.label]:.3f}", f"{lo:.3f}-{hi:.3f}"
        )
        sources.append(f"  {t.label}: {t.source}")
    console.print(table)
    for line in dict.fromkeys(sources):
        console.print(line)
    console.print(
        f"compute_scale = {fit.compute_scale:.3g}, mean received SNR = {fit.snr_db:.1f} dB "
        f"(snr_convention = received); rms log error {fit.rms_log_error():.3f}; "
        f"{fit.evaluations} evaluations. The reachable ranges are per ratio: the targets "
        "together may be out of reach (README, Regimes)."
    )
    try:
        out.write_text(
            "# written by loladeft calibrate; loladeft simulate --config "
            + str(out)
            + "\n"
            + tomli_w.dumps(fitted_config(cfg, fit)),
            encoding="utf-8",
        )
    except OSError as exc:
        fail(f"--out: cannot write {out}: {exc.strerror or exc}")
    console.print(f"Wrote {out}")
