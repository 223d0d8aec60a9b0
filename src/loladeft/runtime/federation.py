"""Launch a whole local Flower federation (SuperLink + SuperNodes) on 127.0.0.1.

:class:`LocalFederation` is the deployment-runtime launcher: it starts a
``flower-superlink`` and ``N`` SuperNodes on loopback, in a private ``FLWR_HOME`` whose
``config.toml`` names one SuperLink connection, ``loladeft-local``; it runs Flower apps
on it with ``flwr run`` and always stops every process it started, also on errors and
``KeyboardInterrupt``. It composes three modules, one concern each:

``pki``        the CA, the server certificate and the SuperNode key pairs;
``processes``  starting, finding (a marker variable, :data:`MARKER_ENV`) and stopping them;
``flwr_cli``   the ``flwr`` command line and the TOML files it reads.

By default every link uses TLS and every SuperNode authenticates with its own key
(``FederationSpec(tls=False)`` turns both off; ``loladeft flower local --insecure``).

Flower 1.42 facts this module relies on (read from the installed source):

* The SuperLink serves its Fleet, Control and Runtime APIs over HTTP on a single
  ``--host``/``--port``; ``GET /health`` answers once it is up.
* A SuperNode connects with ``--superlink HOST:PORT`` plus ``--insecure`` or
  ``--root-certificates CA``, and serves its own Runtime API on ``--host/--port``
  (default 9094, so every node of a local federation needs its own port).
* The SuperLink and the SuperNodes spawn ``flower-superexec`` through a ``PATH`` lookup
  (and it spawns ``flwr-serverapp``/``flwr-clientapp``), so the children's ``PATH``
  starts with this interpreter's ``bin`` folder; the SuperLink's SuperExec runs in a
  session of its own, which is why cleanup also sweeps every process carrying this
  federation's marker variable (:data:`MARKER_ENV`) in its environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loladeft.exceptions import FederationError
from loladeft.runtime import processes
from loladeft.runtime.flwr_cli import (
    CONNECTION,
    OFFLINE_ENV,
    ConfigValue,
    FlwrCli,
    RunOutcome,
    node_config_arg,
    write_connection,
    write_run_config,
)
from loladeft.runtime.pki import make_certificates, make_node_keys
from loladeft.runtime.processes import Proc, free_ports

__all__ = [
    "CONNECTION",
    "FAST_POLL_ENV",
    "MARKER_ENV",
    "OFFLINE_ENV",
    "FederationSpec",
    "LocalFederation",
    "RunOutcome",
    "write_run_config",
]

#: Environment variable that marks every process of one federation (value: a UUID).
MARKER_ENV = "LOLADEFT_FEDERATION_ID"
#: Extra environment of the children when :attr:`FederationSpec.fast_poll` is on.
FAST_POLL_ENV = {
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    "LOLADEFT_NODE_POLL_S": "0.2",
}


@dataclass
class FederationSpec:
    """What to start.

    Parameters
    ----------
    nodes
        Number of SuperNodes.
    node_configs
        One ``--node-config`` mapping per node; default
        ``{"partition-id": i, "num-partitions": nodes}``.
    tls
        TLS on every link (SuperLink APIs and each SuperNode's Runtime API), with
        certificates generated into the private home (default on).
    auth
        SuperNode authentication: one key pair per node, each public key registered with
        the SuperLink before the node starts. Needs ``tls``; default: as ``tls``.
    fast_poll
        Start SuperNodes through :mod:`loladeft.runtime.supernode` (short idle polling)
        and shorten the SuperExec task polling.
    warm
        Run each node's ClientApp tasks in a long-lived :mod:`loladeft.runtime.executor`
        (SuperNode ``--isolation process``) instead of a fresh process per message; only
        for loladeft's app. Implies ``fast_poll``.
    env
        Extra environment for every process (applied last).
    """

    nodes: int
    node_configs: list[dict[str, ConfigValue]] | None = None
    tls: bool = True
    auth: bool | None = None
    fast_poll: bool = True
    warm: bool = False
    env: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.nodes < 0:
            raise FederationError(f"nodes must be >= 0, got {self.nodes}")
        if self.node_configs is not None and len(self.node_configs) != self.nodes:
            raise FederationError(
                f"node_configs has {len(self.node_configs)} entries for {self.nodes} nodes"
            )
        if self.auth is None:
            self.auth = self.tls
        if self.auth and not self.tls:
            raise FederationError("auth: SuperNode authentication needs tls")
        if self.warm:
            self.fast_poll = True  # the warm executor is started by loladeft's entry point

    def node_config(self, i: int) -> dict[str, ConfigValue]:
        """Return the ``--node-config`` mapping of node ``i``."""
        if self.node_configs is not None:
            return dict(self.node_configs[i])
        return {"partition-id": i, "num-partitions": self.nodes}


class LocalFederation:
    """A local Flower federation: one SuperLink and N SuperNodes on 127.0.0.1.

    Use as a context manager: ``__enter__`` starts everything and waits until all
    nodes are online; ``__exit__`` stops every process started (SIGTERM to each process
    group and to every process carrying this federation's marker, SIGKILL after
    ``grace`` seconds).

    Parameters
    ----------
    spec
        What to start.
    home
        Private ``FLWR_HOME``; default a fresh temporary folder, removed on exit
        unless ``keep``.
    log_dir
        Where each process's output goes (``superlink.log``, ``supernode-0.log``, ...);
        default ``home/logs``.
    keep
        Keep the temporary home on exit.
    startup_timeout
        Seconds to wait for the SuperLink, then for the nodes, to come up.
    grace
        Seconds between SIGTERM and SIGKILL on exit.
    """

    def __init__(
        self,
        spec: FederationSpec,
        home: Path | None = None,
        log_dir: Path | None = None,
        *,
        keep: bool = False,
        startup_timeout: float = 60.0,
        grace: float = 5.0,
    ) -> None:
        self.spec = spec
        self._own_home = home is None
        self._home_arg = home
        self._log_dir_arg = log_dir
        self.keep = keep
        self._previous_sigterm: Any = None
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.marker = uuid.uuid4().hex
        self.home = Path(home) if home is not None else Path()
        self.log_dir = Path(log_dir) if log_dir is not None else Path()
        self.port = 0
        self.certificates: dict[str, Path] = {}
        self.node_keys: list[tuple[Path, Path]] = []
        self._superlink: Proc | None = None
        self._nodes: list[Proc] = []
        self._others: list[Proc] = []
        self._expendable: set[int] = set()  # nodes allowed to die (killed, unregistered)
        self._env: dict[str, str] = {}
        self.cli = FlwrCli(Path(sys.executable).parent / "flwr", self._env, self.home)
        self._bin = Path(sys.executable).parent
        self.started_seconds = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def address(self) -> str:
        """SuperLink address (Fleet, Control and Runtime APIs), ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment of every child process (``FLWR_HOME``, offline defaults...)."""
        return dict(self._env)

    @property
    def superlink_pid(self) -> int | None:
        """PID of ``flower-superlink`` (``None`` before start)."""
        return self._superlink.popen.pid if self._superlink else None

    @property
    def node_pids(self) -> list[int]:
        """PID of each SuperNode, in start order (killed ones included)."""
        return [p.popen.pid for p in self._nodes]

    @property
    def pids(self) -> list[int]:
        """PIDs of every process this federation started directly."""
        procs = [self._superlink, *self._nodes, *self._others]
        return [p.popen.pid for p in procs if p is not None]

    def leftover_pids(self) -> list[int]:
        """Live processes carrying this federation's marker (children included)."""
        return processes.pids_with_env(MARKER_ENV, self.marker)

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> LocalFederation:
        self._previous_sigterm = processes.exit_on_sigterm()
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None

    def start(self) -> None:
        """Start the SuperLink, register node keys (``auth``), start and await nodes."""
        t0 = time.monotonic()
        if self._own_home:
            self.home = Path(tempfile.mkdtemp(prefix="loladeft-flwr-"))
        self.home.mkdir(parents=True, exist_ok=True)
        self.home = self.home.resolve()
        self.log_dir = (
            Path(self._log_dir_arg) if self._log_dir_arg else self.home / "logs"
        ).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._env = self._make_env()
        self.cli = FlwrCli(self._bin / "flwr", self._env, self.home)
        self.port = free_ports(1)[0]
        if self.spec.tls:
            self.certificates = make_certificates(self.home / "certificates")
        if self.spec.auth:
            self.node_keys = make_node_keys(self.home / "keys", self.spec.nodes)
        self._write_config()
        self._start_superlink()
        self._wait_superlink()
        for i in range(self.spec.nodes):
            key = self.node_keys[i][0] if self.spec.auth else None
            if key is not None:
                self.register_key(self.node_keys[i][1])
            self._start_node(self.spec.node_config(i), key)
        self.wait_for_nodes(self.spec.nodes)
        self.started_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop every process started, then every process with our marker; idempotent."""
        procs = [p for p in (self._superlink, *self._nodes, *self._others) if p]
        processes.stop(procs, self.leftover_pids, self.grace)
        if self._own_home and not self.keep and self.home != Path():
            shutil.rmtree(self.home, ignore_errors=True)

    # ------------------------------------------------------------------- nodes
    def add_node(
        self,
        node_config: Mapping[str, ConfigValue] | None = None,
        *,
        private_key: Path | None = None,
        register: bool = True,
        wait: bool = True,
    ) -> int:
        """Start one more SuperNode and return its index.

        Parameters
        ----------
        node_config
            Its ``--node-config``; default ``{"partition-id": i, "num-partitions": i+1}``
            with ``i`` its index.
        private_key
            Authentication key (``auth`` only); default a fresh key pair.
        register
            Register the node's public key first (``auth`` only); ``False`` starts a
            node the SuperLink does not know.
        wait
            Wait until one more node is online.
        """
        i = len(self._nodes)
        config = dict(node_config or {"partition-id": i, "num-partitions": i + 1})
        if self.spec.auth and private_key is None:
            private_key, public = make_node_keys(self.home / "keys", 1, f"extra-{i}")[0]
            if register:
                self.register_key(public)
        online = len(self.online_nodes()) if wait else 0
        self._start_node(config, private_key if self.spec.auth else None)
        if self.spec.auth and not register:
            self._expendable.add(i)
        if wait:
            self.wait_for_nodes(online + 1)
        return i

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i``'s whole process group (SuperNode, SuperExec, ClientApps)."""
        p = self._nodes[i]
        self._expendable.add(i)
        processes.kill_group(p.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=10)

    def node_alive(self, i: int) -> bool:
        """Whether node ``i``'s SuperNode process still runs."""
        return self._nodes[i].popen.poll() is None

    def node_log(self, i: int) -> Path:
        """Log file of node ``i``."""
        return self._nodes[i].log

    @property
    def superlink_log(self) -> Path:
        """Log file of the SuperLink."""
        return self.log_dir / "superlink.log"

    def register_key(self, public_key: Path) -> int:
        """Register a SuperNode public key with the SuperLink; return the node ID."""
        return self.cli.register(public_key)

    def online_nodes(self) -> list[dict[str, Any]]:
        """Nodes the SuperLink lists as ``online`` (``flwr supernode ls``)."""
        return self.cli.online_nodes()

    def wait_for_nodes(self, n: int, timeout: float | None = None) -> None:
        """Wait until at least ``n`` nodes are online.

        Raises
        ------
        FederationError
            If a node process exits meanwhile, or fewer than ``n`` are online after
            ``timeout`` (default ``startup_timeout``) seconds.
        """
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        online = 0
        while True:
            for i, p in enumerate(self._nodes):
                if i not in self._expendable and not p.alive():
                    raise FederationError(
                        f"{p.name} exited with code {p.popen.returncode}:\n{processes.tail(p.log)}"
                    )
            online = len(self.online_nodes())
            if online >= n:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.log}\n{processes.tail(p.log, 8)}" for p in self._nodes)
                raise FederationError(
                    f"only {online} of {n} SuperNodes online after {timeout:.0f} s:\n{logs}"
                )
            time.sleep(0.2)

    # --------------------------------------------------------------------- runs
    def run(
        self,
        app_dir: Path,
        run_config: Mapping[str, ConfigValue] | None = None,
        timeout: float = 600,
    ) -> RunOutcome:
        """Run a Flower app on the federation and report its final status
        (:meth:`loladeft.runtime.flwr_cli.FlwrCli.run`).

        Raises
        ------
        FederationError
            If ``flwr run`` fails to start the run, or the run lasts longer than
            ``timeout`` seconds.
        """
        return self.cli.run(app_dir, run_config, timeout)

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI of this interpreter against the federation's home."""
        return self.cli(*args, timeout=timeout)

    # ---------------------------------------------------------------- internals
    def _make_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        if self.spec.fast_poll:
            env.update(FAST_POLL_ENV)
        env["FLWR_HOME"] = str(self.home)
        env[MARKER_ENV] = self.marker
        env["PATH"] = os.pathsep.join([str(self._bin), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.spec.env or {})
        return env

    def _write_config(self) -> None:
        ca = self.certificates["ca"] if self.spec.tls else None
        write_connection(self.home, self.address, ca)

    def _tls_server_args(self) -> list[str]:
        c = self.certificates
        return [
            "--ssl-ca-certfile",
            str(c["ca"]),
            "--ssl-certfile",
            str(c["cert"]),
            "--ssl-keyfile",
            str(c["key"]),
        ]

    def _spawn(self, name: str, cmd: list[str], log_name: str) -> Proc:
        return processes.spawn(name, cmd, self.log_dir / log_name, self._env, self.home)

    def _start_superlink(self) -> None:
        cmd = [str(self._bin / "flower-superlink"), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--disable-runtime-dependency-installation"]
        cmd += self._tls_server_args() if self.spec.tls else ["--insecure"]
        if self.spec.auth:
            cmd.append("--enable-supernode-auth")
        self._superlink = self._spawn("flower-superlink", cmd, "superlink.log")

    def _wait_superlink(self) -> None:
        assert self._superlink is not None
        scheme = "https" if self.spec.tls else "http"
        url = f"{scheme}://{self.address}/health"
        context = (
            ssl.create_default_context(cafile=str(self.certificates["ca"]))
            if self.spec.tls
            else None
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._superlink.popen.poll() is not None:
                raise FederationError(
                    f"flower-superlink exited with code {self._superlink.popen.returncode}:"
                    f"\n{processes.tail(self._superlink.log)}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=2, context=context) as res:
                    if res.status == 200:
                        return
            if time.monotonic() > deadline:
                raise FederationError(
                    f"flower-superlink did not answer on {url} within "
                    f"{self.startup_timeout:.0f} s:\n{processes.tail(self._superlink.log)}"
                )
            time.sleep(0.1)

    def _start_node(self, config: Mapping[str, ConfigValue], private_key: Path | None) -> None:
        i = len(self._nodes)
        if self.spec.fast_poll:
            cmd = [sys.executable, "-m", "loladeft.runtime.supernode"]
        else:
            cmd = [str(self._bin / "flower-supernode")]
        cmd += ["--superlink", self.address, "--host", "127.0.0.1"]
        cmd += ["--port", str(free_ports(1)[0])]
        cmd += ["--node-config", node_config_arg(config)]
        if self.spec.tls:
            cmd += ["--root-certificates", str(self.certificates["ca"])]
            cmd += self._tls_server_args()  # the node's own Runtime API
        else:
            cmd.append("--insecure")
        if private_key is not None:
            cmd += ["--auth-supernode-private-key", str(private_key)]
        if self.spec.warm:
            from loladeft.runtime.supernode import WARM_FLAG

            cmd.append(WARM_FLAG)
        self._nodes.append(self._spawn(f"supernode-{i}", cmd, f"supernode-{i}.log"))
