"""Tests of the local Flower federation launcher (loladeft.runtime.federation and the
pki, processes and flwr_cli modules it composes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from loladeft.exceptions import FederationError
from loladeft.runtime import supernode
from loladeft.runtime.federation import MARKER_ENV, FederationSpec, LocalFederation
from loladeft.runtime.flwr_cli import node_config_arg
from loladeft.runtime.pki import make_certificates, make_node_keys
from loladeft.runtime.processes import pids_with_env

pytestmark = [pytest.mark.flower, pytest.mark.slow]

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedprobe"
version = "1.0.0"
description = "Trivial Flower app testing loladeft.runtime.federation"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "loladeft"

[tool.flwr.app.components]
serverapp = "fedprobe.apps:server_app"
clientapp = "fedprobe.apps:client_app"

[tool.flwr.app.config]
out = ""
crash = false
"""

APPS = '''\
"""One query round: each node answers with its partition-id."""

import json
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server_app = ServerApp()
client_app = ClientApp()


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"r": ConfigRecord({"partition-id": pid})}), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    if context.run_config["crash"]:
        raise RuntimeError("crash requested by the run config")
    nodes = list(grid.get_node_ids())
    t0 = time.monotonic()
    ids = set(
        grid.push_messages(
            [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
        )
    )
    replies = []
    while ids and time.monotonic() - t0 < 60:
        for reply in grid.pull_messages(ids):
            ids.discard(reply.metadata.reply_to_message_id)
            replies.append(int(reply.content["r"]["partition-id"]))
        time.sleep(0.02)
    with open(context.run_config["out"], "w") as f:
        json.dump({"partition-ids": replies, "seconds": time.monotonic() - t0}, f)
'''


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fedprobe")
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "fedprobe").mkdir()
    (folder / "fedprobe" / "__init__.py").write_text('"""Probe app."""\n')
    (folder / "fedprobe" / "apps.py").write_text(APPS)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line or environment mentions ``text`` (e.g. our FLWR_HOME)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(entry.name))
    return found


def _assert_all_stopped(fed: LocalFederation, home: Path, started: list[int]) -> None:
    assert started
    assert not [pid for pid in started if _alive(pid)]
    assert fed.leftover_pids() == []
    assert [p for p in _processes_mentioning(str(home)) if _alive(p)] == []


def _query(fed: LocalFederation, app_dir: Path, out: Path) -> dict:
    outcome = fed.run(app_dir, {"out": str(out)}, timeout=120)
    assert outcome.ok, outcome.output[-2000:]
    assert outcome.status == "finished:completed"
    return json.loads(out.read_text())


