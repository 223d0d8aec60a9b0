"""``loladeft flower``: DEFT on Flower, in its simulation runtime or a local deployment.

``loladeft flower virtual``   K virtual nodes (Flower's simulation runtime, Ray actors) in this
                              process;
``loladeft flower local``     a whole federation on 127.0.0.1: its own SuperLink and ``N``
                              SuperNodes (free ports, a private ``FLWR_HOME``), stopped at the
                              end whatever happens.

Both write the same ``metrics.csv``/``manifest.json`` as ``loladeft train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loladeft.cli._common import fail
from loladeft.exceptions import LoladeftError

app = typer.Typer(
    help="Run DEFT on Flower: simulation runtime or a local SuperLink + SuperNodes.",
    no_args_is_help=True,
)

Task = Annotated[str, typer.Option(help="GLUE task: cola, sst2, mrpc, stsb, rte, qnli, qqp, mnli.")]
Scheme = Annotated[str, typer.Option(help="Scheduling scheme (jbba, ba, comm-aware...).")]
Rounds = Annotated[int, typer.Option(help="Communication rounds N.")]
DataDir = Annotated[
    Path | None,
    typer.Option(help="GLUE TSV folder (e.g. ../shared/data/glue); omit for HF datasets."),
]
Model = Annotated[str, typer.Option(help="'minilm' (offline), a HF folder or hub id.")]
Profile = Annotated[
    str | None, typer.Option(help="Profile for d(l), b(l); default: the model's builtin.")
]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")]
Batch = Annotated[int, typer.Option(help="Per-device batch of one local iteration.")]
LocalIterations = Annotated[
    int, typer.Option("--local-iterations", "-M", help="M local iterations per round.")
]
Lr = Annotated[float, typer.Option(help="AdamW learning rate (peak).")]
EvalEvery = Annotated[int, typer.Option(help="Evaluate every this many rounds.")]
Seed = Annotated[int, typer.Option(help="Seed of everything random.")]
Precision = Annotated[str, typer.Option(help="auto, fp32 or bf16.")]
RoundTimeout = Annotated[
    float, typer.Option(help="Wall seconds a node has to return its gradient.")
]
StragglerProb = Annotated[
    float, typer.Option(help="Probability a scheduled device misses the virtual deadline.")
]
DeadlineFactor = Annotated[
    float, typer.Option(help="Virtual deadline as a multiple of the planned round latency.")
]
MaxGradNorm = Annotated[
    float, typer.Option(help="Replies with a larger gradient norm are rejected.")
]
DeviceModel = Annotated[
    str,
    typer.Option(
        help="scenario (drawn f_k and memory, FLOP profile) or measured (nodes self-profile; "
        "links estimated from their transfers)."
    ),
]


_KEYS = {
    "nodes": "scenario.num_devices",
    "local_iterations": "scenario.local_iterations",
    "profile": "scenario.profile",
    "device_model": "scenario.device_model",
    **{
        k: f"runtime.{k}"
        for k in (
            "round_timeout",
            "straggler_prob",
            "deadline_factor",
            "max_grad_norm",
            "cpus_per_node",
            "warm",
            "insecure",
            "timeout",
        )
    },
}
#: Options of ``local`` that say where to write, not what to run.
_LAUNCH = ("out", "resume")


def _settings(**kw: Any) -> Any:
    """The run's settings from a command's options, checked, and the data, model and
    profile found, before anything starts."""
    from loladeft.config import load_config

    if kw.get("data_dir") is not None:
        kw["data_dir"] = str(kw["data_dir"])
    cfg = load_config(None, {_KEYS.get(k, f"train.{k}"): v for k, v in kw.items()})
    _check_ready(cfg)
    return cfg


@app.command("virtual")
def virtual(
    task: Task,
    nodes: Annotated[int, typer.Option(help="K virtual nodes (devices).")] = 20,
    scheme: Scheme = "jbba",
    rounds: Rounds = 100,
    data_dir: DataDir = None,
    model: Model = "minilm",
    profile: Profile = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/flower-sim"),
    resume: Resume = False,
    batch: Batch = 32,
    local_iterations: LocalIterations = 1,
    lr: Lr = 5e-4,
    eval_every: EvalEvery = 10,
    seed: Seed = 0,
    precision: Precision = "auto",
    round_timeout: RoundTimeout = 120.0,
    straggler_prob: StragglerProb = 0.0,
    deadline_factor: DeadlineFactor = 2.0,
    max_grad_norm: MaxGradNorm = 1e4,
    device_model: DeviceModel = "scenario",
    cpus_per_node: Annotated[
        float, typer.Option(help="CPU cores Ray reserves per virtual node.")
    ] = 1.0,
) -> None:
    """DEFT on K virtual Flower nodes (Flower's simulation runtime, not the Monte-Carlo
    `loladeft simulate`); writes loladeft train's files."""
    settings = {k: v for k, v in locals().items() if k not in ("out", "resume")}
    from loladeft.cli.train import run_with_progress

    try:
        cfg = _settings(**settings)
    except LoladeftError as exc:
        fail(_flag_names(str(exc)))

    def runner(cfg: Any, out: Path, *, resume: bool, on_round: Any, log: Any) -> Any:
        from loladeft.runtime.virtual import run_virtual

        return run_virtual(cfg, out, resume=resume, on_round=on_round, log=log)

    label = f"{cfg.train.task} · {cfg.train.scheme} · flower simulation"
    run_with_progress(cfg, out, resume=resume, label=label, runner=runner)


