"""The ``flwr`` command line, as the local federation uses it, and the TOML files it reads.

Flower 1.42 facts this module relies on (read from the installed source):

* ``flwr`` reads its SuperLink connections from ``$FLWR_HOME/config.toml``
  (``[superlink.NAME]`` with ``address`` and ``root-certificates`` or ``insecure``);
* ``flwr run APP CONNECTION --stream --run-config FILE.toml`` starts a run and prints
  ``Successfully started run ID``; it exits 0 even when the ServerApp crashed, so the run's
  final status is read afterwards with ``flwr ls CONNECTION --run-id ID --format json``;
* ``flwr supernode register KEY.pub CONNECTION --format json`` answers the node id,
  ``flwr supernode ls CONNECTION --format json`` lists the nodes and their status;
* ``--node-config`` of a SuperNode is ``key=value`` pairs separated by spaces, each value a
  TOML value (a string with ``"`` in it quoted with ``'``).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from loladeft.exceptions import FederationError
from loladeft.runtime.processes import kill_group, strip_ansi

#: Name of the SuperLink connection written into ``$FLWR_HOME/config.toml``.
CONNECTION = "loladeft-local"
#: Offline defaults set in every child's environment.
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}

ConfigValue = str | int | float | bool
_RUN_ID = re.compile(r"Successfully started run (\d+)")


@dataclass
class RunOutcome:
    """Result of :meth:`FlwrCli.run`.

    Attributes
    ----------
    run_id
        Flower run ID (``None`` if the run was not even started).
    status
        Final status as ``flwr ls`` prints it, e.g. ``"finished:completed"``.
    ok
        ``True`` if and only if the status is ``"finished:completed"``.
    output
        What ``flwr run --stream`` printed (ANSI colours removed).
    seconds
        Wall time of the ``flwr run`` command.
    details
        Status details of the run (e.g. the ServerApp's exception), ``""`` if none.
    """

    run_id: int | None
    status: str
    ok: bool
    output: str
    seconds: float
    details: str = ""


def _checked(config: Mapping[str, Any]) -> dict[str, ConfigValue]:
    for key, value in config.items():
        if not isinstance(value, str | int | float | bool):
            raise FederationError(
                f"config value {key} = {value!r} is not a str, int, float or bool"
            )
    return dict(config)


def write_run_config(path: Path, run_config: Mapping[str, ConfigValue]) -> None:
    """Write a run config as the TOML file ``flwr run --run-config FILE`` reads."""
    Path(path).write_text(tomli_w.dumps(_checked(run_config)), encoding="utf-8")


def write_connection(home: Path, address: str, root_certificates: Path | None) -> Path:
    """Write ``home/config.toml`` naming one SuperLink connection, :data:`CONNECTION`
    (TLS with ``root_certificates``, or insecure)."""
    connection: dict[str, Any] = {"address": address}
    if root_certificates is not None:
        connection["root-certificates"] = str(root_certificates)
    else:
        connection["insecure"] = True
    config = {"superlink": {"default": CONNECTION, CONNECTION: connection}}
    path = Path(home) / "config.toml"
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return path


def node_config_arg(config: Mapping[str, ConfigValue]) -> str:
    """A SuperNode's ``--node-config`` argument for ``config``."""
    parts = []
    for key, value in _checked(config).items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise FederationError(f"node config key {key!r} must match [A-Za-z0-9_-]+")
        text = tomli_w.dumps({"v": value}).split("=", 1)[1].strip()
        if isinstance(value, str) and '"' in value:  # flwr splits on "..." or '...'
            if "'" in value or "\\" in value or "\n" in value:
                raise FederationError(f"node config value {value!r} cannot be quoted")
            text = f"'{value}'"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def parse_json(text: str) -> Any:
    """Return the first JSON object in ``text`` (flwr may print more around it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    return json.JSONDecoder().raw_decode(text[start:])[0]


class FlwrCli:
    """This interpreter's ``flwr`` command against one ``FLWR_HOME`` (in ``env``).

    Parameters
    ----------
    executable
        Path of ``flwr``.
    env
        Environment of every command (``FLWR_HOME`` among it).
    cwd
        Working directory of every command.
    """

    def __init__(self, executable: Path, env: dict[str, str], cwd: Path) -> None:
        self.executable = Path(executable)
        self.env = env
        self.cwd = Path(cwd)

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``flwr ARGS``; its output is returned, its exit status not checked."""
        try:
            return subprocess.run(
                [str(self.executable), *args],
                env=self.env,
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise FederationError(f"flwr {' '.join(args)} exceeded {timeout:.0f} s") from err

    def register(self, public_key: Path) -> int:
        """Register a SuperNode public key with the SuperLink; return the node ID."""
        res = self("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        try:
            return int(parse_json(res.stdout)["node-id"])
        except (ValueError, KeyError) as err:
            raise FederationError(
                f"flwr supernode register {public_key.name} failed: {res.stdout[-500:]}"
            ) from err

    def online_nodes(self) -> list[dict[str, Any]]:
        """Nodes the SuperLink lists as ``online``."""
        res = self("supernode", "ls", CONNECTION, "--format", "json")
        try:
            nodes = parse_json(res.stdout)["nodes"]
        except (ValueError, KeyError) as err:
            raise FederationError(f"flwr supernode ls failed: {res.stdout[-500:]}") from err
        return [n for n in nodes if n.get("status") == "online"]

    def run(
        self,
        app_dir: Path,
        run_config: Mapping[str, ConfigValue] | None = None,
        timeout: float = 600,
    ) -> RunOutcome:
        """Run a Flower app (``flwr run APP_DIR CONNECTION --stream [--run-config FILE]``)
        and report its final status (``flwr ls``).

        Raises
        ------
        FederationError
            ``flwr run`` did not start a run, or the run lasted longer than ``timeout``
            seconds (it is then stopped with ``flwr stop``).
        """
        cmd = [str(self.executable), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        if run_config:
            runs = self.cwd / "run-configs"
            runs.mkdir(exist_ok=True)
            path = runs / f"{uuid.uuid4().hex}.toml"
            write_run_config(path, run_config)
            cmd += ["--run-config", str(path)]
        t0 = time.monotonic()
        popen = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            raw, _ = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            kill_group(popen.pid, signal.SIGKILL)
            raw, _ = popen.communicate(timeout=10)
            found = _RUN_ID.search(strip_ansi((raw or err.output or b"").decode(errors="replace")))
            if found:
                with contextlib.suppress(FederationError):
                    self("stop", found.group(1), CONNECTION, timeout=30)
            raise FederationError(f"flwr run {app_dir} exceeded {timeout:.0f} s") from None
        except BaseException:
            kill_group(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)
            raise
        seconds = time.monotonic() - t0
        output = strip_ansi(raw.decode(errors="replace"))
        found = _RUN_ID.search(output)
        if found is None:
            tail = "\n".join(output.splitlines()[-15:])
            raise FederationError(f"flwr run {app_dir} did not start a run:\n{tail}")
        run_id = int(found.group(1))
        status, details = self.run_status(run_id)
        return RunOutcome(
            run_id=run_id,
            status=status,
            ok=status == "finished:completed",
            output=output,
            seconds=seconds,
            details=details,
        )

    def run_status(self, run_id: int, settle: float = 10.0) -> tuple[str, str]:
        """Return ``(status, details)`` of a run, waiting ``settle`` s for it to finish."""
        deadline = time.monotonic() + settle
        while True:
            res = self("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
            try:
                run = parse_json(res.stdout)["runs"][0]
            except (ValueError, KeyError, IndexError) as err:
                raise FederationError(
                    f"flwr ls --run-id {run_id} failed: {res.stdout[-500:]}"
                ) from err
            status = str(run["status"])
            details = str(run.get("status-details", ""))
            if status.startswith("finished") or time.monotonic() > deadline:
                return status, "" if details == "N/A" else details
            time.sleep(0.2)
