"""``loladeft testbed``: DEFT on an emulated heterogeneous edge (Linux, root).

One DEFT run per scheme on one emulated edge (:mod:`loladeft.runtime.testbed_federation`):
every SuperNode in its own network namespace behind a shaped veth uplink, under a cgroup CPU
quota and memory limit. Each scheme's run goes to ``OUT/<scheme>/`` (``metrics.csv`` with
the wall-clock columns, ``manifest.json``, ``wallclock.csv``, the plots); ``OUT/summary.*``
compares the schemes. ``loladeft testbed --cleanup`` removes what a killed run left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loladeft.cli._common import fail
from loladeft.exceptions import LoladeftError

_KEYS = {
    "nodes": "scenario.num_devices",
    "bandwidth_mhz": "scenario.bandwidth_mhz",
    "device_model": "scenario.device_model",
    "local_iterations": "scenario.local_iterations",
    "profile": "scenario.profile",
    "cpu_budget": "testbed.cpu_budget",
    "memory_scale": "testbed.memory_scale",
    "memory_margin_mb": "testbed.memory_margin_mb",
    "round_timeout": "runtime.round_timeout",
}


def testbed(
    task: Annotated[str | None, typer.Option(help="GLUE task (mrpc, sst2...).")] = None,
    nodes: Annotated[int | None, typer.Option(help="N emulated devices (default 8).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Rounds per scheme (default 10).")] = None,
    schemes: Annotated[
        str, typer.Option(help="Comma-separated schemes, one run each.")
    ] = "comm-aware,ba,jbba",
    data_dir: Annotated[
        Path | None, typer.Option(help="GLUE TSV folder (e.g. ../shared/data/glue).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/testbed"),
    model: Annotated[str | None, typer.Option(help="'minilm' (offline) or a HF folder.")] = None,
    profile: Annotated[str | None, typer.Option(help="Profile for d(l), b(l).")] = None,
    batch: Annotated[int | None, typer.Option(help="Per-device batch (default 8).")] = None,
    local_iterations: Annotated[
        int | None, typer.Option("--local-iterations", "-M", help="M local iterations.")
    ] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every this many rounds.")] = None,
    max_eval_samples: Annotated[
        int | None, typer.Option(help="Evaluate on the first this many dev examples.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of everything random.")] = None,
    bandwidth_mhz: Annotated[
        float | None, typer.Option(help="Cell bandwidth B in MHz (default 100).")
    ] = None,
    device_model: Annotated[
        str | None, typer.Option(help="measured (default) or scenario.")
    ] = None,
    cpu_budget: Annotated[
        float | None, typer.Option(help="Cores the nodes' CPU quotas share (default 1.6).")
    ] = None,
    memory_scale: Annotated[
        float | None, typer.Option(help="Scale of the nodes' memory headroom (default 1).")
    ] = None,
    memory_margin_mb: Annotated[
        float | None, typer.Option(help="Memory beyond base and headroom (default 96 MB).")
    ] = None,
    round_timeout: Annotated[
        float | None, typer.Option(help="Wall seconds a node has to return its gradient.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML configuration file.")] = None,
    cleanup: Annotated[
        bool, typer.Option("--cleanup", help="Remove what killed testbed runs left behind.")
    ] = False,
) -> None:
    """DEFT on an emulated edge (Linux, root): one run per scheme, then a summary."""
    from loladeft.testbed import TestbedError, require_root

    if cleanup:
        _cleanup()
        return
    settings = {
        k: v
        for k, v in locals().items()
        if k not in ("schemes", "out", "config", "cleanup", "TestbedError", "require_root")
    }
    from rich.console import Console

    console = Console(stderr=True)
    try:
        cfg, names = _settings(settings, schemes, config)
        require_root()
        from loladeft.testbed import cgroups

        cgroups.check_support()
        from loladeft.training.run import check_out_dir

        for s in names:
            check_out_dir(out / s, resume=False)
        from loladeft.runtime.testbed_federation import run_testbed

        summary = run_testbed(cfg, out, names, log=lambda m: console.print(m))
    except (LoladeftError, TestbedError, ValueError) as exc:
        fail(str(exc))
    for s, v in summary["schemes"].items():
        console.print(
            f"{s:>11}: measured mean {v['measured_mean_s']:.2f} s (median "
            f"{v['measured_median_s']:.2f}), predicted {v['predicted_mean_s']:.2f} s, median "
            f"error {100 * v['prediction_error_median']:.1f}%, overhead "
            f"{100 * v['overhead_share_median']:.1f}%"
        )
    console.print(
        f"order by measured: {', '.join(summary['order_by_measured'])}; by predicted: "
        f"{', '.join(summary['order_by_predicted'])}; wrote {out}/summary.json"
    )


def _settings(settings: dict, schemes: str, config: Path | None) -> tuple:
    """The run's configuration and the schemes, checked before anything starts."""
    from loladeft.allocation.registry import SCHEMES
    from loladeft.config import load_config

    names = [s.strip() for s in schemes.split(",") if s.strip()]
    if not names:
        raise LoladeftError("schemes: give at least one scheme")
    for s in names:
        if s not in SCHEMES:
            raise LoladeftError(f"schemes: unknown scheme {s!r} (known: {', '.join(SCHEMES)})")
    if len(set(names)) != len(names):
        raise LoladeftError("schemes: a scheme is named twice")
    if settings.get("data_dir") is not None:
        settings["data_dir"] = str(settings["data_dir"])
    overrides = {_KEYS.get(k, f"train.{k}"): v for k, v in settings.items()}
    cfg = load_config(config, overrides, command="testbed")
    if cfg.train.task is None:
        raise LoladeftError("task: required (e.g. --task mrpc)")
    from loladeft.cli.flower import _check_ready

    _check_ready(cfg)
    return cfg, names


def _cleanup() -> None:
    from loladeft.testbed import TestbedError, cleanup, require_root

    try:
        require_root()
        removed = cleanup()
    except TestbedError as exc:
        fail(str(exc))
    if not removed:
        typer.echo("testbed: nothing left behind")
    for item in removed:
        typer.echo(f"removed {item}")