@app.command("local")
def local(
    task: Task,
    nodes: Annotated[
        int, typer.Option(help="N SuperNodes (devices) to start; at least the model's L blocks.")
    ] = 8,
    scheme: Scheme = "jbba",
    rounds: Rounds = 10,
    data_dir: DataDir = None,
    model: Model = "minilm",
    profile: Profile = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/flower-local"),
    resume: Resume = False,
    batch: Batch = 32,
    local_iterations: LocalIterations = 1,
    lr: Lr = 5e-4,
    eval_every: EvalEvery = 5,
    seed: Seed = 0,
    precision: Precision = "auto",
    round_timeout: RoundTimeout = 120.0,
    straggler_prob: StragglerProb = 0.0,
    deadline_factor: DeadlineFactor = 2.0,
    max_grad_norm: MaxGradNorm = 1e4,
    device_model: DeviceModel = "scenario",
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="No TLS and no SuperNode authentication (both on by default: certificates "
            "and node keys are made).",
        ),
    ] = False,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm/--cold",
            help="Run each node's tasks in a warm executor (model kept in memory) or in "
            "Flower's fresh process per message.",
        ),
    ] = True,
    timeout: Annotated[float, typer.Option(help="Wall seconds allowed for the whole run.")] = 3600,
) -> None:
    """A whole Flower federation on 127.0.0.1 (SuperLink + N SuperNodes) running DEFT; writes
    loladeft train's files plus flower-logs/, and stops every process it started."""
    settings = {k: v for k, v in locals().items() if k not in _LAUNCH}
    from rich.console import Console

    from loladeft.training.run import check_out_dir

    console = Console(stderr=True)
    try:
        cfg = _settings(**settings)
        check_out_dir(out, resume)
        outcome = run_local(cfg, out.resolve(), resume=resume, console=console)
    except LoladeftError as exc:
        fail(_flag_names(str(exc)))
    console.print(
        f"run {outcome.run_id}: {outcome.status} in {outcome.seconds:.1f} s; wrote {out}/"
        "metrics.csv, manifest.json, checkpoint.pt, adapter/, metric_vs_time.png, flower-logs/"
    )


def _flag_names(message: str) -> str:
    """Name the K devices by this command's flag."""
    for key in ("scenario.num_devices:", "num_devices:"):
        if message.startswith(key):
            return "nodes:" + message[len(key) :]
    return message


def _check_ready(cfg: Any) -> None:
    """Fail fast, before any process starts, on settings the ServerApp would reject."""
    from loladeft.training.data import load_task
    from loladeft.training.engine import run_profile
    from loladeft.training.model import model_path

    load_task(cfg.train.task, cfg.train.data_dir)
    model_path(cfg.train.model)
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
