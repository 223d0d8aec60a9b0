"""The Flower app: ``server_app`` (Algorithm 1's server) and ``client_app`` (a device).

Flower loads these objects by reference (``loladeft.runtime.app:server_app`` and
``:client_app``, see :func:`loladeft.runtime.deployment.write_app`), so loladeft must be
installed in the environment of the SuperLink and of every SuperNode: a Flower app bundle
carries only ``.py/.toml/.md/.yaml/.json`` files.

Run config of the ServerApp (``flwr run --run-config``): every setting of the run's tables
of :mod:`loladeft.config` as one flat typed key (``train.lr = 0.0005``,
``scenario.num_devices = 20``, ``runtime.round_timeout = 120.0``; lists as comma-separated
strings, unset values as ``""``), so ``flwr run --run-config 'train.lr=1e-3'`` overrides one,
and

``out``      absolute output folder on the server's machine (required);
``runtime``  label written to the manifest (default ``deployment``);
``resume``   continue the run in ``out`` (default false).
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from loladeft.runtime import device

client_app = ClientApp()


@client_app.query()
def query(message: Message, context: Context) -> Message:
    """Report this device's state for the round."""
    return device.handle_query(message, context)


@client_app.train()
def train(message: Message, context: Context) -> Message:
    """Compute the scheduled block's gradient."""
    return device.handle_train(message, context)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Run DEFT with the settings of the run config; writes ``loladeft train``'s files."""
    from loladeft.config import from_flat
    from loladeft.exceptions import LoladeftError
    from loladeft.runtime.server import run_server

    rc: Any = context.run_config
    if not rc.get("out"):
        raise LoladeftError("run-config: out is required")
    cfg = from_flat({k: v for k, v in rc.items() if "." in k})
    run_server(
        grid,
        cfg,
        str(rc["out"]),
        runtime=str(rc.get("runtime", "deployment")),
        resume=bool(rc.get("resume", False)),
        log=_log,
    )


def _log(message: str) -> None:
    """One line into Flower's run log (the ``flwr`` logger, which Flower forwards)."""
    import logging

    logging.getLogger("flwr").warning("loladeft: %s", message)
