"""A testbed run's identity: its id, the names of what it creates, its owner and its subnet.

Names
-----
A run has a four-hex-digit id ``rid``; device ``k`` of it owns

* the network namespace ``lolatb-<rid>-<k>``,
* the veth end in the root namespace ``lolatb-<rid>-<k>`` and its peer inside the namespace
  ``lolatb-<rid>-<k>d`` (at most 15 characters, the kernel's limit for interface names),
* the cgroups ``lolatb-<rid>-<k>`` under the ``cpu`` and ``memory`` controllers,

and the run records its owner (pid and process start time) in ``/run/lolatb/<rid>.json``.
:func:`parse_name` recognises exactly these names, so cleanup never touches anything else.

Addresses
---------
Each run takes one free /24 ``10.231.x.0/24`` of :data:`~loladeft.testbed.defaults.SUPERNET`;
device ``k`` gets the /30 ``10.231.x.4k/30`` with ``.4k+1`` on the root side (its gateway)
and ``.4k+2`` inside its namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loladeft.testbed._command import TestbedError, run
from loladeft.testbed.defaults import MAX_DEVICES, PREFIX, STATE_DIR, SUPERNET

_NAME = re.compile(rf"^{PREFIX}-(?P<run>[0-9a-f]{{4}})-(?P<k>\d{{1,2}})(?P<peer>d?)$")
_RECORD = re.compile(r"^(?P<run>[0-9a-f]{4})\.json$")


def new_run_id(taken: Iterable[str] = ()) -> str:
    """A random four-hex-digit run id that no recorded run and no name in ``taken`` (e.g.
    existing namespaces and links) uses."""
    used = {p[0] for p in map(parse_name, taken) if p is not None}
    for _ in range(64):
        rid = secrets.token_hex(2)
        if rid not in used and not (STATE_DIR / f"{rid}.json").exists():
            return rid
    raise TestbedError(f"no free run id: clean up {STATE_DIR} (loladeft testbed --cleanup)")


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is four lowercase hex digits, else raise ``ValueError``."""
    if not isinstance(run_id, str) or not re.fullmatch(r"[0-9a-f]{4}", run_id):
        raise ValueError(f"run_id: must be four lowercase hex digits, got {run_id!r}")
    return run_id


def device_name(run_id: str, k: int) -> str:
    """Name of device ``k``'s namespace, root-side veth and cgroups."""
    if not 0 <= k < MAX_DEVICES:
        raise ValueError(f"k: must be in [0, {MAX_DEVICES}), got {k}")
    return f"{PREFIX}-{run_id}-{k}"


def peer_name(run_id: str, k: int) -> str:
    """Name of device ``k``'s veth end inside its namespace."""
    return device_name(run_id, k) + "d"


def parse_name(name: str) -> tuple[str, int] | None:
    """``(run_id, k)`` of a name the testbed creates, or ``None`` for any other name."""
    m = _NAME.match(name)
    return (m["run"], int(m["k"])) if m else None


@dataclass(frozen=True)
class Subnet:
    """A run's /24 and the /30 of each device in it."""

    network: ipaddress.IPv4Network

    #: Prefix length of each device's subnet.
    prefixlen = 30

    def host_address(self, k: int) -> str:
        """Root-side address of device ``k``'s veth (its gateway, where servers listen)."""
        return str(self.network.network_address + 4 * k + 1)

    def device_address(self, k: int) -> str:
        """Address of device ``k`` inside its namespace."""
        return str(self.network.network_address + 4 * k + 2)


def record_path(run_id: str) -> Path:
    """Path of a run's owner record."""
    return STATE_DIR / f"{check_run_id(run_id)}.json"


def recorded_runs() -> dict[str, dict]:
    """Owner records of the runs on this machine: ``{run_id: record}``."""
    out: dict[str, dict] = {}
    if not STATE_DIR.is_dir():
        return out
    for path in STATE_DIR.iterdir():
        m = _RECORD.match(path.name)
        if not m:
            continue
        try:
            out[m["run"]] = json.loads(path.read_text())
        except (OSError, ValueError):
            out[m["run"]] = {}
    return out


def _start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot, ``None`` if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def owner_alive(record: dict) -> bool:
    """Whether the process that recorded a run still runs (same pid, same start time)."""
    pid, started = record.get("pid"), record.get("start_time")
    if not isinstance(pid, int) or pid <= 0:
        return False
    return _start_time(pid) == started


def _used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks already in use in the root namespace (addresses and routes)."""
    used = []
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for a in entry.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for r in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = r.get("dst", "default")
        if dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(dst, strict=False))
    return used


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Hold the machine-wide lock under which runs take subnets and write records."""
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def register_run(run_id: str) -> Subnet:
    """Record this process as the owner of ``run_id`` and give the run a free /24.

    A /24 is free when no address or route of the root namespace overlaps it and no recorded
    run holds it.

    Raises
    ------
    TestbedError
        Every /24 of the supernet is taken.
    """
    path = record_path(run_id)
    with _lock():
        taken = {rec.get("subnet") for rec in recorded_runs().values()}
        used = _used_networks()
        for net in ipaddress.ip_network(SUPERNET).subnets(new_prefix=24):
            if str(net) in taken or any(net.overlaps(u) for u in used):
                continue
            record = {
                "pid": os.getpid(),
                "start_time": _start_time(os.getpid()),
                "subnet": str(net),
            }
            path.write_text(json.dumps(record))
            return Subnet(net)
    raise TestbedError(f"no free /24 in {SUPERNET}: clean up (loladeft testbed --cleanup)")


def forget_run(run_id: str) -> None:
    """Delete a run's owner record (no error if there is none)."""
    with contextlib.suppress(FileNotFoundError):
        record_path(run_id).unlink()
