"""Run the latency sweeps end to end: scenario, Monte-Carlo points, files, summary table."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loladeft.experiments.config import SimulationConfig
from loladeft.experiments.output import (
    git_revision,
    package_versions,
    write_csv,
    write_manifest,
)
from loladeft.experiments.runner import PointResult, PointTask, SweepResults, run_tasks
from loladeft.experiments.sweeps import EXPERIMENTS, PAPER_RATIOS, Experiment
from loladeft.system.scenario import BlockCosts, ProfileLike, Scenario, load_block_costs


def base_scenario(
    cfg: SimulationConfig, profile: ProfileLike | BlockCosts | None = None
) -> Scenario:
    """The default point of every sweep, from the config (and a profile object if given)."""
    sc = cfg.scenario
    if isinstance(profile, BlockCosts):
        costs = profile
    else:
        costs = load_block_costs(sc.profile if profile is None else profile)
    return Scenario(
        costs=costs,
        num_devices=sc.num_devices,
        snr_db=sc.snr_db,
        bandwidth_hz=sc.bandwidth_mhz * 1e6,
        path_loss=sc.path_loss,
        snr_convention=sc.snr_convention,
        local_iterations=sc.local_iterations,
        compute_factor=sc.compute_factor,
        memory_gb=sc.memory_gb,
        reference=sc.reference_device,
        fixed_compute=sc.fixed_compute,
    )


def build_tasks(cfg: SimulationConfig, base: Scenario) -> list[PointTask]:
    """One task per (experiment, x); every point's scenario is validated here, up front."""
    from loladeft.system.scenario import InvalidScenarioError

    tasks = []
    for name in cfg.experiments:
        exp = EXPERIMENTS[name]
        for i, x in enumerate(cfg.sweeps[name]):
            try:
                scenario = exp.apply(base, x)
            except InvalidScenarioError as exc:
                raise InvalidScenarioError(f"sweeps.{name}[{i}]", str(exc)) from None
            tasks.append(
                PointTask(exp, i, float(x), scenario, tuple(cfg.schemes), cfg.rounds, cfg.seed)
            )
    return tasks


@dataclass
class SummaryRow:
    """One line of the summary table."""

    experiment: str
    x: float
    scheme: str
    mean_latency_s: float
    ci95_s: float
    relative_to_comm_aware: float
    compute_share: float
    infeasible_rounds: int
    rounds: int
    paper: list[dict[str, Any]] = field(default_factory=list)


def summarize(cfg: SimulationConfig, base: Scenario, sweeps: SweepResults) -> list[SummaryRow]:
    """Rows at each experiment's default point (and the paper's quoted point, if other)."""
    rows: list[SummaryRow] = []
    for name, points in sweeps.points.items():
        exp = EXPERIMENTS[name]
        wanted = [exp.default_x(base)]
        if exp.paper_point is not None and exp.paper_point not in wanted:
            wanted.append(exp.paper_point)
        for x in wanted:
            point = next((p for p in points if math.isclose(p.x, x)), None)
            if point is None:
                continue
            stats = {st.scheme: st for st in point.stats()}
            ref = stats.get("comm-aware")
            for st in stats.values():
                rel = (st.mean_latency_s / ref.mean_latency_s) if ref else math.nan
                paper = []
                for (e, px, s, r), ratio in PAPER_RATIOS.items():
                    if e == name and math.isclose(px, x) and s == st.scheme and r in stats:
                        ours = st.mean_latency_s / stats[r].mean_latency_s
                        paper.append({"reference": r, "paper": ratio, "ours": ours})
                rows.append(
                    SummaryRow(
                        name,
                        x,
                        st.scheme,
                        st.mean_latency_s,
                        st.ci95_s,
                        rel,
                        st.compute_share,
                        st.infeasible_rounds,
                        st.rounds,
                        paper,
                    )
                )
    return rows