def test_plain_run_crash_kill_node_and_cleanup_on_error(app_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    fed = LocalFederation(FederationSpec(nodes=2, tls=False), home=home)
    with pytest.raises(KeyError, match="body failed"), fed:
        assert len(fed.online_nodes()) == 2
        assert fed.env["FLWR_HOME"] == str(home.resolve())
        assert fed.env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
        result = _query(fed, app_dir, tmp_path / "out.json")
        assert sorted(result["partition-ids"]) == [0, 1]

        # `flwr run --stream` exits 0 here too: the outcome comes from `flwr ls`
        crashed = fed.run(app_dir, {"out": str(tmp_path / "x.json"), "crash": True}, timeout=120)
        assert not crashed.ok
        assert crashed.status == "finished:failed"
        assert "crash requested" in crashed.details

        started = fed.pids + fed.leftover_pids()  # ours and their children
        fed.kill_node(0)
        assert not fed.node_alive(0) and not _alive(fed.node_pids[0])
        time.sleep(0.5)
        assert fed.node_alive(1)
        assert fed.superlink_pid is not None and _alive(fed.superlink_pid)
        raise KeyError("body failed")
    _assert_all_stopped(fed, home, started)
    assert (home / "logs" / "superlink.log").is_file()


def test_tls_auth_run_and_unregistered_node_refused(app_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = FederationSpec(nodes=2, tls=True, auth=True)
    with LocalFederation(spec, home=home) as fed:
        assert fed.certificates["ca"].is_file()
        config = (home / "config.toml").read_text()
        assert "root-certificates" in config and "insecure" not in config
        result = _query(fed, app_dir, tmp_path / "out.json")
        assert sorted(result["partition-ids"]) == [0, 1]

        intruder = fed.add_node({"partition-id": 9}, register=False, wait=False)
        refusal = "No SuperNode found with the given public key"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and refusal not in fed.superlink_log.read_text():
            time.sleep(0.2)
        assert refusal in fed.superlink_log.read_text()
        assert "SuperNode ID" not in fed.node_log(intruder).read_text()
        assert len(fed.online_nodes()) == 2
        started = fed.pids + fed.leftover_pids()
    _assert_all_stopped(fed, home, started)


def test_startup_failure_reports_log_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loladeft.runtime import federation

    with socket.socket() as taken:  # the SuperLink's port is already in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(federation, "free_ports", lambda n: [taken.getsockname()[1]] * n)
        spec = FederationSpec(nodes=1, tls=False)
        fed = LocalFederation(spec, home=tmp_path / "home", startup_timeout=20)
        with pytest.raises(FederationError, match="flower-superlink"), fed:
            pass
    assert fed.leftover_pids() == []


def test_certificates_verify(tmp_path: Path) -> None:
    from cryptography import x509

    paths = make_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    import ssl

    ssl.create_default_context(cafile=str(paths["ca"])).load_cert_chain(paths["cert"], paths["key"])


def test_node_keys_in_flower_format(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_ssh_private_key,
        load_ssh_public_key,
    )
    from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

    (private, public), _ = make_node_keys(tmp_path, 2)
    key = load_ssh_private_key(private.read_bytes(), None)
    pub = load_ssh_public_key(public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(pub, ec.EllipticCurvePublicKey) and uses_nist_ec_curve(pub)
    assert key.public_key().public_numbers() == pub.public_numbers()


def test_node_config_arg_round_trips_through_flower() -> None:
    from flwr.common.config import parse_config_args

    config = {"partition-id": 3, "lr": 0.5, "name": "a b", "q": 'say "hi"', "on": True}
    assert parse_config_args([node_config_arg(config)]) == config
    with pytest.raises(FederationError, match="key"):
        node_config_arg({"bad key": 1})


def test_spec_validation() -> None:
    assert FederationSpec(nodes=3).node_config(2) == {"partition-id": 2, "num-partitions": 3}
    secure = FederationSpec(nodes=1)  # TLS and node authentication unless turned off
    assert secure.tls and secure.auth
    insecure = FederationSpec(nodes=1, tls=False)
    assert not insecure.tls and not insecure.auth
    with pytest.raises(FederationError, match="auth: SuperNode authentication needs tls"):
        FederationSpec(nodes=1, tls=False, auth=True)
    with pytest.raises(FederationError, match="node_configs"):
        FederationSpec(nodes=2, node_configs=[{}])


def test_toml_files_read_back(tmp_path: Path) -> None:
    import tomllib

    from loladeft.runtime.flwr_cli import CONNECTION, write_connection, write_run_config

    rc = {"config": '{"a": "b\\"c"}', "out": "/x y", "resume": False, "round-timeout": 1e-3}
    write_run_config(tmp_path / "rc.toml", rc)
    assert tomllib.loads((tmp_path / "rc.toml").read_text()) == rc
    with pytest.raises(FederationError, match="not a str"):
        write_run_config(tmp_path / "bad.toml", {"x": None})
    path = write_connection(tmp_path, "127.0.0.1:9", tmp_path / "ca.crt")
    config = tomllib.loads(path.read_text())["superlink"]
    assert config["default"] == CONNECTION
    assert config[CONNECTION] == {
        "address": "127.0.0.1:9",
        "root-certificates": str(tmp_path / "ca.crt"),
    }
    config = tomllib.loads(write_connection(tmp_path, "h:1", None).read_text())["superlink"]
    assert config[CONNECTION] == {"address": "h:1", "insecure": True}


def test_supernode_patch_caps_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supernode import start_client_internal as sci

    monkeypatch.setattr(sci, "time", sci.time)  # restored after the test
    monkeypatch.setenv(supernode.POLL_ENV, "0.01")
    supernode.patch()
    t0 = time.monotonic()
    sci.time.sleep(3)
    assert time.monotonic() - t0 < 1
    assert sci.time.monotonic() > 0  # everything else forwarded
    monkeypatch.setenv(supernode.POLL_ENV, "-1")
    with pytest.raises(SystemExit, match=supernode.POLL_ENV):
        supernode.poll_seconds()


def test_pids_with_env_finds_marked_child(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = dict(os.environ, **{MARKER_ENV: "probe-" + tmp_path.name})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        assert child.pid in pids_with_env(MARKER_ENV, env[MARKER_ENV])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert pids_with_env(MARKER_ENV, env[MARKER_ENV]) == []


def test_terminated_launcher_stops_its_federation(tmp_path: Path) -> None:
    """SIGTERM to a process inside ``with LocalFederation(...)`` still stops every process."""
    import subprocess
    import sys

    code = (
        "import sys, time; from pathlib import Path\n"
        "from loladeft.runtime.federation import FederationSpec, LocalFederation\n"
        "spec = FederationSpec(nodes=1, tls=False)\n"
        f"with LocalFederation(spec, log_dir=Path({str(tmp_path)!r})) as f:\n"
        "    print(f.marker, flush=True)\n"
        "    time.sleep(120)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        marker = launcher.stdout.readline().strip()
        assert marker and pids_with_env(MARKER_ENV, marker)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
        assert pids_with_env(MARKER_ENV, marker) == []
    finally:
        if launcher.poll() is None:
            launcher.kill()
