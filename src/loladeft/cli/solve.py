"""``loladeft solve``: allocate blocks and bandwidth for instance files."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from loladeft.allocation.registry import SCHEMES, get_scheme
from loladeft.allocation.registry import solve as solve_instance
from loladeft.allocation.result import AllocationResult
from loladeft.cli._common import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK, fail
from loladeft.exceptions import LoladeftError
from loladeft.system.instance import Instance

_SCHEME_HELP = (
    "Scheme: "
    + ", ".join(f"{n} ({s.problem})" for n, s in SCHEMES.items())
    + ". With max_blocks_per_device > 1 in the instance (multi-block devices): jbba solves"
    " P2' and is NOT exact (its JSON says exact: false); ba solves P1' (B/L per carried block),"
    " exact on monotone instances with extra_block_memory = 0, else exact: false; milp solves"
    " P1' exactly; the other schemes refuse such instances."
)


def solve(
    files: Annotated[list[Path], typer.Argument(help="Instance JSON files.", show_default=False)],
    scheme: Annotated[str, typer.Option("--scheme", "-s", help=_SCHEME_HELP)] = "jbba",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per file (JSON Lines).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of randomised schemes (random).")] = 0,
) -> None:
    """Solve instance files: which device computes which block, and with how much bandwidth.

    Exit code: 2 if any file is malformed, else 3 if any is infeasible, else 0.

    Multi-block devices: results carry "exact" (jbba: exact: false); see --scheme.
    """
    try:
        get_scheme(scheme)
    except LoladeftError as exc:
        fail(str(exc))
    if seed < 0:
        fail(f"seed: must be >= 0, got {seed}")
    worst = EXIT_OK
    for path in files:
        try:
            result = solve_instance(Instance.from_json(path), scheme, seed=seed)
        except LoladeftError as exc:
            sys.stderr.write(" ".join(f"loladeft: {path}: {exc}".split()) + "\n")
            if as_json:
                _print_json({"file": str(path), "scheme": scheme, "error": str(exc)})
            worst = EXIT_BAD_INPUT
            continue
        if not result.feasible and worst == EXIT_OK:
            worst = EXIT_INFEASIBLE
        if as_json:
            _print_json({"file": str(path), **result.to_dict()})
        else:
            _print_table(path, result)
    raise typer.Exit(worst)


def _print_json(record: dict[str, Any]) -> None:
    record = {k: _finite_or_none(v) for k, v in record.items()}
    sys.stdout.write(json.dumps(record, allow_nan=False, default=_numpy_scalar) + "\n")
    sys.stdout.flush()


def _finite_or_none(value: Any) -> Any:
    """A non-finite float (a scheme extra such as a diverged bound) as JSON ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _numpy_scalar(value: Any) -> Any:  # pragma: no cover - numpy scalars only
    return _finite_or_none(float(value))


def _print_table(path: Path, result: AllocationResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not result.feasible:
        console.print(f"[bold]{path}[/]  {result.scheme}: [red]infeasible[/] — {result.reason}")
        return
    assert result.assignment is not None and result.bandwidth is not None
    assert result.device_latency is not None
    title = (
        f"{path}  ·  {result.scheme}  ·  latency {result.latency:.6g} s  ·  "
        f"{result.solve_seconds * 1e3:.2f} ms"
    )
    table = Table(title=title, title_justify="left")
    for col in ("depth", "device", "bandwidth (MHz)", "device latency (s)"):
        table.add_column(col, justify="right")
    for depth, k in enumerate(result.assignment, start=1):
        table.add_row(
            str(depth),
            str(k),
            f"{result.bandwidth[k] / 1e6:.4g}",
            f"{result.device_latency[k]:.6g}",
        )
    console.print(table)
