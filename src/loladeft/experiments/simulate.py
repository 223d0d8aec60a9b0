"""Run the latency sweeps end to end: scenario, Monte-Carlo points, files, summary table."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loladeft.config import PAPER_PROFILE, Config
from loladeft.experiments.output import write_csv
from loladeft.experiments.runner import PointResult, PointTask, SweepResults, run_tasks
from loladeft.experiments.sweeps import (
    EXPERIMENTS,
    MODEL_BEST,
    PAPER_RATIOS,
    REGIMES_POINTER,
    Experiment,
)
from loladeft.results import StagedOutput, write_manifest
from loladeft.system.scenario import BlockCosts, ProfileLike, Scenario

#: The ``tool`` entry of the manifest (and the owner of the files of an output folder).
TOOL = "loladeft simulate"
#: Every file a sweep may write besides ``manifest.json``.
OUTPUT_FILES = tuple(f"{name}.{ext}" for name in EXPERIMENTS for ext in ("csv", "png", "pdf"))


def load_block_costs(profile: str | ProfileLike | BlockCosts) -> BlockCosts:
    """Block costs of a profile given by builtin name, file path or profile object."""
    if isinstance(profile, BlockCosts):
        return profile
    if isinstance(profile, str):
        from loladeft.profiling.profile import load_profile

        profile = load_profile(profile)
    return BlockCosts.from_profile(profile)


def base_scenario(cfg: Config, profile: ProfileLike | BlockCosts | None = None) -> Scenario:
    """The default point of every sweep, from ``cfg.scenario`` (profile: a given object, else
    ``scenario.profile``, else :data:`~loladeft.config.PAPER_PROFILE`)."""
    sc = cfg.scenario
    costs = load_block_costs(profile if profile is not None else sc.profile or PAPER_PROFILE)
    return sc.scenario(costs)


def build_tasks(cfg: Config, base: Scenario) -> list[PointTask]:
    """One task per (experiment, x); every point's scenario is validated here, up front."""
    from loladeft.system.scenario import InvalidScenarioError

    tasks = []
    for name in cfg.experiments:
        exp = EXPERIMENTS[name]
        for i, x in enumerate(getattr(cfg.sweeps, name)):
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
    median_latency_s: float = math.nan
    heavy_tail: bool = False


def summarize(cfg: Config, base: Scenario, sweeps: SweepResults) -> list[SummaryRow]:
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
                        best = MODEL_BEST.get((e, px, s, r), math.nan)
                        paper.append(
                            {"reference": r, "paper": ratio, "ours": ours, "model_best": best}
                        )
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
                        st.median_latency_s,
                        st.heavy_tail,
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

    config: Config
    scenario: Scenario
    sweeps: SweepResults
    summary: list[SummaryRow]
    timing: dict[str, dict[str, float]]
    files: list[Path]
    wall_seconds: float


def run_simulation(
    cfg: Config,
    *,
    profile: ProfileLike | BlockCosts | None = None,
    plots: bool = True,
    progress: bool = True,
    console: Any = None,
) -> SimulationReport:
    """Run every configured experiment, write its files into ``cfg.out``, return a report.

    The files are written into a fresh sibling folder that replaces ``cfg.out`` at the end
    (:class:`~loladeft.results.StagedOutput`): an interrupted or failed sweep leaves
    ``cfg.out`` as it was, and a folder holding another run's files is refused up front.

    Parameters
    ----------
    cfg
        The configuration (its top level, ``[scenario]`` and ``[sweeps]``).
    profile
        A profile object (or :class:`BlockCosts`) to use instead of ``cfg.scenario.profile``.
    plots
        Write ``<name>.png`` and ``<name>.pdf`` (needs matplotlib).
    progress
        Show a Rich progress bar on ``console``.

    Raises
    ------
    InvalidScenarioError, InputError
        Invalid parameters or an unusable ``cfg.out`` (checked before any simulation starts).
    """
    start = time.perf_counter()
    base = base_scenario(cfg, profile)
    tasks = build_tasks(cfg, base)
    out_dir = Path(cfg.out)
    staged = StagedOutput(out_dir, TOOL, OUTPUT_FILES)
    try:
        sweeps = _sweep(cfg, tasks, progress, console)
        names: list[str] = []
        subtitle = (
            f"{base.costs.model}, {cfg.rounds} rounds/point, "
            f"{base.snr_convention} SNR, M = {base.local_iterations}"
            + (f", preset {cfg.preset}" if cfg.preset else "")
        )
        for name, points in sweeps.points.items():
            exp = EXPERIMENTS[name]
            if exp.column == "snr_db" and base.snr_convention == "received":
                exp = replace(
                    exp,
                    label="Mean received SNR (dB)",
                    title=exp.title.replace("transmit SNR", "mean received SNR"),
                )
            write_csv(staged.path / f"{name}.csv", exp, points)
            names.append(f"{name}.csv")
            if plots:
                from loladeft.experiments.plotting import plot_experiment

                names += [
                    p.name for p in plot_experiment(exp, points, staged.path, subtitle, cfg.stat)
                ]
        summary = summarize(cfg, base, sweeps)
        timing = solver_timing(sweeps)
        wall = time.perf_counter() - start
        names.append("manifest.json")
        write_manifest(
            staged.path / "manifest.json",
            _manifest(cfg, base, sweeps, summary, timing, names, wall),
            packages=("matplotlib", "rich", "typer"),
        )
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    files = [out_dir / n for n in names]
    return SimulationReport(cfg, base, sweeps, summary, timing, files, wall)


