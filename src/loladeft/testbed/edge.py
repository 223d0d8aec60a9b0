"""The emulated heterogeneous edge: N devices, each a namespace with a shaped uplink and a
CPU and memory limit.

>>> specs = [DeviceSpec(uplink_bps=8e6, cpu_cores=0.4, memory_bytes=2**30)] * 3
>>> with Testbed(specs) as tb:                                  # doctest: +SKIP
...     server = tb.server_address                              # bind the server here
...     node = tb.popen(0, ["python", "-m", "my.client", server])
...     tb.set_rates([4e6, 2e6, 1e6])                           # next round's OFDMA split

:class:`Testbed` removes everything it created when the ``with`` block ends, when an exception
leaves it, and when the launcher gets SIGINT or SIGTERM (turned into ``KeyboardInterrupt`` /
``SystemExit`` so that the block unwinds). After a SIGKILL of the launcher,
:func:`~loladeft.testbed.leftovers.cleanup` finds and removes the leftovers.
"""

from __future__ import annotations

import atexit
import math
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from loladeft.testbed import cgroups, shaping
from loladeft.testbed._command import TestbedError, require_root
from loladeft.testbed.defaults import CPU_BUDGET_CORES, MAX_DEVICES, PREFIX, TERM_GRACE_S
from loladeft.testbed.leftovers import remove_run
from loladeft.testbed.netns import (
    DeviceLink,
    create_device_link,
    exec_argv,
    list_links,
    list_namespaces,
)
from loladeft.testbed.runs import (
    Subnet,
    check_run_id,
    device_name,
    forget_run,
    new_run_id,
    peer_name,
    register_run,
)

# Runs the launcher's process's commands inside a device's cgroups, then its namespace.
_ENTER = 'for f in "$1" "$2"; do echo $$ > "$f" || exit 125; done; shift 2; exec "$@"'


@dataclass(frozen=True)
class DeviceSpec:
    """What one emulated device is given.

    Attributes
    ----------
    uplink_bps
        Initial uplink goodput (TCP payload bit/s; see :mod:`loladeft.testbed.shaping`).
    cpu_cores
        CPU quota in cores (``None``: no quota).
    memory_bytes
        Memory limit in bytes (``None``: no limit).
    """

    uplink_bps: float
    cpu_cores: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class EmulatedDevice:
    """A device as set up: its index, its network and the name of its cgroups."""

    index: int
    link: DeviceLink
    cgroup: str


