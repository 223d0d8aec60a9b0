"""Helpers shared by the command modules: one-line errors and exit codes, and options that
take their help, shown default and bounds from :mod:`loladeft.config`.

Every option that sets a configuration key defaults to ``None`` ("not given"), so a value
from ``--config FILE.toml`` survives unless the flag is given; :func:`load` applies the
flags over the file over the defaults and handles ``--print-config``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from loladeft.config import COMMAND_DEFAULTS, Config, dump_toml, load_config
from loladeft.exceptions import InputError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``loladeft: <message>`` as one line on stderr and exit with ``code``."""
    sys.stderr.write(f"loladeft: {' '.join(message.split())}\n")
    raise SystemExit(code)


def config_field(key: str) -> Any:
    """The pydantic field of a dotted configuration key (``"train.lr"``)."""
    model: Any = Config
    *tables, leaf = key.split(".")
    for table in tables:
        model = model.model_fields[table].annotation
    return model.model_fields[leaf]


def default_of(key: str, command: str | None = None) -> Any:
    """The default of ``key`` for ``command`` (:data:`~loladeft.config.COMMAND_DEFAULTS`
    first)."""
    return COMMAND_DEFAULTS.get(command or "", {}).get(key, config_field(key).default)


def _shown(value: Any) -> str | bool:
    if value is None:
        return False
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def option(
    key: str, *decls: str, help: str | None = None, command: str | None = None, **kw: Any
) -> Any:
    """A ``typer.Option`` for the configuration key ``key``: its description as help (or
    ``help``), its default (for ``command``) as the shown default, its ``ge``/``le``
    bounds as ``min=``/``max=``. Give the parameter the default ``None``."""
    field = config_field(key)
    bounds: dict[str, Any] = {}
    for meta in field.metadata:  # annotated_types.Ge / Le, as pydantic stores ge= / le=
        if getattr(meta, "ge", None) is not None:
            bounds["min"] = meta.ge
        if getattr(meta, "le", None) is not None:
            bounds["max"] = meta.le
    params = {"help": help or field.description, "show_default": _shown(default_of(key, command))}
    return typer.Option(*decls, **{**params, **bounds, **kw})


ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML file with any setting (see configs/paper.toml); flags override it.",
        show_default=False,
        dir_okay=False,
    ),
]
PrintConfig = Annotated[
    bool,
    typer.Option("--print-config", help="Print the effective configuration as TOML and exit."),
]


def split(text: str | None) -> list[str] | None:
    """Items of a comma-separated flag value; ``None`` when the flag was not given."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def load(
    path: Path | None,
    overrides: dict[str, Any],
    *,
    command: str,
    print_config: bool = False,
    tables: tuple[str, ...] | None = None,
) -> Config:
    """The effective configuration: defaults < command defaults < ``path`` < flags
    (``overrides``, ``None`` = not given). With ``print_config``, print it as TOML (only
    ``tables``; ``""`` is the top level) and exit 0. A bad value exits 2 with one line."""
    try:
        cfg = load_config(path, overrides, command=command)
    except InputError as exc:
        fail(str(exc))
    if print_config:
        sys.stdout.write(dump_toml(cfg, tables))
        raise typer.Exit(EXIT_OK)
    return cfg
