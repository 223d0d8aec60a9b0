"""Root of the ``loladeft`` command: registers one sub-command per module.

Command modules keep heavy imports (torch, flwr, matplotlib) inside their functions, so
``loladeft solve`` starts fast. Every usage error (a bad flag value, an unknown option) is
one stderr line and exit code 2; Ctrl-C prints ``loladeft: interrupted`` and exits 130.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from loladeft.cli import calibrate, flower, profile, reproduce, simulate, solve, testbed, train
from loladeft.cli._common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK


def _line(message: str) -> None:
    sys.stderr.write(f"loladeft: {' '.join(str(message).split())}\n")


class _OneLineErrors(TyperGroup):
    """The root group: Click's errors as one line instead of a usage box."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "loladeft",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            code = rv if isinstance(rv, int) else EXIT_OK
        except click.exceptions.NoArgsIsHelpError as exc:
            sys.stdout.write(exc.format_message() + "\n")
            code = EXIT_BAD_INPUT
        except click.ClickException as exc:
            _line(exc.format_message())
            code = exc.exit_code
        except click.Abort:
            code = EXIT_INTERRUPTED
        except KeyboardInterrupt:  # raised outside a command's invocation
            code = EXIT_INTERRUPTED
        except ModuleNotFoundError as exc:  # an optional extra that is not installed
            extra = _EXTRAS.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            _line(
                f"{exc.name} is not installed: this command needs pip install 'loladeft[{extra}]'"
            )
            code = EXIT_BAD_INPUT
        if code == EXIT_INTERRUPTED:
            _line("interrupted")
        if standalone_mode:
            sys.exit(code)
        return code


#: The optional extra that brings each lazily imported package.
_EXTRAS = {
    "torch": "train",
    "transformers": "train",
    "peft": "train",
    "sklearn": "train",
    "flwr": "train,flower",
    "ray": "train,flower",
    "datasets": "hub",
}


app = typer.Typer(
    name="loladeft",
    cls=_OneLineErrors,
    help="Low-latency device-edge cooperative fine-tuning (LoLa-DEFT) of foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("loladeft")
        except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
            version = "unknown"
        sys.stdout.write(f"loladeft {version}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Low-latency device-edge cooperative fine-tuning (LoLa-DEFT) of foundation models."""


app.command("solve")(solve.solve)
app.command("simulate")(simulate.simulate)
app.command("profile")(profile.profile)
app.command("train")(train.train)
app.command("reproduce")(reproduce.reproduce)
app.command("calibrate")(calibrate.calibrate)
app.command("testbed")(testbed.testbed)
app.add_typer(flower.app, name="flower")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``argv``: the arguments, default ``sys.argv[1:]``)."""
    app(args=argv)
