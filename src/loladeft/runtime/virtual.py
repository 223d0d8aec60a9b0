"""Virtual devices: DEFT on Flower's simulation runtime (``K`` Ray actors, the server in a
thread); ``loladeft flower virtual``. Named apart from ``loladeft simulate``, the Monte-Carlo
latency sweep, which runs no Flower at all.

Each virtual node is device ``partition-id`` of the run; its state comes from the scenario
model by that id (:mod:`loladeft.runtime.device`), so the heterogeneity is the in-process
clock's. The runtime runs the very ``client_app`` of :mod:`loladeft.runtime.app` and the
server of :mod:`loladeft.runtime.server`; it differs from deployment only in transport.

This uses ``flwr.simulation.run_simulation``, the in-process entry point of flwr 1.42
(deprecated there in favour of ``flwr run`` on a local simulation SuperLink, which would
leave a SuperLink daemon behind; this one starts and stops everything it uses).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_virtual(
    cfg: Any,
    out: str | Path,
    *,
    resume: bool = False,
    on_round: Callable[[Any, Any], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Run DEFT on ``cfg.scenario.num_devices`` virtual Flower nodes; writes ``loladeft
    train``'s files.

    Parameters
    ----------
    cfg
        The run's settings (:class:`~loladeft.config.Config`); ``cfg.runtime.cpus_per_node``
        cores are reserved by Ray for each virtual node (bounds how many compute at once).
    out
        Output folder.
    resume
        Continue the run in ``out``.
    on_round, log
        As for :func:`loladeft.training.run.train`.

    Returns
    -------
    FlowerTrainer
        The finished server-side trainer.
    """
    from loladeft.runtime.flwr_cli import OFFLINE_ENV

    for key, value in {**OFFLINE_ENV, "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(key, value)  # offline by default, unless the user says otherwise
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from loladeft.runtime.app import client_app
    from loladeft.runtime.server import run_server

    done: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Any, context: Any) -> None:
        done["trainer"] = run_server(
            grid,
            cfg,
            out,
            runtime="virtual",
            resume=resume,
            on_round=on_round,
            log=log,
        )

    backend = {
        "client_resources": {"num_cpus": cfg.runtime.cpus_per_node, "num_gpus": 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
    }
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=cfg.scenario.num_devices,
                backend_config=backend,
            )
    finally:
        flwr_logger.setLevel(level)
    return done.get("trainer")
