"""DEFT on the emulated edge, end to end (Linux, root): a 3-node testbed run of 2 rounds with
measured devices that reads back the tc rates and cgroup limits it set, fills the wall-clock
columns, and leaves nothing behind."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest

from helpers.testbed import LINUX
from loladeft.testbed import shaping

pytestmark = [*LINUX, pytest.mark.torch]


def _objects(run_id: str) -> list[str]:
    tag = f"lolatb-{run_id}-"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = [ln.split()[0] for ln in netns.splitlines() if ln.startswith(tag)]
    found += [ln.split(":")[1].strip() for ln in links.splitlines() if tag in ln]
    found += [str(p) for c in ("cpu", "memory") for p in Path("/sys/fs/cgroup", c).glob(f"{tag}*")]
    found += [str(p) for p in Path("/run/lolatb").glob(f"{run_id}.json")]
    return found


def test_three_node_testbed_run_reads_back_its_limits_and_leaves_nothing(tiny, tmp_path):
    pytest.importorskip("flwr")
    from loladeft.config import load_config
    from loladeft.runtime.testbed_federation import run_testbed

    cfg = load_config(
        None,
        {
            "train.task": "sst2",
            "train.model": tiny["model"],
            "train.data_dir": tiny["data_dir"],
            "scenario.profile": tiny["profile"],
            "scenario.num_devices": 3,
            "train.rounds": 2,
            "train.eval_every": 2,
            "train.batch": 16,
            "train.max_eval_samples": 20,
            "runtime.probe_bytes": 200_000,
        },
        command="testbed",
    )
    out = tmp_path / "tb"
    lines: list[str] = []
    summary = run_testbed(cfg, out, ["jbba"], log=lines.append)

    manifest = json.loads((out / "jbba" / "manifest.json").read_text())
    tb = manifest["testbed"]
    run_id = tb["run_id"]
    # CPU quotas: proportional to the drawn compute factors, read back from the cgroups
    cores = tb["edge"]["cpu_cores"]
    assert sum(cores) == pytest.approx(cfg.testbed.cpu_budget)
    assert tb["cpu_cores_read_back"] == pytest.approx(cores, abs=1e-5)
    # memory limits the server set after the warm-up, read back by the launcher
    server = manifest["wallclock"]["testbed"]
    assert tb["memory_limit_read_back"] == server["memory_limit_bytes"]
    assert all(lim > 0 for lim in server["memory_limit_bytes"])
    # the last round's shaped uplinks: the tbf rate in force is the wire rate of the goodput
    # the server set (whole bytes per second)
    want = [8 * round(shaping.wire_rate(g) / 8) for g in server["goodput_bps"]]
    assert tb["wire_rate_read_back"] == pytest.approx(want, abs=8)
    # measured devices: a self-profile per node, the wall-clock columns filled
    wc = manifest["wallclock"]
    assert wc["device_model"] == "measured" and len(wc["measured_J_s"]) == 3
    rows = list(csv.DictReader((out / "jbba" / "metrics.csv").open()))
    for r in rows[1:]:
        pred, meas = float(r["predicted_latency_s"]), float(r["measured_latency_s"])
        assert pred > 0 and meas > 0 and math.isfinite(float(r["overhead_s"]))
    assert (out / "jbba" / "wallclock.csv").exists()
    assert summary["schemes"]["jbba"]["rounds"] == 2
    assert (out / "summary.json").exists()
    # nothing left behind: namespaces, veths, cgroups, the run record
    assert _objects(run_id) == []
