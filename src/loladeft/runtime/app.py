"""The Flower app: ``server_app`` (Algorithm 1's server) and ``client_app`` (a device).

Flower loads these objects by reference (``loladeft.runtime.app:server_app`` and
``:client_app``, see ``flower_app/pyproject.toml``), so loladeft must be installed in the
environment of the SuperLink and of every SuperNode: a Flower app bundle carries only
``.py/.toml/.md/.yaml/.json`` files.

Run config of the ServerApp (``flwr run --run-config``):

``config``   the run's :class:`~loladeft.training.config.TrainConfig` as JSON (required);
``out``      absolute output folder on the server's machine (required);
``runtime``  label written to the manifest (default ``deployment``);
``resume``   continue the run in ``out`` (default false);
and the :class:`~loladeft.runtime.server.RuntimeOptions` (``round-timeout = 120.0``...).
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
    from loladeft.exceptions import LoladeftError
    from loladeft.runtime import protocol
    from loladeft.runtime.server import RuntimeOptions, run_server

    rc: Any = context.run_config
    for key in ("config", "out"):
        if key not in rc:
            raise LoladeftError(f"run-config: {key} is required")
    cfg = protocol.decode_config(str(rc["config"]))
    run_server(
        grid,
        cfg,
        str(rc["out"]),
        RuntimeOptions.from_run_config(rc),
        runtime=str(rc.get("runtime", "deployment")),
        resume=bool(rc.get("resume", False)),
        log=_log,
    )


def _log(message: str) -> None:
    """One line into Flower's run log (the ``flwr`` logger, which Flower forwards)."""
    import logging

    logging.getLogger("flwr").warning("loladeft: %s", message)
