"""Root of the ``loladeft`` command: registers one sub-command per module.

Command modules keep heavy imports (torch, flwr, matplotlib) inside their functions, so
``loladeft solve`` starts fast.
"""

from __future__ import annotations

import sys

import typer

from loladeft.cli import flower, profile, reproduce, simulate, solve, testbed, train

app = typer.Typer(
    name="loladeft",
    help="Low-latency device-edge cooperative fine-tuning (LoLa-DEFT) of foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Low-latency device-edge cooperative fine-tuning (LoLa-DEFT) of foundation models."""


app.command("solve")(solve.solve)
app.command("simulate")(simulate.simulate)
app.command("profile")(profile.profile)
app.command("train")(train.train)
app.command("reproduce")(reproduce.reproduce)
app.command("testbed")(testbed.testbed)
app.add_typer(flower.app, name="flower")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("loladeft: interrupted\n")
        sys.exit(130)
