"""Launch a whole local Flower federation (SuperLink + SuperNodes) on 127.0.0.1.

:class:`LocalFederation` is the deployment-runtime launcher for flwr 1.42: it starts a
``flower-superlink`` and ``N`` SuperNodes on loopback, in a private ``FLWR_HOME`` whose
``config.toml`` names one SuperLink connection, ``loladeft-local``; it runs Flower apps
on it with ``flwr run`` and always stops every process it started, also on errors and
``KeyboardInterrupt``.

Flower 1.42 facts this module relies on (read from the installed source):

* The SuperLink serves its Fleet, Control and Runtime APIs over HTTP on a single
  ``--host``/``--port``; ``GET /health`` answers once it is up. TLS is
  ``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile`` (or ``--insecure``).
* A SuperNode connects with ``--superlink HOST:PORT`` plus ``--insecure`` or
  ``--root-certificates CA``, and serves its own Runtime API on ``--host/--port``
  (default 9094, so every node of a local federation needs its own port).
* SuperNode authentication: ``flower-superlink --enable-supernode-auth`` refuses
  self-registration; each node's public key (EC on a NIST curve, OpenSSH format) is
  registered beforehand with ``flwr supernode register KEY.pub CONNECTION`` and the node
  is started with ``--auth-supernode-private-key KEY`` (OpenSSH private key). Node
  authentication requires TLS.
* The SuperLink and the SuperNodes spawn ``flower-superexec`` through a ``PATH`` lookup
  (and it spawns ``flwr-serverapp``/``flwr-clientapp``), so the children's ``PATH``
  starts with this interpreter's ``bin`` folder; the SuperLink's SuperExec runs in a
  session of its own, which is why cleanup also sweeps every process carrying this
  federation's marker variable (:data:`MARKER_ENV`) in its environment.
* ``flwr run --stream`` exits 0 even when the ServerApp crashed: the run's final status
  is read afterwards with ``flwr ls --run-id ID --format json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from loladeft.exceptions import LoladeftError

#: Name of the SuperLink connection written into ``$FLWR_HOME/config.toml``.
CONNECTION = "loladeft-local"
#: Environment variable that marks every process of one federation (value: a UUID).
MARKER_ENV = "LOLADEFT_FEDERATION_ID"
#: Offline defaults set in every child's environment.
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
#: Extra environment of the children when :attr:`FederationSpec.fast_poll` is on.
FAST_POLL_ENV = {
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    "LOLADEFT_NODE_POLL_S": "0.2",
}

ConfigValue = str | int | float | bool
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RUN_ID = re.compile(r"Successfully started run (\d+)")


class FederationError(LoladeftError, RuntimeError):
    """A process of the local federation failed or a ``flwr`` command failed."""


class FederationTimeoutError(FederationError, TimeoutError):
    """Something of the local federation did not happen within its timeout."""


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


@dataclass
class RunOutcome:
    """Result of :meth:`LocalFederation.run`.

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


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes] = field(repr=False)


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_certificates(folder: Path) -> dict[str, Path]:
    """Generate a CA and a server certificate for ``127.0.0.1``/``localhost``.

    Parameters
    ----------
    folder
        Where to write ``ca.crt``, ``server.pem`` and ``server.key`` (created if
        needed).

    Returns
    -------
    dict[str, Path]
        ``{"ca": ..., "cert": ..., "key": ...}``; the server certificate is signed by the
        CA and has SANs ``localhost``, ``127.0.0.1`` and ``::1``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=7))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loladeft local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    paths = {
        "ca": folder / "ca.crt",
        "cert": folder / "server.pem",
        "key": folder / "server.key",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


def make_node_keys(folder: Path, n: int, prefix: str = "node") -> list[tuple[Path, Path]]:
    """Generate ``n`` SuperNode authentication key pairs in the format flwr 1.42 reads.

    Parameters
    ----------
    folder
        Where to write ``{prefix}-{i}`` (private) and ``{prefix}-{i}.pub`` (public).
    n
        Number of key pairs.
    prefix
        File name prefix.

    Returns
    -------
    list[tuple[Path, Path]]
        ``(private_key, public_key)`` per node: an EC P-384 key, the private one in
        OpenSSH format (``flower-supernode --auth-supernode-private-key``), the public
        one as an OpenSSH line (``flwr supernode register``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = folder / f"{prefix}-{i}", folder / f"{prefix}-{i}.pub"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
        )
        private.chmod(0o600)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
            )
            + b"\n"
        )
        pairs.append((private, public))
    return pairs