def _sweep(cfg: Config, tasks: list[PointTask], progress: bool, console: Any) -> SweepResults:
    if not progress:
        return run_tasks(tasks, cfg.workers)
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
        return run_tasks(tasks, cfg.workers, lambda _res: bar.advance(job))


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
                "q25_latency_s": st.q25_latency_s,
                "q75_latency_s": st.q75_latency_s,
                "tail_index": st.tail_index,
                "heavy_tail": st.heavy_tail,
                "rounds": st.rounds,
                "infeasible_rounds": st.infeasible_rounds,
                "compute_share": st.compute_share,
                "memory_wall_rounds": st.memory_wall_rounds,
                "solve_seconds": st.solve_seconds,
            }
            for st in p.stats()
        ],
    }


def sweep_config(cfg: Config) -> dict[str, Any]:
    """What determines a sweep: the top level, ``[scenario]`` and ``[sweeps]`` (JSON-ready;
    the profile is the one used)."""
    data = cfg.model_dump(mode="json", exclude={"lora", "train", "runtime"})
    data["scenario"]["profile"] = cfg.scenario.profile or PAPER_PROFILE
    return data


def _manifest(
    cfg: Config,
    base: Scenario,
    sweeps: SweepResults,
    summary: list[SummaryRow],
    timing: dict[str, dict[str, float]],
    files: list[str],
    wall: float,
) -> dict[str, Any]:
    return {
        "tool": TOOL,
        "seed": cfg.seed,
        "config": sweep_config(cfg),
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
        "wall_seconds": {"total": wall, "sweeps": sweeps.wall_seconds},
        "workers": sweeps.workers,
        "files": files,
    }


def _short(value: float) -> str:
    """A latency in a summary cell: 3 decimals below 100 s, else 4 significant digits."""
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.4g}"


def _ci(value: float) -> str:
    """A confidence half-width in a summary cell: 2 significant digits."""
    return f"{value:.2g}" if abs(value) < 100 else f"{value:.0f}"


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
            title=f"{name} at {xs}{units[exp.column]} ({exp.title}), latency in s",
            title_justify="left",
            title_style="bold",
        )
        table.add_column("scheme", no_wrap=True)
        table.add_column("mean ± CI", justify="right", no_wrap=True)
        table.add_column("median", justify="right", no_wrap=True)
        table.add_column("vs comm-aware", justify="right", no_wrap=True)
        table.add_column("comp/comm", justify="right", no_wrap=True)
        table.add_column("infeasible", justify="right", no_wrap=True)
        notes = []
        for r in rows:
            share = (
                "-"
                if math.isnan(r.compute_share)
                else f"{100 * r.compute_share:.0f}%/{100 * (1 - r.compute_share):.0f}%"
            )
            heavy = "heavy tail"
            table.add_row(
                r.scheme,
                heavy if r.heavy_tail else f"{_short(r.mean_latency_s)} ± {_ci(r.ci95_s)}",
                _short(r.median_latency_s),
                "-" if r.heavy_tail else f"{r.relative_to_comm_aware:.2f}×",
                share,
                f"{r.infeasible_rounds}/{r.rounds}",
            )
            name = report.config.preset
            preset = f"preset {name}" if name else "this configuration"
            for p in r.paper:
                best = p.get("model_best", math.nan)
                reach = (
                    "" if math.isnan(best) else f"; the paper's model reaches {best:.2f} × at best"
                )
                notes.append(
                    f"  paper: {r.scheme} = {p['paper']:.2f} × {p['reference']}; "
                    f"here {p['ours']:.2f} × ({preset}){reach}"
                )
        console.print(table)
        for line in notes:
            console.print(line)
        if notes:
            console.print(f"  why: {REGIMES_POINTER}")
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
        f"M = {sc.local_iterations}, reference device {ref}, compute scale "
        f"{sc.compute_scale:g}, equal split {sc.equal_split} (BA) / {sc.benchmark_split} "
        f"(benchmarks), preset {report.config.preset or 'none'}. "
        "comp/comm: computation vs upload share of the latency of the device that sets "
        "the round latency, averaged over feasible rounds. heavy tail: the scheme's latency "
        "has a tail index below 2.5, its mean does not converge "
        "(loladeft.experiments.statistics); read the median."
    )
    console.print(
        f"Wrote {len(report.files)} files to {report.config.out}/ in "
        f"{report.wall_seconds:.1f} s (sweeps {report.sweeps.wall_seconds:.1f} s, "
        f"{report.sweeps.workers} workers)."
    )
