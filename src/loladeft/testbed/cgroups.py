"""CPU and memory limits of an emulated device: cgroup v1 ``cpu`` and ``memory`` groups.

A device with compute factor ``f_k`` gets the CPU quota ``c_k = C f_k / sum_j f_j`` cores
(:func:`cpu_shares`), written as ``cpu.cfs_quota_us = c_k * cpu.cfs_period_us``: the quotas of
all devices together use ``C`` cores (1.6 by default, leaving room on a 2-core machine for
the server), so the devices' speeds keep the ratios of their compute factors. Its memory
limit ``memory.limit_in_bytes`` makes the memory wall real: a device that exceeds it is
killed by the kernel's OOM killer (:func:`oom_kills` counts the kills).

The groups live at the top of each controller's hierarchy
(``/sys/fs/cgroup/{cpu,memory}/lolatb-<rid>-<k>``), not below the launcher's own group, so
that they never block the removal of a group someone else manages. A process enters with
:func:`attach` (or is started inside by :meth:`loladeft.testbed.edge.Testbed.popen`), and its
children inherit the group. :func:`remove` kills the processes still in a group (they can
only be there because the testbed put them or their parents there) and deletes it.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from loladeft.testbed._command import TestbedError
from loladeft.testbed.defaults import (
    CFS_PERIOD_US,
    CGROUP_ROOT,
    CPU_BUDGET_CORES,
    DRAIN_TIMEOUT_S,
    MIN_CFS_QUOTA_US,
)

CONTROLLERS = ("cpu", "memory")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def cpu_shares(compute_factors: Sequence[float], cores: float = CPU_BUDGET_CORES) -> list[float]:
    """Split ``cores`` among devices in proportion to their compute factors.

    Parameters
    ----------
    compute_factors
        Positive compute factor ``f_k`` of each device (any unit).
    cores
        Cores all quotas use together.

    Returns
    -------
    list of float
        ``c_k = cores * f_k / sum(f)``, cores per device.
    """
    f = [float(x) for x in compute_factors]
    if not f or not all(math.isfinite(x) and x > 0 for x in f):
        raise ValueError("compute_factors: must be one or more positive numbers")
    check_cpu_budget([cores])
    return [cores * x / sum(f) for x in f]


def check_cpu_budget(cores: Sequence[float], budget: float | None = None) -> None:
    """Raise ``ValueError`` unless the quotas ``cores`` fit ``budget`` (default: the machine).

    Every quota must be at least one millisecond per period.
    """
    limit = float(available_cores()) if budget is None else budget
    for k, c in enumerate(cores):
        if not (math.isfinite(c) and c * CFS_PERIOD_US >= MIN_CFS_QUOTA_US):
            raise ValueError(
                f"cpu_cores[{k}]: must be at least {MIN_CFS_QUOTA_US / CFS_PERIOD_US:g}, got {c!r}"
            )
    if sum(cores) > limit * (1 + 1e-9):
        raise ValueError(f"cpu_cores: quotas sum to {sum(cores):.3g} cores, over {limit:g}")


def path(controller: str, name: str) -> Path:
    """Directory of group ``name`` under ``controller``."""
    return CGROUP_ROOT / controller / name


def check_support() -> None:
    """Raise :class:`TestbedError` unless cgroup v1 ``cpu`` and ``memory`` are writable here."""
    for controller in CONTROLLERS:
        root = CGROUP_ROOT / controller
        key = "cpu.cfs_quota_us" if controller == "cpu" else "memory.limit_in_bytes"
        if not (root / key).exists():
            raise TestbedError(f"cgroup v1 {controller} controller not mounted at {root}")
        if not os.access(root, os.W_OK):
            raise TestbedError(f"{root}: no permission to create cgroups (run as root)")


def create(name: str) -> None:
    """Create group ``name`` under every controller (no limit yet)."""
    for controller in CONTROLLERS:
        try:
            path(controller, name).mkdir()
        except OSError as exc:
            raise TestbedError(f"cgroup {controller}/{name}: {exc.strerror}") from None


def _write(file: Path, value: str) -> None:
    try:
        file.write_text(value)
    except OSError as exc:
        raise TestbedError(f"{file}: cannot write {value!r}: {exc.strerror}") from None


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        raise TestbedError(f"{file}: cannot read: {exc.strerror}") from None


def set_cpu_quota(name: str, cores: float, period_us: int = CFS_PERIOD_US) -> int:
    """Limit group ``name`` to ``cores`` CPUs; returns the quota written, microseconds."""
    quota = round(cores * period_us)
    if quota < MIN_CFS_QUOTA_US:
        raise ValueError(f"cpu_cores: must be at least {MIN_CFS_QUOTA_US / period_us:g}")
    _write(path("cpu", name) / "cpu.cfs_period_us", str(period_us))
    _write(path("cpu", name) / "cpu.cfs_quota_us", str(quota))
    return quota


def cpu_quota(name: str) -> tuple[int, int]:
    """``(cfs_quota_us, cfs_period_us)`` of group ``name`` (quota -1: unlimited)."""
    d = path("cpu", name)
    return int(_read(d / "cpu.cfs_quota_us")), int(_read(d / "cpu.cfs_period_us"))


def set_memory_limit(name: str, limit_bytes: int) -> int:
    """Limit group ``name`` to ``limit_bytes`` of memory; returns the limit in force (the
    kernel rounds down to whole pages).

    Where the kernel accounts swap (``memory.memsw.limit_in_bytes``), memory plus swap gets
    the same limit, so a device cannot swap its way past the memory wall.
    """
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < _PAGE:
        raise ValueError(f"memory_bytes: must be an integer >= {_PAGE}, got {limit_bytes!r}")
    d = path("memory", name)
    memsw = d / "memory.memsw.limit_in_bytes"
    if memsw.exists():  # memsw >= limit at every step: lift it, set the limit, then memsw
        _write(memsw, "-1")
    _write(d / "memory.limit_in_bytes", str(limit_bytes))
    if memsw.exists():
        _write(memsw, str(limit_bytes))
    return memory_limit(name)


def memory_limit(name: str) -> int:
    """``memory.limit_in_bytes`` of group ``name``."""
    return int(_read(path("memory", name) / "memory.limit_in_bytes"))


def oom_kills(name: str) -> int:
    """How many processes the OOM killer has killed in group ``name``."""
    for line in _read(path("memory", name) / "memory.oom_control").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def procs_files(name: str) -> list[Path]:
    """The ``cgroup.procs`` files a process writes its pid to to enter group ``name``."""
    return [path(c, name) / "cgroup.procs" for c in CONTROLLERS]


def attach(name: str, pid: int) -> None:
    """Move process ``pid`` into group ``name`` under every controller."""
    for file in procs_files(name):
        _write(file, str(pid))


def pids(name: str) -> list[int]:
    """Processes in group ``name`` under any controller (empty if the group is gone)."""
    out: set[int] = set()
    for file in procs_files(name):
        try:
            out.update(int(tok) for tok in file.read_text().split())
        except FileNotFoundError:
            continue
    return sorted(out)


def exists(name: str) -> bool:
    """Whether group ``name`` exists under any controller."""
    return any(path(c, name).is_dir() for c in CONTROLLERS)


def list_groups(prefix: str) -> dict[str, list[str]]:
    """Groups at the top of each controller whose name starts with ``prefix``:
    ``{name: [controllers]}``."""
    out: dict[str, list[str]] = {}
    for controller in CONTROLLERS:
        root = CGROUP_ROOT / controller
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry.is_dir() and entry.name.startswith(prefix):
                out.setdefault(entry.name, []).append(controller)
    return out


def kill_all(name: str, timeout: float = DRAIN_TIMEOUT_S) -> None:
    """SIGKILL the processes in group ``name`` and wait (at most ``timeout``) until it is
    empty."""
    deadline = time.monotonic() + timeout
    while (left := pids(name)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    if pids(name):
        raise TestbedError(f"cgroup {name}: processes still inside after {timeout:g} s")


def remove(name: str, timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Kill what is left in group ``name`` and delete it under every controller."""
    kill_all(name, timeout)
    deadline = time.monotonic() + timeout
    for controller in CONTROLLERS:
        d = path(controller, name)
        while d.is_dir():
            try:
                d.rmdir()
            except OSError as exc:  # EBUSY while a killed task is still exiting
                if time.monotonic() > deadline:
                    raise TestbedError(f"cgroup {controller}/{name}: {exc.strerror}") from None
                time.sleep(0.05)
