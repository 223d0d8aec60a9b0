"""Tests of the emulated edge on this Linux machine: namespaces, veths, tc shaping, cgroup v1
limits, teardown on every kind of exit, and link estimation over a shaped link.

Everything runs as root on private addresses inside namespaces the tests create; every object
carries the ``lolatb-<rid>`` prefix and each test checks that none is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.testbed import LINUX
from loladeft.testbed import (
    DeviceSpec,
    LinkEstimator,
    Testbed,
    cleanup,
    find_leftovers,
    receive_probe,
    shaping,
)

pytestmark = LINUX

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}


def _objects(run_id: str) -> dict[str, list[str]]:
    """Every namespace, root-side link and cgroup named after ``run_id``, read straight from
    the system (not through the testbed's own listing)."""
    tag = f"lolatb-{run_id}-"
    links = json.loads(
        subprocess.run(
            ["ip", "-j", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
    )
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return {
        "netns": [line.split()[0] for line in netns.splitlines() if line.startswith(tag)],
        "link": [x["ifname"] for x in links if x["ifname"].startswith(tag)],
        "cgroup": [
            f"{c}/{p.name}"
            for c in ("cpu", "memory")
            for p in Path("/sys/fs/cgroup", c).glob(f"{tag}*")
        ],
        "record": [p.name for p in Path("/run/lolatb").glob(f"{run_id}.json")],
    }


def _nothing_left(run_id: str) -> None:
    assert _objects(run_id) == {"netns": [], "link": [], "cgroup": [], "record": []}


def _tc_rate(namespace: str, dev: str) -> int:
    """tbf rate of a device's egress in bit/s, parsed from ``tc -j`` here (bytes/s there)."""
    out = subprocess.run(
        ["tc", "-n", namespace, "-j", "qdisc", "show", "dev", dev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tbf,) = [q for q in json.loads(out) if q["kind"] == "tbf"]
    return 8 * tbf["options"]["rate"]


def test_three_devices_read_back_and_leave_nothing():
    specs = [
        DeviceSpec(uplink_bps=8e6, cpu_cores=0.5, memory_bytes=256 * 2**20),
        DeviceSpec(uplink_bps=3e6, cpu_cores=0.3, memory_bytes=128 * 2**20),
        DeviceSpec(uplink_bps=1.25e6, cpu_cores=0.2, memory_bytes=100_000_000),
    ]
    with Testbed(specs) as tb:
        rid = tb.run_id
        objs = _objects(rid)
        assert sorted(objs["netns"]) == [f"lolatb-{rid}-{k}" for k in range(3)]
        assert sorted(objs["link"]) == [f"lolatb-{rid}-{k}" for k in range(3)]
        assert len(objs["cgroup"]) == 6
        for k, spec in enumerate(specs):
            name = f"lolatb-{rid}-{k}"
            # tc: the wire rate carrying the goodput, in whole bytes per second.
            expect = 8 * round(spec.uplink_bps * 1514 / 1448 / 8)
            assert _tc_rate(name, name + "d") == expect
            assert tb.wire_rate(k) == expect
            # cgroups, read from the files themselves.
            cpu = Path("/sys/fs/cgroup/cpu", name)
            assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == round(spec.cpu_cores * 1e5)
            mem = int(Path("/sys/fs/cgroup/memory", name, "memory.limit_in_bytes").read_text())
            assert mem == spec.memory_bytes // 4096 * 4096  # whole pages
            memsw = Path("/sys/fs/cgroup/memory", name, "memory.memsw.limit_in_bytes")
            if memsw.exists():
                assert int(memsw.read_text()) == mem
            assert tb.memory_limit(k) == mem
            assert tb.cpu_cores(k) == pytest.approx(spec.cpu_cores)
        # Next round's split: changed in place, read back.
        new = [2e6, 6e6, 0.5e6]
        assert tb.set_rates(new) == [8 * round(r * 1514 / 1448 / 8) for r in new]
        for k, rate in enumerate(new):
            name = f"lolatb-{rid}-{k}"
            assert _tc_rate(name, name + "d") == 8 * round(rate * 1514 / 1448 / 8)
        # None keeps a rate; a bad rate changes nothing.
        assert tb.set_rates([None, 1e6, None])[0] == tb.wire_rate(0)
        with pytest.raises(ValueError, match=r"uplink_bps\[2\]: rate_bps: must be in"):
            tb.set_rates([3e6, 3e6, 0.0])
        assert tb.wire_rate(0) == 8 * round(new[0] * 1514 / 1448 / 8)
        # A process started as device 1 runs in its cgroups and namespace, and reaches the
        # server address over its own veth.
        out = tb.popen(
            1,
            ["sh", "-c", "cat /proc/self/cgroup; ip -j route get " + tb.server_address],
            stdout=subprocess.PIPE,
            text=True,
        ).communicate()[0]
        assert f"cpu:/lolatb-{rid}-1" in out and f"memory:/lolatb-{rid}-1" in out
        route = json.loads(out[out.index("[") :])[0]
        assert route["dev"] == f"lolatb-{rid}-1d"
    _nothing_left(rid)


def test_memory_limit_kills_a_device_that_exceeds_it():
    with Testbed([DeviceSpec(uplink_bps=1e6, memory_bytes=64 * 2**20)]) as tb:
        proc = tb.popen(
            0,
            [sys.executable, "-c", "b = bytearray(256 * 2**20); print(len(b))"],
            stdout=subprocess.PIPE,
        )
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL and out == b""
        assert tb.oom_kills(0) >= 1
        rid = tb.run_id
    _nothing_left(rid)


def test_cpu_quota_binds():
    # A busy loop under a 0.1-core quota gets at most ~0.1 s of CPU per wall second.
    with Testbed([DeviceSpec(uplink_bps=1e6, cpu_cores=0.1)]) as tb:
        code = (
            "import time, os\n"
            "t = time.monotonic()\n"
            "while time.monotonic() - t < 1.0: pass\n"
            "print(os.times().user + os.times().system)"
        )
        proc = tb.popen(0, [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        cpu = float(proc.communicate(timeout=30)[0])
        rid = tb.run_id
    assert cpu <= 0.1 * 1.0 * 1.5 + 0.05
    _nothing_left(rid)


def _probe(tb: Testbed, k: int, nbytes: int):
    with socket.create_server((tb.server_address, 0)) as srv:
        port = srv.getsockname()[1]
        code = (
            "import socket, sys; from loladeft.testbed.link import send_probe\n"
            f"s = socket.create_connection(('{tb.server_address}', {port}))\n"
            f"send_probe(s, {nbytes}); s.close()"
        )
        proc = tb.popen(k, [sys.executable, "-c", code], env=ENV)
        srv.settimeout(30)
        conn, addr = srv.accept()
        with conn:
            res = receive_probe(conn, timeout=30)
        assert proc.wait(30) == 0
    assert addr[0] == tb.subnet.device_address(k)
    return res


def test_link_estimate_of_a_shaped_link_within_15_percent():
    # 8 Mbit/s of goodput (the tbf runs at the matching wire rate), then 2 Mbit/s.
    bandwidth = 1e6  # Hz: the device's share; r = rate / B
    with Testbed([DeviceSpec(uplink_bps=8e6)]) as tb:
        est = LinkEstimator(alpha=1.0)
        res = _probe(tb, 0, 1_000_000)
        assert res.throughput_bps == pytest.approx(8e6, rel=0.15)
        assert est.observe(res.nbytes, res.seconds, bandwidth) == pytest.approx(8.0, rel=0.15)
        tb.set_rate(0, 2e6)
        res = _probe(tb, 0, 400_000)
        assert res.throughput_bps == pytest.approx(2e6, rel=0.15)
        assert est.observe(res.nbytes, res.seconds, bandwidth) == pytest.approx(2.0, rel=0.15)
        rid = tb.run_id
    _nothing_left(rid)


def test_raw_tbf_rate_is_the_wire_rate():
    # Shaping the frame rate to exactly 8 Mbit/s yields the TCP goodput 8e6 * 1448/1514.
    with Testbed([DeviceSpec(uplink_bps=1e6)]) as tb:
        link = tb.devices[0].link
        assert shaping.set_uplink_rate(link.namespace, link.device_if, 8e6) == 8e6
        res = _probe(tb, 0, 1_000_000)
        rid = tb.run_id
    assert res.throughput_bps == pytest.approx(8e6 * 1448 / 1514, rel=0.15)
    _nothing_left(rid)


_CHILD = """
import sys, time
from loladeft.testbed import DeviceSpec, Testbed
tb = Testbed([DeviceSpec(uplink_bps=2e6, cpu_cores=0.2, memory_bytes=2**28)] * 2)
tb.setup()
node = tb.popen(1, ["sleep", "120"])
print(tb.run_id, node.pid, flush=True)
if sys.argv[1] == "with":
    with tb:
        time.sleep(120)
time.sleep(120)
"""


def _start_child(mode: str) -> tuple[subprocess.Popen, str, int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode], env=ENV, stdout=subprocess.PIPE, text=True
    )
    line = child.stdout.readline().split()
    assert len(line) == 2, "the child did not set up its testbed"
    return child, line[0], int(line[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_cleanup_after_the_launcher_is_killed():
    child, rid, node = _start_child("plain")
    try:
        assert not [x for x in find_leftovers() if x.run_id == rid]  # owner alive: not listed
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        left = [x for x in find_leftovers() if x.run_id == rid]
        kinds = sorted(x.kind for x in left)
        assert kinds == ["cgroup", "cgroup", "link", "link", "netns", "netns", "record"]
        assert _pid_alive(node)  # the orphaned node still runs in its namespace
        removed = cleanup(run_id=rid)
        assert sorted(x.kind for x in removed) == kinds
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        cleanup(run_id=rid)
    deadline = time.monotonic() + 5
    while _pid_alive(node) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(node)
    _nothing_left(rid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_launcher_signal_tears_down(sig):
    child, rid, node = _start_child("with")
    try:
        child.send_signal(sig)
        child.wait(20)
        assert child.returncode != 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
            cleanup(run_id=rid)
    assert not _pid_alive(node)
    _nothing_left(rid)


def test_exception_inside_the_block_tears_down():
    with pytest.raises(RuntimeError, match="boom"), Testbed([DeviceSpec(1e6)] * 2) as tb:
        rid = tb.run_id
        raise RuntimeError("boom")
    _nothing_left(rid)


def test_bad_specs_fail_before_anything_is_created():
    before = {x.name for x in find_leftovers(include_live=True)}
    with pytest.raises(ValueError, match=r"cpu_cores: quotas sum to 2.4 cores, over 1.6"):
        Testbed([DeviceSpec(1e6, cpu_cores=0.8)] * 3)
    with pytest.raises(ValueError, match=r"rate_bps: must be in"):
        Testbed([DeviceSpec(1.0)])
    assert {x.name for x in find_leftovers(include_live=True)} == before


def test_demo_measures_the_rates_it_set():
    from loladeft.testbed.demo import run_demo

    before = set(find_leftovers(include_live=True))
    rows = run_demo(rates_bps=(4e6, 2e6, 1e6), cpu_cores=(0.5, 0.3, 0.2), nbytes=150_000)
    for row in rows:
        assert row["measured_bps"] == pytest.approx(row["set_bps"], rel=0.15)
        assert row["used_cores"] <= row["set_cores"] * 1.5 + 0.05  # a quota is a ceiling
    assert set(find_leftovers(include_live=True)) == before
