"""``loladeft reproduce``: every artifact of the paper (Figs. 4-8, Table I) into one folder.

See :mod:`loladeft.experiments.reproduce` for what each target makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loladeft.cli._common import ConfigFile, PrintConfig, fail, load, option, split
from loladeft.cli.train import (
    Batch,
    DataDir,
    Devices,
    EvalEvery,
    LocalIterations,
    Lr,
    Model,
    Precision_,
    Profile,
    Threads,
    run_overrides,
)
from loladeft.config import QUICK_ROUNDS, Config
from loladeft.exceptions import LoladeftError
from loladeft.experiments.reproduce import TABLE1_TASKS, Target, plan


def reproduce(
    target: Annotated[
        Target,
        typer.Argument(
            help="fig4 (memory/latency vs depth), fig5, fig6, fig8 (the latency sweeps of "
            "loladeft simulate), fig7 or table1 (training runs; both make both), all, or "
            "fewer-devices (not in the paper: latency against K = 4..64 for the 32-block "
            "Llama-7B with grouped layers and multi-block devices)."
        ),
    ],
    tasks: Annotated[
        str, typer.Option(help="Comma-separated GLUE tasks of Table I / Fig. 7.")
    ] = ",".join(TABLE1_TASKS),
    out: Annotated[
        Path | None, option("out", help="Output folder; Table I goes into its table1/.")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help=f"Sweeps with {QUICK_ROUNDS} rounds per point.")
    ] = False,
    workers: Annotated[int | None, option("workers")] = None,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared/--separate",
            help="Shared-trajectory mode: one training run per task replayed on every "
            "scheme's clock (cheap), instead of one run per scheme (faithful).",
        ),
    ] = False,
    rounds: Annotated[
        int | None,
        option(
            "train.rounds",
            help="Communication rounds N of each training run (fig7, table1); the sweeps' "
            "Monte-Carlo rounds come from --config or --quick.",
        ),
    ] = None,
    devices: Devices = None,
    data_dir: DataDir = None,
    model: Model = None,
    profile: Profile = None,
    batch: Batch = None,
    local_iterations: LocalIterations = None,
    lr: Lr = None,
    eval_every: EvalEvery = None,
    precision: Precision_ = None,
    threads: Threads = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Reproduce a figure or table of the paper (or all of them) into --out.

    Finished training runs in --out/table1 are reused, interrupted ones resumed.
    """
    cfg = load(
        config,
        {
            **run_overrides(
                rounds=rounds,
                devices=devices,
                data_dir=data_dir,
                model=model,
                profile=profile,
                batch=batch,
                local_iterations=local_iterations,
                lr=lr,
                eval_every=eval_every,
                precision=precision,
            ),
            "out": None if out is None else str(out),
            "workers": workers,
            "rounds": QUICK_ROUNDS if quick else None,
        },
        command="reproduce",
        print_config=print_config,
    )
    names: tuple[str, ...] = ()
    if "table1" in plan(target):
        from loladeft.training.data import get_task

        try:
            names = tuple(get_task(t).name for t in split(tasks) or ())
        except LoladeftError as exc:
            fail(f"tasks: {str(exc).removeprefix('task: ')}")
        if not names:
            fail("tasks: give at least one task")

    from rich.console import Console

    from loladeft.cli.simulate import run as sweep
    from loladeft.cli.train import run_with_progress
    from loladeft.experiments.reproduce import reproduce as make

    console = Console()

    def train(run_cfg: Config, folder: Path, label: str) -> None:
        run_with_progress(run_cfg, folder, resume=True, threads=threads, label=label)

    try:
        make(
            target,
            cfg,
            tasks=names,
            shared=shared,
            sweep=sweep,
            train=train,
            say=console.print,
        )
    except LoladeftError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"out: cannot write {cfg.out}: {exc.strerror or exc}")
    if "table1" in plan(target):
        console.print((Path(cfg.out) / "table1" / "table1.md").read_text(encoding="utf-8"))
