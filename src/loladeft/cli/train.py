"""``loladeft train``: fine-tune a model on a GLUE task with multi-device DEFT (Algorithm 1)
on the simulated edge clock, or the centralized PEFT baseline (``--scheme centralized``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loladeft.cli._common import fail
from loladeft.exceptions import LoladeftError


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def train(
    task: Annotated[
        str, typer.Option(help="GLUE task: cola, sst2, mrpc, stsb, rte, qnli, qqp, mnli.")
    ],
    scheme: Annotated[
        str,
        typer.Option(
            help="Scheduling scheme (jbba, ba, comm-aware... see "
            "'loladeft solve --help') or 'centralized'."
        ),
    ] = "jbba",
    devices: Annotated[int, typer.Option(help="K devices holding i.i.d. shards.")] = 20,
    rounds: Annotated[int, typer.Option(help="Communication rounds N (= optimizer steps).")] = 100,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="GLUE TSV folder (e.g. ../shared/data/glue); omit to download glue/<task> with "
            "Hugging Face datasets."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="'minilm' (offline), a HF folder or hub id.")
    ] = "minilm",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/train"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    batch: Annotated[int, typer.Option(help="Per-device batch of one local iteration.")] = 32,
    local_iterations: Annotated[
        int, typer.Option("--local-iterations", "-M", help="M local iterations per round.")
    ] = 1,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (peak).")] = 5e-4,
    eval_every: Annotated[int, typer.Option(help="Evaluate every this many rounds.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of everything random.")] = 0,
    shared: Annotated[
        str | None,
        typer.Option(
            help="Shared-trajectory mode: comma-separated schemes whose clocks replay this one "
            "training run (data routed by --scheme)."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Profile for d(l), b(l) (builtin name or JSON); default: the model's builtin."
        ),
    ] = None,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_targets: Annotated[str, typer.Option(help="LoRA target modules.")] = "query,value",
    max_length: Annotated[int, typer.Option(help="Token limit per example.")] = 128,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 where the CPU has native bf16), fp32 or bf16 (CPU autocast)."
        ),
    ] = "auto",
    snr_db: Annotated[float, typer.Option(help="Transmit SNR in dB.")] = 10.0,
    bandwidth_mhz: Annotated[float, typer.Option(help="Uplink bandwidth B in MHz.")] = 100.0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    layers_per_block: Annotated[
        int, typer.Option(help="Consecutive layers per LoRA block (1: one block per layer).")
    ] = 1,
    max_blocks_per_device: Annotated[
        int,
        typer.Option(
            help="Most blocks one device computes per round (one backward pass to its "
            "deepest); > 1 allows fewer devices than blocks."
        ),
    ] = 1,
    extra_block_memory_gb: Annotated[
        float, typer.Option(help="Memory (GB) each carried block beyond the deepest adds.")
    ] = 0.0,
) -> None:
    """Fine-tune with DEFT on the simulated edge clock; writes metrics.csv, manifest.json,
    checkpoint.pt, adapter/ and metric_vs_time.png into --out."""
    from loladeft.config import load_config

    try:
        cfg = load_config(
            None,
            {
                "train.task": task,
                "train.scheme": scheme,
                "train.rounds": rounds,
                "scenario.num_devices": devices,
                "train.batch": batch,
                "scenario.local_iterations": local_iterations,
                "train.lr": lr,
                "lora.r": lora_r,
                "lora.targets": _split(lora_targets),
                "train.max_length": max_length,
                "train.model": model,
                "scenario.profile": profile,
                "train.data_dir": None if data_dir is None else str(data_dir),
                "train.eval_every": eval_every,
                "train.seed": seed,
                "scenario.snr_db": snr_db,
                "scenario.bandwidth_mhz": bandwidth_mhz,
                "train.shared_schemes": _split(shared),
                "train.precision": precision,
                "scenario.layers_per_block": layers_per_block,
                "scenario.max_blocks_per_device": max_blocks_per_device,
                "scenario.extra_block_memory_gb": extra_block_memory_gb,
            },
        )
    except LoladeftError as exc:
        fail(str(exc))
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

        check_out_dir(out, resume)  # before the slow imports
        if threads is not None:
            import torch

            if threads < 1:
                fail(f"threads: must be >= 1, got {threads}")
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
        f"wrote {out}/metrics.csv, manifest.json, checkpoint.pt, adapter/, metric_vs_time.png"
    )
    return trainer
