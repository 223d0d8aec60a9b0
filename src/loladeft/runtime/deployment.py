"""Flower's deployment runtime on one machine: DEFT on a whole local federation.

:func:`deploy` starts a :class:`~loladeft.runtime.federation.LocalFederation` (its own
SuperLink and one SuperNode per device on 127.0.0.1, free ports, a private ``FLWR_HOME``),
runs the app of ``flower_app/`` on it with the run's settings, and stops every process it
started, whatever happens. The ServerApp writes ``loladeft train``'s files into ``out``;
``out/flower-logs/`` keeps every process's log and the run's (``run.log``).

On several machines the same app runs unchanged: see the README, "Real devices".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from loladeft.exceptions import FederationError

#: The Flower app folder (``flwr run <APP_DIR> <federation>``).
APP_DIR = Path(__file__).parent / "flower_app"


def with_absolute_paths(cfg: Any) -> Any:
    """``cfg`` with its data folder, model folder and profile file made absolute: the
    ServerApp and the ClientApps run in other working directories."""
    changes = {
        name: str(Path(value).resolve())
        for name in ("data_dir", "model", "profile")
        if (value := getattr(cfg, name)) is not None and Path(value).exists()
    }
    return replace(cfg, **changes)


def run_config(cfg: Any, out: Path, options: Any, *, runtime: str, resume: bool) -> dict:
    """The ServerApp's run config (see :mod:`loladeft.runtime.app`)."""
    from loladeft.runtime import protocol

    return {
        "config": protocol.encode_config(with_absolute_paths(cfg)),
        "out": str(Path(out).resolve()),
        "runtime": runtime,
        "resume": resume,
        **options.to_run_config(),
    }


def deploy(
    cfg: Any,
    out: str | Path,
    options: Any,
    spec: Any,
    *,
    resume: bool = False,
    timeout: float = 3600,
    watch: Callable[[Any], None] | None = None,
    interval: float = 0.5,
) -> Any:
    """Run DEFT on a local federation of ``spec.nodes`` SuperNodes.

    Parameters
    ----------
    cfg, out, options
        Run settings, output folder, :class:`~loladeft.runtime.server.RuntimeOptions`.
    spec
        :class:`~loladeft.runtime.federation.FederationSpec` (nodes, TLS, auth, warm).
    resume
        Continue the run in ``out``.
    timeout
        Wall seconds allowed for the run.
    watch
        Called with the federation every ``interval`` s while the run goes on (progress
        bars; tests kill nodes from it).

    Returns
    -------
    RunOutcome
        Flower's account of the run (``ok`` is true).

    Raises
    ------
    FederationError
        The federation did not come up or the run did not finish; the message holds its
        status and the last lines of its log.
    """
    from loladeft.runtime.federation import LocalFederation
    from loladeft.runtime.flwr_cli import write_run_config

    # every node computes at once: give each its share of the cores, as Ray gives each
    # virtual node in simulation (torch's default, all cores per process, oversubscribes)
    threads = str(max(1, (os.cpu_count() or 1) // max(1, spec.nodes)))
    spec = replace(spec, env={"OMP_NUM_THREADS": threads, **(spec.env or {})})
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rc = run_config(cfg, out, options, runtime="local", resume=resume)
    logs = out / "flower-logs"
    logs.mkdir(exist_ok=True)
    write_run_config(logs / "run-config.toml", rc)  # to rerun on a real federation
    result: dict[str, Any] = {}
    with LocalFederation(spec, log_dir=logs) as fed:
        worker = threading.Thread(
            target=lambda: result.update(outcome=fed.run(APP_DIR, rc, timeout=timeout)),
            daemon=True,
        )
        worker.start()
        while worker.is_alive():
            worker.join(interval)
            if watch is not None:
                watch(fed)
    outcome = result.get("outcome")
    if outcome is not None:
        (logs / "run.log").write_text(outcome.output, encoding="utf-8")
    if outcome is None or not outcome.ok:
        status = "no outcome" if outcome is None else f"{outcome.status} {outcome.details}"
        tail = "" if outcome is None else " | ".join(outcome.output.strip().splitlines()[-3:])
        raise FederationError(f"flower run: {status.strip()}; see {out}/flower-logs ({tail})")
    return outcome


def rounds_done(metrics_csv: Path) -> int:
    """Rounds recorded so far in a run's ``metrics.csv`` (0 while it does not exist)."""
    from loladeft.training.run import read_metrics

    try:
        rows = read_metrics(Path(metrics_csv))
    except OSError:
        return 0
    return max(0, len({r["round"] for r in rows}) - 1)
