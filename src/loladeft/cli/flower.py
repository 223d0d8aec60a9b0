"""``loladeft flower``: DEFT on Flower, in its simulation engine or a local deployment.

``loladeft flower virtual``  K virtual nodes (Ray actors) in this process (Flower's
                             simulation runtime);
``loladeft flower local``    a whole federation on 127.0.0.1: its own SuperLink and ``N``
                             SuperNodes (free ports, a private ``FLWR_HOME``), TLS and
                             SuperNode authentication unless ``--insecure``, stopped at the
                             end whatever happens.

Both take ``loladeft train``'s options (and ``--config``), write the same
``metrics.csv``/``manifest.json``, and read ``[runtime]`` for the server's timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer

from loladeft.cli._common import ConfigFile, PrintConfig, fail, load, option
from loladeft.cli.train import (
    Batch,
    DataDir,
    EvalEvery,
    LocalIterations,
    Lr,
    Model,
    Precision_,
    Profile,
    Resume,
    Rounds,
    Scheme,
    Seed,
    Task,
    need_task,
    run_overrides,
)
from loladeft.exceptions import LoladeftError

app = typer.Typer(
    help="Run DEFT on Flower: virtual nodes in this process, or a local SuperLink + SuperNodes.",
    no_args_is_help=True,
)

#: The tables a Flower run reads, for ``--print-config``.
TABLES = ("scenario", "lora", "train", "runtime")

RoundTimeout = Annotated[float | None, option("runtime.round_timeout")]
StragglerProb = Annotated[float | None, option("runtime.straggler_prob")]
DeadlineFactor = Annotated[float | None, option("runtime.deadline_factor")]
MaxGradNorm = Annotated[float | None, option("runtime.max_grad_norm")]
DeviceModel = Annotated[
    str | None,
    option(
        "scenario.device_model",
        click_type=click.Choice(["scenario", "measured"]),
        metavar="[scenario|measured]",
    ),
]


def _settings(config: Path | None, command: str, print_config: bool, **flags: Any) -> Any:
    """The run's configuration, checked, and the data, model and profile found, before
    anything starts (one-line errors)."""
    runtime = {f"runtime.{k}": flags.pop(k) for k in list(flags) if k in _RUNTIME}
    runtime["scenario.device_model"] = flags.pop("device_model", None)
    cfg = load(
        config,
        {**run_overrides(**flags), **runtime},
        command=command,
        print_config=print_config,
        tables=TABLES,
    )
    need_task(cfg)
    try:
        _check_ready(cfg)
    except LoladeftError as exc:
        fail(_flag_names(str(exc)))
    return cfg


_RUNTIME = (
    "round_timeout",
    "straggler_prob",
    "deadline_factor",
    "max_grad_norm",
    "cpus_per_node",
    "insecure",
    "warm",
    "timeout",
)


@app.command("virtual")
def virtual(
    task: Task = None,
    nodes: Annotated[
        int | None, option("scenario.num_devices", "--nodes", help="K virtual nodes (devices).")
    ] = None,
    scheme: Scheme = None,
    rounds: Rounds = None,
    data_dir: DataDir = None,
    model: Model = None,
    profile: Profile = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/flower-virtual"),
    resume: Resume = False,
    batch: Batch = None,
    local_iterations: LocalIterations = None,
    lr: Lr = None,
    eval_every: EvalEvery = None,
    seed: Seed = None,
    precision: Precision_ = None,
    round_timeout: RoundTimeout = None,
    straggler_prob: StragglerProb = None,
    deadline_factor: DeadlineFactor = None,
    max_grad_norm: MaxGradNorm = None,
    device_model: DeviceModel = None,
    cpus_per_node: Annotated[float | None, option("runtime.cpus_per_node")] = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """DEFT on K virtual Flower nodes (Flower's simulation runtime); writes loladeft train's
    files."""
    flags = {
        k: v for k, v in locals().items() if k not in ("out", "resume", "config", "print_config")
    }
    cfg = _settings(config, "flower virtual", print_config, **flags)
    from loladeft.cli.train import run_with_progress

    def runner(cfg: Any, out: Path, *, resume: bool, on_round: Any, log: Any) -> Any:
        from loladeft.runtime.virtual import run_virtual

        return run_virtual(cfg, out, resume=resume, on_round=on_round, log=log)

    label = f"{cfg.train.task} · {cfg.train.scheme} · flower virtual"
    run_with_progress(cfg, out, resume=resume, label=label, runner=runner)


@app.command("local")
def local(
    task: Task = None,
    nodes: Annotated[
        int | None,
        option(
            "scenario.num_devices",
            "--nodes",
            help="N SuperNodes (devices) to start; at least the model's L blocks.",
            command="flower local",
        ),
    ] = None,
    scheme: Scheme = None,
    rounds: Annotated[int | None, option("train.rounds", command="flower local")] = None,
    data_dir: DataDir = None,
    model: Model = None,
    profile: Profile = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/flower-local"),
    resume: Resume = False,
    batch: Batch = None,
    local_iterations: LocalIterations = None,
    lr: Lr = None,
    eval_every: Annotated[int | None, option("train.eval_every", command="flower local")] = None,
    seed: Seed = None,
    precision: Precision_ = None,
    round_timeout: RoundTimeout = None,
    straggler_prob: StragglerProb = None,
    deadline_factor: DeadlineFactor = None,
    max_grad_norm: MaxGradNorm = None,
    device_model: DeviceModel = None,
    insecure: Annotated[bool | None, option("runtime.insecure", "--insecure/--secure")] = None,
    warm: Annotated[
        bool | None,
        option(
            "runtime.warm",
            "--warm/--cold",
            help="Run each node's tasks in a warm executor (model kept in memory) or in "
            "Flower's fresh process per message.",
        ),
    ] = None,
    timeout: Annotated[float | None, option("runtime.timeout")] = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """A whole Flower federation on 127.0.0.1 (SuperLink + N SuperNodes) running DEFT.

    Writes loladeft train's files plus flower-logs/, and stops every process it started.
    """
    flags = {
        k: v for k, v in locals().items() if k not in ("out", "resume", "config", "print_config")
    }
    cfg = _settings(config, "flower local", print_config, **flags)
    from rich.console import Console

    from loladeft.training.run import check_out_dir

    console = Console(stderr=True)
    try:
        check_out_dir(out, resume, cfg)
        outcome = run_local(cfg, out.resolve(), resume=resume, console=console)
    except LoladeftError as exc:
        fail(_flag_names(str(exc)))
    console.print(
        f"run {outcome.run_id}: {outcome.status} in {outcome.seconds:.1f} s; wrote {out}/"
        "metrics.csv, manifest.json, the checkpoint, adapter/, metric_vs_time.png, flower-logs/"
    )


def _flag_names(message: str) -> str:
    """Name the K devices by this command's flag."""
    for key in ("scenario.num_devices:", "num_devices:"):
        if message.startswith(key):
            return "nodes:" + message[len(key) :]
    return message


def _check_ready(cfg: Any) -> None:
    """Fail fast, before any process starts, on settings the ServerApp would reject."""
    from loladeft.models import model_source
    from loladeft.training.data import load_task
    from loladeft.training.engine import run_profile

    load_task(cfg.train.task, cfg.train.data_dir)
    model_source(cfg.train.model)
    run_profile(cfg)


def run_local(
    cfg: Any,
    out: Path,
    *,
    resume: bool = False,
    console: Any = None,
) -> Any:
    """:func:`loladeft.runtime.deployment.deploy` under a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from loladeft.runtime.deployment import deploy, rounds_done

    with Progress(
        TextColumn(
            f"{cfg.train.task} · {cfg.train.scheme} · flower local "
            f"({cfg.scenario.num_devices} nodes)"
        ),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as bar:
        tid = bar.add_task("", total=cfg.train.rounds)
        return deploy(
            cfg,
            out,
            resume=resume,
            watch=lambda _fed: bar.update(tid, completed=rounds_done(out / "metrics.csv")),
        )