class Testbed:
    """N emulated devices on this machine (context manager).

    Parameters
    ----------
    devices
        One :class:`DeviceSpec` per device.
    cpu_budget
        Cores the devices' CPU quotas may use together.
    run_id
        Four hex digits naming the run's objects (default: a fresh random one).
    handle_signals
        Turn SIGINT/SIGTERM into ``KeyboardInterrupt``/``SystemExit`` while the testbed is
        open (only possible from the main thread).

    Raises
    ------
    ValueError
        A spec is out of range, or the CPU quotas do not fit ``cpu_budget``.
    TestbedError
        On :meth:`setup`: not root, no namespaces/veths/tc/cgroups here, or a command failed.
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        *,
        cpu_budget: float = CPU_BUDGET_CORES,
        run_id: str | None = None,
        handle_signals: bool = True,
    ) -> None:
        if not 1 <= len(devices) <= MAX_DEVICES - 1:
            raise ValueError(f"devices: need 1 to {MAX_DEVICES - 1}, got {len(devices)}")
        for k, spec in enumerate(devices):
            shaping.tbf_parameters(shaping.wire_rate(spec.uplink_bps))
            if spec.memory_bytes is not None and not (
                isinstance(spec.memory_bytes, int) and spec.memory_bytes > 0
            ):
                raise ValueError(f"devices[{k}].memory_bytes: must be a positive integer")
        cores = [s.cpu_cores for s in devices if s.cpu_cores is not None]
        if not (math.isfinite(cpu_budget) and 0 < cpu_budget <= cgroups.available_cores()):
            raise ValueError(
                f"cpu_budget: must be in (0, {cgroups.available_cores()}] cores, got {cpu_budget}"
            )
        cgroups.check_cpu_budget(cores, cpu_budget)
        self.specs = list(devices)
        self.cpu_budget = cpu_budget
        self.run_id = check_run_id(run_id) if run_id is not None else None
        self.handle_signals = handle_signals
        self.devices: list[EmulatedDevice] = []
        self.subnet: Subnet | None = None
        self._procs: list[subprocess.Popen] = []
        self._saved_handlers: dict[int, Any] = {}
        self._open = False

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setup(self) -> None:
        """Create every device's namespace, veth pair, shaping and cgroups.

        On failure, what was created is removed before the error propagates.
        """
        if self._open:
            raise TestbedError("testbed: already set up")
        require_root()
        cgroups.check_support()
        if self.run_id is None:
            taken = [*list_namespaces(), *list_links(), *cgroups.list_groups(PREFIX)]
            self.run_id = new_run_id(taken)
        self.subnet = register_run(self.run_id)
        self._open = True
        atexit.register(self.close)
        self._install_signal_handlers()
        try:
            for k, spec in enumerate(self.specs):
                self._add_device(k, spec)
        except BaseException:
            self.close()
            raise

    def _add_device(self, k: int, spec: DeviceSpec) -> None:
        assert self.subnet is not None and self.run_id is not None
        name = device_name(self.run_id, k)
        link = create_device_link(
            namespace=name,
            host_if=name,
            device_if=peer_name(self.run_id, k),
            host_address=self.subnet.host_address(k),
            device_address=self.subnet.device_address(k),
            prefixlen=self.subnet.prefixlen,
            route=str(self.subnet.network),
        )
        self.devices.append(EmulatedDevice(k, link, name))
        shaping.set_uplink_rate(link.namespace, link.device_if, shaping.wire_rate(spec.uplink_bps))
        cgroups.create(name)
        if spec.cpu_cores is not None:
            cgroups.set_cpu_quota(name, spec.cpu_cores)
        if spec.memory_bytes is not None:
            cgroups.set_memory_limit(name, spec.memory_bytes)

    def close(self) -> None:
        """End the processes started here and remove everything the run created.

        Safe to call more than once; SIGINT/SIGTERM are ignored while it runs.
        """
        if not self._open:
            return
        main = threading.current_thread() is threading.main_thread()
        held = {}
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                held[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            self._stop_processes()
            assert self.run_id is not None
            remove_run(self.run_id, range(len(self.specs)))
        finally:
            self._open = False
            self.devices = []
            atexit.unregister(self.close)
            if main:
                for sig, handler in held.items():
                    signal.signal(sig, handler)
                self._restore_signal_handlers()
            if self.run_id is not None:
                forget_run(self.run_id)

    def _stop_processes(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TERM_GRACE_S)
        self._procs = []

    def _install_signal_handlers(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved_handlers[sig] = signal.signal(sig, handler)

    def _restore_signal_handlers(self) -> None:
        for sig, old in self._saved_handlers.items():
            signal.signal(sig, old)
        self._saved_handlers = {}

    # -- what the integration uses ----------------------------------------------------------

    def _device(self, k: int) -> EmulatedDevice:
        if not self._open:
            raise TestbedError("testbed: not set up")
        if not 0 <= k < len(self.devices):
            raise ValueError(f"k: no device {k} (testbed has {len(self.devices)})")
        return self.devices[k]

    @property
    def server_address(self) -> str:
        """Root-side address every device reaches over its own shaped uplink (device 0's
        gateway): bind a server here and point every device's client at it."""
        return self._device(0).link.host_address

    def set_rate(self, k: int, uplink_bps: float) -> float:
        """Shape device ``k``'s uplink to ``uplink_bps`` of goodput; returns the wire rate in
        force (bit/s)."""
        link = self._device(k).link
        return shaping.set_uplink_rate(
            link.namespace, link.device_if, shaping.wire_rate(uplink_bps)
        )

    def set_rates(self, uplink_bps: Sequence[float | None]) -> list[float | None]:
        """Shape every device's uplink (e.g. ``scale * B_k * r_k`` of eq. (4) before a round);
        ``None`` leaves a device's rate as it is (e.g. a device with no block, ``B_k = 0``).

        Every rate is checked before any is changed. Returns the wire rates in force.
        """
        if len(uplink_bps) != len(self.devices):
            raise ValueError(f"uplink_bps: need {len(self.devices)} rates, got {len(uplink_bps)}")
        for k, rate in enumerate(uplink_bps):
            if rate is not None:
                try:
                    shaping.tbf_parameters(shaping.wire_rate(rate))
                except ValueError as exc:
                    raise ValueError(f"uplink_bps[{k}]: {exc}") from None
        return [
            self.wire_rate(k) if rate is None else self.set_rate(k, rate)
            for k, rate in enumerate(uplink_bps)
        ]

    def wire_rate(self, k: int) -> float | None:
        """The tbf rate in force on device ``k``'s uplink, frame bit/s (read from ``tc``)."""
        link = self._device(k).link
        return shaping.uplink_rate(link.namespace, link.device_if)

    def cpu_cores(self, k: int) -> float | None:
        """Device ``k``'s CPU quota in cores, read back (``None``: unlimited)."""
        quota, period = cgroups.cpu_quota(self._device(k).cgroup)
        return None if quota < 0 else quota / period

    def memory_limit(self, k: int) -> int:
        """Device ``k``'s memory limit in bytes, read back."""
        return cgroups.memory_limit(self._device(k).cgroup)

    def oom_kills(self, k: int) -> int:
        """Processes of device ``k`` killed for exceeding its memory limit."""
        return cgroups.oom_kills(self._device(k).cgroup)

    def popen(self, k: int, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` as device ``k``: inside its cgroups and its namespace.

        Keyword arguments go to :class:`subprocess.Popen`. The process is ended at
        :meth:`close` (SIGTERM, then SIGKILL).
        """
        dev = self._device(k)
        files = [str(f) for f in cgroups.procs_files(dev.cgroup)]
        cmd = ["sh", "-c", _ENTER, "sh", *files, *exec_argv(dev.link.namespace, argv)]
        proc = subprocess.Popen(cmd, **kwargs)
        self._procs.append(proc)
        return proc
