"""``loladeft train``: fine-tune a model on a GLUE task with multi-device DEFT (Algorithm 1)
on the simulated edge clock, or the centralized PEFT baseline (``--scheme centralized``).

The options of one training run are defined here once and shared by ``loladeft flower`` and
``loladeft reproduce``; each sets one key of :mod:`loladeft.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from loladeft.cli._common import ConfigFile, PrintConfig, fail, load, option, split
from loladeft.config import Config, Precision, TrainScheme
from loladeft.exceptions import LoladeftError
from loladeft.training.data import TASKS

#: The tables a training run reads, for ``--print-config``.
TABLES = ("scenario", "lora", "train")

TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]
Task = Annotated[TaskName | None, option("train.task", case_sensitive=False)]
Scheme = Annotated[TrainScheme | None, option("train.scheme")]
Devices = Annotated[int | None, option("scenario.num_devices", "--devices", "-K")]
Rounds = Annotated[int | None, option("train.rounds")]
DataDir = Annotated[
    Path | None,
    option(
        "train.data_dir",
        help="GLUE TSV folder (e.g. ../shared/data/glue); "
        "omit to download glue/<task> with Hugging Face datasets.",
    ),
]
Model = Annotated[str | None, option("train.model")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")]
Batch = Annotated[int | None, option("train.batch")]
LocalIterations = Annotated[
    int | None, option("scenario.local_iterations", "--local-iterations", "-M")
]
Lr = Annotated[float | None, option("train.lr")]
EvalEvery = Annotated[int | None, option("train.eval_every")]
Seed = Annotated[int | None, option("train.seed")]
Profile = Annotated[str | None, option("scenario.profile")]
Precision_ = Annotated[Precision | None, option("train.precision")]
Threads = Annotated[int | None, typer.Option(help="torch CPU threads.", min=1)]


def run_overrides(**flags: Any) -> dict[str, Any]:
    """Configuration overrides from the shared run options (by parameter name)."""
    keys = {
        "task": "train.task",
        "scheme": "train.scheme",
        "devices": "scenario.num_devices",
        "nodes": "scenario.num_devices",
        "rounds": "train.rounds",
        "data_dir": "train.data_dir",
        "model": "train.model",
        "batch": "train.batch",
        "local_iterations": "scenario.local_iterations",
        "lr": "train.lr",
        "eval_every": "train.eval_every",
        "seed": "train.seed",
        "profile": "scenario.profile",
        "precision": "train.precision",
    }
    out = {keys[k]: v for k, v in flags.items()}
    if out.get("train.data_dir") is not None:
        out["train.data_dir"] = str(out["train.data_dir"])
    return out


def need_task(cfg: Config) -> None:
    """A training run needs a task: from ``--task`` or ``[train] task``."""
    if cfg.train.task is None:
        fail("train.task: give --task or set task in the [train] table of --config")


def train(
    task: Task = None,
    scheme: Scheme = None,
    devices: Devices = None,
    rounds: Rounds = None,
    data_dir: DataDir = None,
    model: Model = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/train"),
    resume: Resume = False,
    batch: Batch = None,
    local_iterations: LocalIterations = None,
    lr: Lr = None,
    eval_every: EvalEvery = None,
    seed: Seed = None,
    shared_schemes: Annotated[
        str | None,
        option(
            "train.shared_schemes",
            help="Shared-trajectory mode: comma-separated schemes whose clocks replay this one "
            "training run (data routed by --scheme).",
        ),
    ] = None,
    profile: Profile = None,
    lora_r: Annotated[int | None, option("lora.r", "--lora-r")] = None,
    lora_targets: Annotated[
        str | None,
        option("lora.targets", "--lora-targets", help="Comma-separated LoRA target modules."),
    ] = None,
    max_length: Annotated[int | None, option("train.max_length")] = None,
    checkpoint_every: Annotated[int | None, option("train.checkpoint_every")] = None,
    max_eval_samples: Annotated[int | None, option("train.max_eval_samples")] = None,
    precision: Precision_ = None,
    snr_db: Annotated[float | None, option("scenario.snr_db")] = None,
    bandwidth_mhz: Annotated[float | None, option("scenario.bandwidth_mhz")] = None,
    layers_per_block: Annotated[int | None, option("scenario.layers_per_block")] = None,
    max_blocks_per_device: Annotated[int | None, option("scenario.max_blocks_per_device")] = None,
    extra_block_memory_gb: Annotated[float | None, option("scenario.extra_block_memory_gb")] = None,
    threads: Threads = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
) -> None:
    """Fine-tune with DEFT on the simulated edge clock.

    Writes metrics.csv, manifest.json, the checkpoint, adapter/ and metric_vs_time.png into
    --out.
    """
    cfg = load(
        config,
        {
            **run_overrides(
                task=task,
                scheme=scheme,
                devices=devices,
                rounds=rounds,
                data_dir=data_dir,
                model=model,
                batch=batch,
                local_iterations=local_iterations,
                lr=lr,
                eval_every=eval_every,
                seed=seed,
                profile=profile,
                precision=precision,
            ),
            "train.shared_schemes": split(shared_schemes),
            "lora.r": lora_r,
            "lora.targets": split(lora_targets),
            "train.max_length": max_length,
            "train.checkpoint_every": checkpoint_every,
            "train.max_eval_samples": max_eval_samples,
            "scenario.snr_db": snr_db,
            "scenario.bandwidth_mhz": bandwidth_mhz,
            "scenario.layers_per_block": layers_per_block,
            "scenario.max_blocks_per_device": max_blocks_per_device,
            "scenario.extra_block_memory_gb": extra_block_memory_gb,
        },
        command="train",
        print_config=print_config,
        tables=TABLES,
    )
    need_task(cfg)
    run_with_progress(cfg, out, resume=resume, threads=threads)


def run_with_progress(
    cfg: Any,
    out: Path,
    *,
    resume: bool,
    threads: int | None = None,
    label: str | None = None,
    runner: Any = None,
) -> Any:
    """Run :func:`loladeft.training.run.train` (or ``runner``, same signature) under a Rich
    progress bar; one-line errors."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    try:
        from loladeft.training.run import check_out_dir
        from loladeft.training.run import train as run_train

        check_out_dir(out, resume, cfg)  # before the slow imports
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        # the bar starts with the first round, so that bad input found while loading the
        # data and the model prints only its one error line
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        desc = label or f"{cfg.train.task} · {cfg.train.scheme} · {cfg.train.mode}"
        tid = bar.add_task(desc, total=cfg.train.rounds, info="")

        def on_round(trainer: Any, rec: Any) -> None:
            bar.start()
            info = f"loss {rec.train_loss:.4f}"
            if trainer.sim_time:
                s = cfg.train.clock_schemes[-1]
                info += f" · sim {trainer.sim_time[s] / 60:.2f} min ({s})"
            if rec.metrics:
                name, value = next(iter(rec.metrics.items()))
                info += f" · {name} {value:.4f}"
            bar.update(tid, completed=rec.round, info=info)

        try:
            trainer = (runner or run_train)(
                cfg,
                out,
                resume=resume,
                on_round=on_round,
                log=lambda m: console.print(f"[yellow]{m}"),
            )
        finally:
            bar.stop()
    except LoladeftError as exc:
        fail(str(exc))
    console.print(
        f"wrote {out}/metrics.csv, manifest.json, checkpoint.json + .safetensors, adapter/, "
        "metric_vs_time.png"
    )
    return trainer
