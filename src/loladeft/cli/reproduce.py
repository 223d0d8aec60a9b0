"""``loladeft reproduce table1``: Table I and Fig. 7 (time to 90% of the centralized metric)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loladeft.cli._common import fail
from loladeft.exceptions import LoladeftError

WHAT = ("table1",)


def reproduce(
    what: Annotated[str, typer.Argument(help="What to reproduce: table1.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated GLUE tasks.")] = "mrpc,rte",
    rounds: Annotated[int, typer.Option(help="Rounds (= steps) of every run.")] = 100,
    devices: Annotated[int, typer.Option(help="K devices.")] = 20,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="GLUE TSV folder (e.g. ../shared/data/glue); omit for HF datasets (online)."
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="'minilm', a HF folder or hub id.")] = "minilm",
    profile: Annotated[
        str | None,
        typer.Option(
            help="Profile for d(l), b(l) (builtin name or JSON); default: the model's builtin."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/table1"),
    shared: Annotated[
        bool,
        typer.Option(
            "--shared/--separate",
            help="One training run replayed on every scheme's clock (cheap) instead of one run "
            "per scheme (faithful, default).",
        ),
    ] = False,
    batch: Annotated[int, typer.Option(help="Per-device batch.")] = 32,
    local_iterations: Annotated[int, typer.Option("--local-iterations", "-M")] = 1,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate.")] = 5e-4,
    eval_every: Annotated[int, typer.Option(help="Evaluate every this many rounds.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 where the CPU has native bf16), fp32 or bf16.")
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Run centralized + comm-aware + ba + jbba per task and write table1.md/.csv and
    fig7_<task>.png. Finished runs in --out are reused, interrupted ones resumed."""
    if what not in WHAT:
        fail(f"what: unknown target {what!r}; choose one of {', '.join(WHAT)}")
    from loladeft.cli.train import _split, run_with_progress
    from loladeft.config import load_config
    from loladeft.training.data import get_task
    from loladeft.training.table1 import run_table1

    names = _split(tasks)
    try:
        if not names:
            fail("tasks: give at least one task")
        names = tuple(get_task(t).name for t in names)
        base = load_config(
            None,
            {
                "train.task": names[0],
                "train.scheme": "jbba",
                "train.rounds": rounds,
                "scenario.num_devices": devices,
                "train.batch": batch,
                "scenario.local_iterations": local_iterations,
                "train.lr": lr,
                "train.model": model,
                "scenario.profile": profile,
                "train.data_dir": None if data_dir is None else str(data_dir),
                "train.eval_every": eval_every,
                "train.seed": seed,
                "train.precision": precision,
            },
        )
    except LoladeftError as exc:
        fail(str(exc))

    def run(cfg: Any, folder: Path, label: str) -> None:
        run_with_progress(cfg, folder, resume=True, threads=threads, label=label)

    try:
        rows = run_table1(base, names, out, shared=shared, run=run)
    except LoladeftError as exc:
        fail(str(exc))
    from rich.console import Console

    Console().print((out / "table1.md").read_text(encoding="utf-8"))
    Console().print(f"wrote {out}/table1.md, table1.csv, fig7_<task>.png ({len(rows)} rows)")