def solver_timing(sweeps: SweepResults) -> dict[str, dict[str, float]]:
    """Mean solver time per solve (ms) and total solver seconds, per scheme."""
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    for points in sweeps.points.values():
        for p in points:
            for s, name in enumerate(p.schemes):
                total[name] = total.get(name, 0.0) + float(p.solve_seconds[s])
                count[name] = count.get(name, 0) + p.rounds
    return {
        n: {"ms_per_solve": 1e3 * total[n] / count[n], "total_seconds": total[n]} for n in total
    }


@dataclass
class SimulationReport:
    """What :func:`run_simulation` produced."""

    config: SimulationConfig
    scenario: Scenario
    sweeps: SweepResults
    summary: list[SummaryRow]
    timing: dict[str, dict[str, float]]
    files: list[Path]
    wall_seconds: float


def run_simulation(
    cfg: SimulationConfig,
    *,
    profile: ProfileLike | BlockCosts | None = None,
    plots: bool = True,
    progress: bool = True,
    console: Any = None,
) -> SimulationReport:
    """Run every configured experiment, write its files into ``cfg.out``, return a report.

    Parameters
    ----------
    cfg
        A validated :class:`~loladeft.experiments.config.SimulationConfig`.
    profile
        A profile object (or :class:`BlockCosts`) to use instead of ``cfg.scenario.profile``.
    plots
        Write ``<name>.png`` and ``<name>.pdf`` (needs matplotlib).
    progress
        Show a Rich progress bar on ``console``.

    Raises
    ------
    InvalidScenarioError, ConfigError
        Invalid parameters (checked before any simulation starts).
    """
    start = time.perf_counter()
    base = base_scenario(cfg, profile)
    tasks = build_tasks(cfg, base)
    out_dir = Path(cfg.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from loladeft.experiments.config import ConfigError

        raise ConfigError(f"out: cannot create {out_dir}: {exc.strerror}") from None

    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("[bold]simulate[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("points"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        with bar:
            job = bar.add_task(
                f"{len(tasks)} points x {cfg.rounds} rounds x {len(cfg.schemes)} schemes",
                total=len(tasks),
            )

            def done(res: PointResult) -> None:
                bar.advance(job)

            sweeps = run_tasks(tasks, cfg.workers, done)
    else:
        sweeps = run_tasks(tasks, cfg.workers)

    files: list[Path] = []
    subtitle = (
        f"{base.costs.model}, {cfg.rounds} rounds/point, "
        f"{base.snr_convention} SNR, M = {base.local_iterations}"
    )
    for name, points in sweeps.points.items():
        exp = EXPERIMENTS[name]
        csv_path = out_dir / f"{name}.csv"
        write_csv(csv_path, exp, points)
        files.append(csv_path)
        if plots:
            from loladeft.experiments.plotting import plot_experiment

            files.extend(plot_experiment(exp, points, out_dir, subtitle))
    summary = summarize(cfg, base, sweeps)
    timing = solver_timing(sweeps)
    wall = time.perf_counter() - start
    manifest_path = out_dir / "manifest.json"
    files.append(manifest_path)
    write_manifest(manifest_path, _manifest(cfg, base, sweeps, summary, timing, files, wall))
    return SimulationReport(cfg, base, sweeps, summary, timing, files, wall)


def _point_record(exp: Experiment, p: PointResult) -> dict[str, Any]:
    return {
        exp.column: p.x,
        "wall_seconds": p.wall_seconds,
        "schemes": [
            {
                "scheme": st.scheme,
                "mean_latency_s": st.mean_latency_s,
                "ci95_s": st.ci95_s,
                "median_latency_s": st.median_latency_s,
                "rounds": st.rounds,
                "infeasible_rounds": st.infeasible_rounds,
                "compute_share": st.compute_share,
                "memory_wall_rounds": st.memory_wall_rounds,
                "solve_seconds": st.solve_seconds,
            }
            for st in p.stats()
        ],
    }


def _manifest(
    cfg: SimulationConfig,
    base: Scenario,
    sweeps: SweepResults,
    summary: list[SummaryRow],
    timing: dict[str, dict[str, float]],
    files: list[Path],
    wall: float,
) -> dict[str, Any]:
    return {
        "tool": "loladeft simulate",
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "scenario": base.describe(),
        "seeding": "point i of experiment e: SeedSequence(seed, spawn_key=(e.key, i)); "
        "keys fig5=5, fig6=6, fig8=8",
        "experiments": {
            name: {
                "x": EXPERIMENTS[name].column,
                "points": [_point_record(EXPERIMENTS[name], p) for p in points],
            }
            for name, points in sweeps.points.items()
        },
        "summary": [vars(r) | {"x": r.x} for r in summary],
        "solver_timing": timing,
        "versions": package_versions(),
        "git": git_revision(),
        "wall_seconds": {"total": wall, "sweeps": sweeps.wall_seconds},
        "workers": cfg.workers,
        "files": [f.name for f in files],
    }


def print_summary(report: SimulationReport, console: Any = None) -> None:
    """The Rich summary: latency relative to comm-aware, beside the paper's figures.

    One table per experiment and reported point; the paper's ratios, where it quotes one,
    follow each table.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    units = {"snr_db": " dB", "bandwidth_mhz": " MHz", "num_devices": " devices"}
    groups: dict[tuple[str, float], list[SummaryRow]] = {}
    for r in report.summary:
        groups.setdefault((r.experiment, r.x), []).append(r)
    for (name, x), rows in groups.items():
        exp = EXPERIMENTS[name]
        xs = f"{int(x)}" if exp.column == "num_devices" else f"{x:g}"
        table = Table(
            title=f"{name} at {xs}{units[exp.column]} ({exp.title})",
            title_justify="left",
            title_style="bold",
        )
        table.add_column("scheme", no_wrap=True)
        table.add_column("latency (s) ± 95% CI", justify="right", no_wrap=True)
        table.add_column("vs comm-aware", justify="right", no_wrap=True)
        table.add_column("comp / comm", justify="right", no_wrap=True)
        table.add_column("infeasible", justify="right", no_wrap=True)
        notes = []
        for r in rows:
            share = (
                "-"
                if math.isnan(r.compute_share)
                else f"{100 * r.compute_share:.0f}% / {100 * (1 - r.compute_share):.0f}%"
            )
            table.add_row(
                r.scheme,
                f"{r.mean_latency_s:.3f} ± {r.ci95_s:.3f}",
                f"{r.relative_to_comm_aware:.2f}×",
                share,
                f"{r.infeasible_rounds}/{r.rounds}",
            )
            notes += [
                f"  paper: {r.scheme} = {p['paper']:.2f} × {p['reference']}; here {p['ours']:.2f} ×"
                for p in r.paper
            ]
        console.print(table)
        for line in notes:
            console.print(line)
    timing = Table(
        title="Solver time per solve (all points)", title_justify="left", title_style="bold"
    )
    timing.add_column("scheme", no_wrap=True)
    timing.add_column("ms / solve", justify="right")
    timing.add_column("total s", justify="right")
    for name, t in report.timing.items():
        timing.add_row(name, f"{t['ms_per_solve']:.3f}", f"{t['total_seconds']:.1f}")
    console.print(timing)
    sc = report.scenario
    ref = sc.reference.name  # type: ignore[union-attr]
    console.print(
        f"Scenario: {sc.costs.model}, K = {sc.num_devices}, L = {sc.num_blocks}, "
        f"{sc.snr_convention} SNR {sc.snr_db:g} dB (mean received SNR "
        f"{sc.mean_received_snr:.3g}), B = {sc.bandwidth_hz / 1e6:g} MHz, "
        f"M = {sc.local_iterations}, reference device {ref}. "
        "comp / comm: computation vs upload share of the latency of the device that sets "
        "the round latency, averaged over feasible rounds."
    )
    console.print(
        f"Wrote {len(report.files)} files to {report.config.out}/ in "
        f"{report.wall_seconds:.1f} s (sweeps {report.sweeps.wall_seconds:.1f} s, "
        f"{report.config.workers} workers)."
    )
