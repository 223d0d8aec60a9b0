"""DEFT on the emulated edge: a local Flower federation whose SuperNodes are testbed devices.

:func:`run_testbed` sets up a :class:`~loladeft.testbed.edge.Testbed` of ``K`` devices and
runs one DEFT run per scheme on it, each in its own folder:

* every SuperNode runs in its device's network namespace and cgroups
  (:class:`TestbedFederation`), behind a veth pair whose uplink ``tc`` shapes;
* the SuperLink runs in the root namespace and listens on device 0's root-side veth address
  (a private ``10.231.x.y`` address of the testbed's own subnet: every device reaches it over
  its own veth, nothing outside this machine can); its Control and ServerAppIo APIs share that
  address. The links are plain (``--insecure``): they never leave the machine's private
  namespaces, and TLS's CPU cost would perturb the quota'd nodes;
* CPU: each device's cgroup CPU quota is proportional to its compute factor ``f_k`` (one draw
  of the scenario per run), the quotas together ``testbed.cpu_budget`` cores; the quota
  holds the process that computes (the ClientApp executor), not the SuperNode's polling;
* memory: each device's cgroup memory limit is set by the server after the nodes have loaded
  the model (:meth:`EdgeControl.bind_memory`): the node's resident memory then, plus a margin,
  plus its *headroom* ``memory_scale x phi x m_k``, where ``m_k`` is the device's memory
  drawn from the scenario and ``phi`` maps the draws onto the model so that the device at the
  upper quartile of the draws just holds the deepest block (its activations and gradients);
  devices below it cannot hold the deepest blocks, so the wall binds for some of them. A node
  that exceeds its limit is killed by the kernel; the launcher logs the kill and stops that
  node, and the server's round timeout reassigns its block;
* uplink: before each round's ``train`` messages the server sets every device's shaped
  goodput to ``B_k r_k`` (the round's fading draw ``r_k`` and the scheme's split ``B_k``;
  devices without a block get ``B / K``): the emulated OFDMA cell
  (:meth:`EdgeControl.set_rates`). The server learns the edge from a JSON file the launcher
  names in the environment variable :data:`EDGE_ENV`.

Each run's folder holds ``loladeft train``'s files (``metrics.csv`` with the wall-clock
columns, ``manifest.json``), ``wallclock.csv`` and the plot of predicted against measured
latency; :func:`summarize` compares the schemes (``summary.json``, ``summary.csv``,
``summary.png``). Namespaces, veths, qdiscs and cgroups are removed on every exit (the
:class:`~loladeft.testbed.edge.Testbed` context, SIGINT/SIGTERM); ``loladeft testbed
--cleanup`` removes what a killed launcher left.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loladeft.runtime import processes
from loladeft.runtime.federation import FederationSpec, LocalFederation

#: Environment variable naming the edge file the server reads (:meth:`EdgeControl.from_env`).
EDGE_ENV = "LOLADEFT_TESTBED_EDGE"
#: Environment variable holding the ``cgroup.procs`` file of a device's CPU cgroup: the
#: process that computes writes its pid there (:func:`loladeft.runtime.device.join_cpu_group`).
CPU_GROUP_ENV = "LOLADEFT_TESTBED_CPU_GROUP"
#: Enters the memory cgroup named by $1, then runs the rest.
_ENTER = 'echo $$ > "$1" || exit 125; shift; exec "$@"'
#: Key mixed into the seed of the testbed's device draw.
_DEVICES = 0x7E5B


@dataclass
class EdgeControl:
    """What the server controls of the emulated edge (lives in the ServerApp process).

    Attributes
    ----------
    devices
        Per device: ``namespace``, ``device_if`` (the uplink's veth end) and ``cgroup``.
    headroom_bytes
        Per device: memory beyond its resident set after loading the model.
    base_memory_bytes
        Resident memory to assume per node; 0: read each node's from its cgroup.
    margin_bytes
        Memory each node gets besides base and headroom (``testbed.memory_margin_mb``).
    goodput_bps
        The goodput in force per device (bit/s).
    """

    devices: list[dict[str, str]]
    headroom_bytes: list[float]
    base_memory_bytes: float = 0.0
    margin_bytes: float = 0.0
    goodput_bps: list[float] = field(default_factory=list)
    memory_limits: list[int] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> EdgeControl | None:
        """The edge named by :data:`EDGE_ENV`, or ``None`` off the testbed."""
        path = os.environ.get(EDGE_ENV)
        if not path:
            return None
        return cls.load(Path(path))

    @classmethod
    def load(cls, path: Path) -> EdgeControl:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**data)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    def goodput(self, k: int) -> float:
        """Device ``k``'s shaped goodput now, bit/s."""
        return float(self.goodput_bps[k])

    def set_rates(self, goodput_bps: Sequence[float]) -> list[float]:
        """Shape every device's uplink to ``goodput_bps`` (clipped to what ``tc`` takes);
        returns the goodputs in force."""
        from loladeft.testbed import shaping
        from loladeft.testbed.defaults import MAX_RATE_BPS, MIN_RATE_BPS

        lo, hi = shaping.goodput(MIN_RATE_BPS) * 1.001, shaping.goodput(MAX_RATE_BPS) * 0.999
        out = []
        for dev, g in zip(self.devices, goodput_bps, strict=True):
            g = float(min(max(g, lo), hi))
            wire = shaping.set_uplink_rate(dev["namespace"], dev["device_if"], shaping.wire_rate(g))
            out.append(shaping.goodput(wire))
        self.goodput_bps = out
        return out

    def resident_bytes(self, k: int) -> float:
        """Device ``k``'s resident memory now (anonymous plus mapped files), bytes."""
        from loladeft.testbed import cgroups

        stat = cgroups.path("memory", self.devices[k]["cgroup"]) / "memory.stat"
        values = dict(line.split() for line in stat.read_text().splitlines() if " " in line)
        return float(int(values.get("total_rss", 0)) + int(values.get("total_mapped_file", 0)))

    def bind_memory(self) -> list[int]:
        """Set every device's memory limit: resident memory (or ``base_memory_bytes``) +
        margin + headroom; returns the limits in force."""
        from loladeft.testbed import cgroups

        limits = []
        for k, dev in enumerate(self.devices):
            base = self.base_memory_bytes or self.resident_bytes(k)
            want = int(base + self.margin_bytes + self.headroom_bytes[k])
            limits.append(cgroups.set_memory_limit(dev["cgroup"], want))
        self.memory_limits = limits
        return limits

    def describe(self) -> dict[str, Any]:
        """For the manifest."""
        return {
            "goodput_bps": self.goodput_bps,
            "memory_limit_bytes": self.memory_limits,
            "headroom_bytes": self.headroom_bytes,
        }


def lift_memory_limit(cgroup: str) -> None:
    """Remove a device's memory limit (between runs)."""
    from loladeft.testbed import cgroups

    d = cgroups.path("memory", cgroup)
    memsw = d / "memory.memsw.limit_in_bytes"
    with contextlib.suppress(OSError):
        (d / "memory.limit_in_bytes").write_text("-1")
    if memsw.exists():
        with contextlib.suppress(OSError):
            memsw.write_text("-1")


class TestbedFederation(LocalFederation):
    """:class:`~loladeft.runtime.federation.LocalFederation` on a testbed: the SuperLink on
    the testbed's server address, SuperNode ``k`` inside device ``k``."""

    __test__ = False

    def __init__(self, spec: FederationSpec, testbed: Any, **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.testbed = testbed

    @property
    def address(self) -> str:
        return f"{self.testbed.server_address}:{self.port}"

    def _start_superlink(self) -> None:
        cmd = [str(self._bin / "flower-superlink"), "--host", self.testbed.server_address]
        cmd += ["--port", str(self.port), "--disable-runtime-dependency-installation"]
        cmd += ["--insecure"]
        self._superlink = self._spawn("flower-superlink", cmd, "superlink.log")

    def _spawn(self, name: str, cmd: list[str], log_name: str) -> processes.Proc:
        """SuperNode ``k`` (``supernode-k``) starts inside device ``k``: its network
        namespace (``nsenter --net``, which keeps ``/sys`` and so the cgroup files visible)
        and its memory cgroup; the ClientApp process that computes joins the device's CPU
        cgroup itself (:data:`CPU_GROUP_ENV`, :func:`loladeft.runtime.device.join_cpu_group`).
        The SuperNode's own polling thus runs outside the quota: the emulated device is slow
        at computing, not at taking messages off the wire."""
        if not name.startswith("supernode-"):
            return super()._spawn(name, cmd, log_name)
        from loladeft.testbed import cgroups

        k = int(name.rsplit("-", 1)[1])
        dev = self.testbed.devices[k]
        memory = cgroups.path("memory", dev.cgroup) / "cgroup.procs"
        cpu = cgroups.path("cpu", dev.cgroup) / "cgroup.procs"
        netns = f"--net=/run/netns/{dev.link.namespace}"
        argv = ["sh", "-c", _ENTER, "sh", str(memory), "nsenter", netns, *cmd]
        log = self.log_dir / log_name
        log_file = log.open("ab")
        popen = subprocess.Popen(
            argv,
            env={**self._env, CPU_GROUP_ENV: str(cpu)},
            cwd=self.home,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return processes.Proc(name, popen, log, log_file)

    def stop_node(self, k: int) -> None:
        """End node ``k`` (after the kernel killed part of it)."""
        self._expendable.add(k)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            processes.kill_group(self._nodes[k].popen.pid, signal.SIGKILL)


@dataclass(frozen=True)
class EdgeDraw:
    """The emulated devices of a run: compute factor, CPU quota, drawn memory, headroom."""

    compute_factor: list[float]
    cpu_cores: list[float]
    memory_drawn_bytes: list[float]
    headroom_bytes: list[float]
    phi: float


def draw_edge(cfg: Any) -> EdgeDraw:
    """One draw of the scenario's devices, mapped onto the testbed (module notes)."""
    from loladeft.profiling.profile import load_profile
    from loladeft.system.scenario import BlockCosts
    from loladeft.testbed import cgroups
    from loladeft.training.engine import default_profile

    profile = load_profile(cfg.scenario.profile or default_profile(cfg.train.model))
    scenario = cfg.scenario.scenario(BlockCosts.from_profile(profile))
    rng = np.random.default_rng([cfg.train.seed, _DEVICES])
    f, m = scenario.draw_device_states(rng, 1)
    f, m = f[0], m[0]
    scale = cfg.train.batch / float(profile.batch)
    deepest = profile.depths[-1]
    need = deepest.activation_bytes * scale + 2 * deepest.block_param_bytes
    phi = need / float(np.quantile(m, 0.75))
    cores = cgroups.cpu_shares(f, cfg.testbed.cpu_budget)
    headroom = cfg.testbed.memory_scale * phi * m
    return EdgeDraw(
        [float(x) for x in f],
        [float(x) for x in cores],
        [float(x) for x in m],
        [float(x) for x in headroom],
        float(phi),
    )


def run_scheme(
    cfg: Any,
    out: Path,
    testbed: Any,
    edge: EdgeDraw,
    *,
    log: Callable[[str], None],
    watch: Callable[[int], None] | None = None,
) -> Any:
    """One DEFT run of ``cfg.train.scheme`` on the testbed, into ``out``."""
    from loladeft.exceptions import FederationError
    from loladeft.runtime.deployment import run_config, write_app
    from loladeft.runtime.device import PROFILE_CACHE_ENV
    from loladeft.runtime.flwr_cli import write_run_config
    from loladeft.runtime.supernode import POLL_ENV
    from loladeft.testbed import cgroups

    out = Path(out).resolve()
    logs = out / "flower-logs"
    logs.mkdir(parents=True, exist_ok=True)
    K = cfg.scenario.num_devices
    for dev in testbed.devices:
        lift_memory_limit(dev.cgroup)
    uplink = cfg.scenario.bandwidth_hz / K  # until the first round's split: B/K at r = 1
    control = EdgeControl(
        devices=[
            {"namespace": d.link.namespace, "device_if": d.link.device_if, "cgroup": d.cgroup}
            for d in testbed.devices
        ],
        headroom_bytes=edge.headroom_bytes,
        base_memory_bytes=cfg.testbed.base_memory_mb * 2**20,
        margin_bytes=cfg.testbed.memory_margin_mb * 2**20,
    )
    control.set_rates([uplink] * K)
    edge_file = logs / "edge.json"
    control.write(edge_file)
    rc = run_config(cfg, out, runtime="testbed", resume=False)
    app = write_app(logs / "app")
    write_run_config(logs / "run-config.toml", rc)
    spec = FederationSpec(
        nodes=K,
        tls=False,
        auth=False,
        warm=cfg.runtime.warm,
        env={
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            EDGE_ENV: str(edge_file),
            POLL_ENV: str(cfg.testbed.node_poll_s),
            PROFILE_CACHE_ENV: str(out.parent / "profile-cache"),
        },
    )
    kills = [cgroups.oom_kills(d.cgroup) for d in testbed.devices]
    stopped: set[int] = set()
    result: dict[str, Any] = {}
    with TestbedFederation(spec, testbed, log_dir=logs, startup_timeout=120.0) as fed:
        worker = threading.Thread(
            target=lambda: result.update(outcome=fed.run(app, rc, timeout=cfg.runtime.timeout)),
            daemon=True,
        )
        worker.start()
        while worker.is_alive():
            worker.join(1.0)
            for k, dev in enumerate(testbed.devices):
                now = cgroups.oom_kills(dev.cgroup)
                if now > kills[k] and k not in stopped:
                    log(f"device {k}: killed by its memory limit; node stopped")
                    stopped.add(k)
                    fed.stop_node(k)
                kills[k] = now
            if watch is not None:
                watch(len(stopped))
    outcome = result.get("outcome")
    if outcome is not None:
        (logs / "run.log").write_text(outcome.output, encoding="utf-8")
    if outcome is None or not outcome.ok:
        status = "no outcome" if outcome is None else f"{outcome.status} {outcome.details}"
        raise FederationError(f"testbed run: {status.strip()}; see {logs}")
    manifest = out / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["testbed"] = {
        "run_id": testbed.run_id,
        "subnet": str(testbed.subnet.network),
        "server_address": testbed.server_address,
        "edge": asdict(edge),
        "cpu_cores_read_back": [testbed.cpu_cores(k) for k in range(K)],
        "memory_limit_read_back": [testbed.memory_limit(k) for k in range(K)],
        "wire_rate_read_back": [testbed.wire_rate(k) for k in range(K)],
        "oom_killed_devices": sorted(stopped),
    }
    manifest.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return outcome


def run_testbed(
    cfg: Any,
    out: Path,
    schemes: Sequence[str],
    *,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """One DEFT run per scheme on one emulated edge; returns :func:`summarize`'s summary.

    Raises
    ------
    TestbedError
        Not root, no namespaces or cgroups here (one line).
    """
    from loladeft.testbed.edge import DeviceSpec, Testbed

    out = Path(out).resolve()
    edge = draw_edge(cfg)
    K = cfg.scenario.num_devices
    specs = [
        DeviceSpec(uplink_bps=cfg.scenario.bandwidth_hz / K, cpu_cores=c) for c in edge.cpu_cores
    ]
    out.mkdir(parents=True, exist_ok=True)
    with Testbed(specs, cpu_budget=cfg.testbed.cpu_budget) as tb:
        log(
            f"testbed {tb.run_id}: {K} devices on {tb.subnet.network}, server "
            f"{tb.server_address}; CPU quotas {', '.join(f'{c:.2f}' for c in edge.cpu_cores)}"
        )
        for scheme in schemes:
            run_cfg = cfg.updated({"train.scheme": scheme})
            log(f"{scheme}: running {cfg.train.rounds} rounds")
            run_scheme(run_cfg, out / scheme, tb, edge, log=log)
    return summarize(out, schemes)


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _num(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def scheme_summary(folder: Path, scheme: str, target: float | None) -> dict[str, Any]:
    """Measured and predicted round latency, prediction error, overhead, regime and
    time-to-accuracy (wall clock) of one run."""
    rows = [r for r in _rows(folder / "metrics.csv") if r["scheme"] == scheme]
    rounds = [r for r in rows if r["round"] != "0" and r["measured_latency_s"]]
    pred = np.array([_num(r["predicted_latency_s"]) for r in rounds])
    meas = np.array([_num(r["measured_latency_s"]) for r in rounds])
    over = np.array([_num(r["overhead_s"]) for r in rounds])
    err = np.abs(pred - meas) / meas
    compute_share = []
    wc = folder / "wallclock.csv"
    if wc.exists():
        by_round: dict[str, list[dict[str, str]]] = {}
        for r in _rows(wc):
            if r["delivered"] == "1":
                by_round.setdefault(r["round"], []).append(r)
        for items in by_round.values():
            slow = max(items, key=lambda r: _num(r["compute_s"]) + _num(r["transfer_s"]))
            c, t = _num(slow["compute_s"]), _num(slow["transfer_s"])
            compute_share.append(c / (c + t) if c + t > 0 else math.nan)
    wall = np.cumsum(np.nan_to_num(meas))
    tta = None
    if target is not None:
        for r, w in zip(rounds, wall, strict=True):
            if r["metric"] and _num(r["metric"]) >= target:
                tta = float(w)
                break
    best = max((_num(r["metric"]) for r in rows if r["metric"]), default=math.nan)
    return {
        "rounds": len(rounds),
        "measured_mean_s": float(np.nanmean(meas)) if meas.size else math.nan,
        "measured_median_s": float(np.nanmedian(meas)) if meas.size else math.nan,
        "predicted_mean_s": float(np.nanmean(pred)) if pred.size else math.nan,
        "prediction_error_median": float(np.nanmedian(err)) if err.size else math.nan,
        "overhead_mean_s": float(np.nanmean(over)) if over.size else math.nan,
        "overhead_share_median": float(np.nanmedian(over / meas)) if over.size else math.nan,
        "compute_share_of_critical_device": float(np.nanmedian(compute_share))
        if compute_share
        else math.nan,
        "best_metric": best,
        "time_to_target_s": tta,
    }


def summarize(out: Path, schemes: Sequence[str], target: float | None = None) -> dict[str, Any]:
    """Compare the schemes' runs under ``out`` (``summary.json``, ``summary.csv``,
    ``summary.png``). ``target``: the metric for time-to-accuracy; default the lowest of
    the schemes' best metrics (so every scheme reaches it)."""
    import csv

    firsts = {s: scheme_summary(out / s, s, None) for s in schemes}
    if target is None:
        bests = [v["best_metric"] for v in firsts.values() if math.isfinite(v["best_metric"])]
        target = min(bests) if bests else None
    per = {s: scheme_summary(out / s, s, target) for s in schemes}
    by_measured = sorted(schemes, key=lambda s: per[s]["measured_mean_s"])
    by_predicted = sorted(schemes, key=lambda s: per[s]["predicted_mean_s"])
    summary = {
        "schemes": per,
        "target_metric": target,
        "order_by_measured": by_measured,
        "order_by_predicted": by_predicted,
        "orders_agree": by_measured == by_predicted,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    keys = list(next(iter(per.values())).keys()) if per else []
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["scheme", *keys])
        for s in schemes:
            w.writerow([s, *(per[s][k] for k in keys)])
    _plot_summary(out / "summary.png", per)
    return summary


def _plot_summary(path: Path, per: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    ax.bar(x - 0.2, [per[s]["predicted_mean_s"] for s in names], 0.4, label="predicted")
    ax.bar(x + 0.2, [per[s]["measured_mean_s"] for s in names], 0.4, label="measured")
    ax.set_xticks(x, names)
    ax.set_ylabel("mean round latency (s)")
    ax.set_title("testbed: predicted vs measured round latency", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=130)
    plt.close(fig)


__all__ = [
    "EDGE_ENV",
    "EdgeControl",
    "EdgeDraw",
    "TestbedFederation",
    "draw_edge",
    "run_scheme",
    "run_testbed",
    "summarize",
]