def pids_with_env(name: str, value: str) -> list[int]:
    """Return the PIDs of this user's live processes whose environment has ``name=value``.

    Reads ``/proc/PID/environ`` (Linux); uses :mod:`psutil` elsewhere if installed.
    Zombies (empty environment) are not reported.
    """
    needle = f"{name}={value}".encode()
    proc = Path("/proc")
    found = []
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found
    try:
        import psutil
    except ImportError:  # pragma: no cover - non-Linux without psutil
        return []
    for p in psutil.process_iter():  # pragma: no cover - non-Linux
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get(name) == value:
                found.append(p.pid)
    return found


def _toml_value(value: ConfigValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise FederationError(f"config value {value!r} is not a str, int, float or bool")


def write_run_config(path: Path, run_config: Mapping[str, ConfigValue]) -> None:
    """Write a run config as the TOML file ``flwr run --run-config FILE`` reads."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in run_config.items()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _node_config_arg(config: Mapping[str, ConfigValue]) -> str:
    parts = []
    for key, value in config.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise FederationError(f"node config key {key!r} must match [A-Za-z0-9_-]+")
        text = _toml_value(value)
        if isinstance(value, str) and '"' in value:  # flwr splits on "..." or '...'
            if "'" in value or "\\" in value:
                raise FederationError(f"node config value {value!r} cannot be quoted")
            text = f"'{value}'"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _parse_json(text: str) -> Any:
    """Return the first JSON object in ``text`` (flwr may print more around it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object")
    return json.JSONDecoder().raw_decode(text[start:])[0]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


def _exit_on_sigterm() -> Any:
    """Turn SIGTERM into ``SystemExit`` (so ``with LocalFederation(...)`` still stops every
    process when its launcher is terminated); return the previous handler, or ``None`` off
    the main thread, where handlers cannot be set."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


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
        self._superlink: _Proc | None = None
        self._nodes: list[_Proc] = []
        self._others: list[_Proc] = []
        self._expendable: set[int] = set()  # nodes allowed to die (killed, unregistered)
        self._env: dict[str, str] = {}
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
        return pids_with_env(MARKER_ENV, self.marker)

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> LocalFederation:
        self._previous_sigterm = _exit_on_sigterm()
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
        for p in procs:
            if p.popen.poll() is None:
                _kill_group(p.popen.pid, signal.SIGTERM)
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if all(p.popen.poll() is not None for p in procs) and not self.leftover_pids():
                break
            time.sleep(0.05)
        for p in procs:
            _kill_group(p.popen.pid, signal.SIGKILL)  # also reaches orphans in the group
        for _ in range(3):
            pids = self.leftover_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
            p.log_file.close()
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
        _kill_group(p.popen.pid, signal.SIGKILL)
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
        res = self.flwr("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        try:
            return int(_parse_json(res.stdout)["node-id"])
        except (ValueError, KeyError) as err:
            raise FederationError(
                f"flwr supernode register {public_key.name} failed: {res.stdout[-500:]}"
            ) from err

    def online_nodes(self) -> list[dict[str, Any]]:
        """Nodes the SuperLink lists as ``online`` (``flwr supernode ls --format json``)."""
        res = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        try:
            nodes = _parse_json(res.stdout)["nodes"]
        except (ValueError, KeyError) as err:
            raise FederationError(f"flwr supernode ls failed: {res.stdout[-500:]}") from err
        return [n for n in nodes if n.get("status") == "online"]

    def wait_for_nodes(self, n: int, timeout: float | None = None) -> None:
        """Wait until at least ``n`` nodes are online.

        Raises
        ------
        FederationError
            If a node process exits meanwhile.
        FederationTimeoutError
            If fewer than ``n`` are online after ``timeout`` (default
            ``startup_timeout``) seconds.
        """
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        online = 0
        while True:
            for i, p in enumerate(self._nodes):
                if i not in self._expendable and p.popen.poll() is not None:
                    raise FederationError(
                        f"{p.name} exited with code {p.popen.returncode}:\n{_tail(p.log)}"
                    )
            online = len(self.online_nodes())
            if online >= n:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.log}\n{_tail(p.log, 8)}" for p in self._nodes)
                raise FederationTimeoutError(
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
        """Run a Flower app on the federation and report its final status.

        Runs ``flwr run APP_DIR loladeft-local --stream [--run-config FILE.toml]``, then
        ``flwr ls --run-id ID --format json`` (``flwr run --stream`` exits 0 even when
        the ServerApp crashed).

        Parameters
        ----------
        app_dir
            Folder of the app (``pyproject.toml`` with ``[tool.flwr.app]``).
        run_config
            Overrides of ``[tool.flwr.app.config]``.
        timeout
            Seconds for the whole run; on expiry the run is stopped (``flwr stop``).

        Raises
        ------
        FederationError
            If ``flwr run`` fails to start the run.
        FederationTimeoutError
            If the run lasts longer than ``timeout``.
        """
        cmd = [str(self._bin / "flwr"), "run", str(Path(app_dir).resolve()), CONNECTION]
        cmd.append("--stream")
        if run_config:
            runs = self.home / "run-configs"
            runs.mkdir(exist_ok=True)
            path = runs / f"{uuid.uuid4().hex}.toml"
            write_run_config(path, run_config)
            cmd += ["--run-config", str(path)]
        t0 = time.monotonic()
        popen = subprocess.Popen(
            cmd,
            env=self._env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            raw, _ = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as err:
            _kill_group(popen.pid, signal.SIGKILL)
            raw, _ = popen.communicate(timeout=10)
            found = _RUN_ID.search(
                _ANSI.sub("", (raw or err.output or b"").decode(errors="replace"))
            )
            if found:
                with contextlib.suppress(FederationError):
                    self.flwr("stop", found.group(1), CONNECTION, timeout=30)
            raise FederationTimeoutError(f"flwr run {app_dir} exceeded {timeout:.0f} s") from None
        except BaseException:
            _kill_group(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)
            raise
        seconds = time.monotonic() - t0
        output = _ANSI.sub("", raw.decode(errors="replace"))
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
            res = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
            try:
                run = _parse_json(res.stdout)["runs"][0]
            except (ValueError, KeyError, IndexError) as err:
                raise FederationError(
                    f"flwr ls --run-id {run_id} failed: {res.stdout[-500:]}"
                ) from err
            status = str(run["status"])
            details = str(run.get("status-details", ""))
            if status.startswith("finished") or time.monotonic() > deadline:
                return status, "" if details == "N/A" else details
            time.sleep(0.2)

    def flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI of this interpreter against the federation's home."""
        try:
            return subprocess.run(
                [str(self._bin / "flwr"), *args],
                env=self._env,
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise FederationTimeoutError(f"flwr {' '.join(args)} exceeded {timeout:.0f} s") from err

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
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f'[superlink."{CONNECTION}"]',
            f'address = "{self.address}"',
        ]
        if self.spec.tls:
            lines.append(f"root-certificates = {json.dumps(str(self.certificates['ca']))}")
        else:
            lines.append("insecure = true")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

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

    def _spawn(self, name: str, cmd: list[str], log_name: str) -> _Proc:
        log = self.log_dir / log_name
        log_file = log.open("ab")
        try:
            popen = subprocess.Popen(
                cmd,
                env=self._env,
                cwd=self.home,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as err:
            log_file.close()
            raise FederationError(f"cannot start {name} ({cmd[0]}): {err}") from err
        return _Proc(name, popen, log, log_file)

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
                    f"\n{_tail(self._superlink.log)}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(url, timeout=2, context=context) as res:
                    if res.status == 200:
                        return
            if time.monotonic() > deadline:
                raise FederationTimeoutError(
                    f"flower-superlink did not answer on {url} within "
                    f"{self.startup_timeout:.0f} s:\n{_tail(self._superlink.log)}"
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
        cmd += ["--node-config", _node_config_arg(config)]
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
