"""Flower's deployment runtime on one machine: DEFT on a whole local federation.

:func:`deploy` starts a :class:`~loladeft.runtime.federation.LocalFederation` (its own
SuperLink and one SuperNode per device on 127.0.0.1, free ports, a private ``FLWR_HOME``),
runs loladeft's Flower app (:func:`write_app`) on it with the run's settings, and stops every
process it started, whatever happens. The ServerApp writes ``loladeft train``'s files into
``out``; ``out/flower-logs/`` keeps every process's log and the run's (``run.log``), the app
folder (``app/``) and the run config (``run-config.toml``), to rerun on a real federation.

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

#: Run-config keys of the app besides the run's settings (see :mod:`loladeft.runtime.app`).
APP_KEYS = {"out": "", "runtime": "deployment", "resume": False}


def write_app(folder: Path) -> Path:
    """Write loladeft's Flower app into ``folder`` (``flwr run <folder> <federation>``).

    The app holds no code: its components are loaded by reference from the installed
    package. Its ``[tool.flwr.app.config]`` declares every run-config key with its default
    (Flower refuses undeclared keys), taken from :mod:`loladeft.config`.
    """
    import tomli_w

    from loladeft import __version__
    from loladeft.config import Config, to_flat

    app = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "loladeft-deft",
            "version": __version__,
            "description": "LoLa-DEFT (Algorithm 1): block-wise LoRA fine-tuning over "
            "heterogeneous edge devices",
            "license": "Apache-2.0",
            "dependencies": ["loladeft[train,flower]"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "loladeft",
                    "components": {
                        "serverapp": "loladeft.runtime.app:server_app",
                        "clientapp": "loladeft.runtime.app:client_app",
                    },
                    "config": {**APP_KEYS, **to_flat(Config())},
                }
            }
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(app), encoding="utf-8")
    return folder


def with_absolute_paths(cfg: Any) -> Any:
    """``cfg`` with its data folder, model folder and profile file made absolute: the
    ServerApp and the ClientApps run in other working directories."""
    changes = {
        key: str(Path(value).resolve())
        for key, value in (
            ("train.data_dir", cfg.train.data_dir),
            ("train.model", cfg.train.model),
            ("scenario.profile", cfg.scenario.profile),
        )
        if value is not None and Path(value).exists()
    }
    return cfg.updated(changes)


def run_config(cfg: Any, out: Path, *, runtime: str, resume: bool) -> dict:
    """The ServerApp's run config (see :mod:`loladeft.runtime.app`)."""
    from loladeft.config import to_flat

    return {
        **to_flat(with_absolute_paths(cfg)),
        "out": str(Path(out).resolve()),
        "runtime": runtime,
        "resume": resume,
    }


def deploy(
    cfg: Any,
    out: str | Path,
    *,
    resume: bool = False,
    spec: Any = None,
    watch: Callable[[Any], None] | None = None,
    interval: float = 0.5,
) -> Any:
    """Run DEFT on a local federation of ``spec.nodes`` SuperNodes.

    Parameters
    ----------
    cfg, out
        Run settings (:class:`~loladeft.config.Config`; ``cfg.runtime`` says how to launch:
        ``insecure``, ``warm``, ``timeout``) and output folder.
    resume
        Continue the run in ``out``.
    spec
        :class:`~loladeft.runtime.federation.FederationSpec` to start instead of the one
        ``cfg.runtime`` describes (one SuperNode per device).
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
    from loladeft.runtime.federation import FederationSpec, LocalFederation
    from loladeft.runtime.flwr_cli import write_run_config

    rt = cfg.runtime
    if spec is None:
        secure = not rt.insecure
        spec = FederationSpec(nodes=cfg.scenario.num_devices, tls=secure, auth=secure, warm=rt.warm)
    # every node computes at once: give each its share of the cores, as Ray gives each
    # virtual node in simulation (torch's default, all cores per process, oversubscribes)
    threads = str(max(1, (os.cpu_count() or 1) // max(1, spec.nodes)))
    spec = replace(spec, env={"OMP_NUM_THREADS": threads, **(spec.env or {})})
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rc = run_config(cfg, out, runtime="local", resume=resume)
    logs = out / "flower-logs"
    logs.mkdir(exist_ok=True)
    app = write_app(logs / "app")
    write_run_config(logs / "run-config.toml", rc)  # to rerun on a real federation
    result: dict[str, Any] = {}
    with LocalFederation(spec, log_dir=logs) as fed:
        worker = threading.Thread(
            target=lambda: result.update(outcome=fed.run(app, rc, timeout=rt.timeout)),
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
