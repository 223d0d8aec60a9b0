"""DEFT on real Flower runtimes, end to end on loopback (issue 6), with a tiny model.

1. virtual devices on Flower's simulation runtime (Ray): two rounds give the in-process
   engine's metrics and weights;
2. deployment runtime (SuperLink + SuperNodes): two rounds write ``loladeft train``'s files
   with the in-process metrics and weights;
3. a SuperNode killed mid-run: its block is reassigned, the run finishes;
4. TLS + SuperNode authentication: the run works, an unregistered node is refused.
Every process started is stopped, also when a test fails (``LocalFederation`` exits).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("flwr")
pytest.importorskip("ray")

from helpers.tiny import tiny_config  # noqa: E402
from loladeft.training.checkpoint import load_weights  # noqa: E402
from loladeft.training.run import read_metrics, train  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.flower, pytest.mark.slow]

K = 3  # = L of the tiny model


def _cfg(tiny: dict[str, str], **kw: object) -> Any:
    return tiny_config(
        tiny, **{"rounds": 2, "num_devices": K, "lora_dropout": 0.1, "eval_every": 1, **kw}
    )


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> tuple[list[dict[str, str]], dict]:
    """The in-process run the Flower runs must reproduce."""
    out = tmp_path_factory.mktemp("inproc") / "run"
    trainer = train(_cfg(tiny), out)
    return read_metrics(out / "metrics.csv"), trainer.weights()


def _assert_same_rows(rows: list[dict[str, str]], ref: list[dict[str, str]]) -> None:
    assert [r["round"] for r in rows] == [r["round"] for r in ref]
    for r, q in zip(rows, ref, strict=True):
        assert r["scheme"] == q["scheme"] and r["feasible"] == q["feasible"]
        for col in ("sim_time_s", "round_latency_s", "train_loss", "metric"):
            if q[col] == "":
                assert r[col] == ""
            else:
                assert math.isclose(float(r[col]), float(q[col]), rel_tol=1e-5, abs_tol=1e-9)


def test_virtual_runtime_reproduces_the_in_process_engine(tiny, reference, tmp_path):
    from loladeft.runtime.virtual import run_virtual

    ref_rows, ref_weights = reference
    trainer = run_virtual(_cfg(tiny), tmp_path / "sim")
    _assert_same_rows(read_metrics(tmp_path / "sim" / "metrics.csv"), ref_rows)
    weights = trainer.weights()
    assert weights.keys() == ref_weights.keys()
    for name, w in weights.items():
        torch.testing.assert_close(w, ref_weights[name], rtol=1e-5, atol=1e-7)
    manifest = json.loads((tmp_path / "sim" / "manifest.json").read_text())
    assert manifest["finished"] and manifest["runtime"]["engine"] == "flower-virtual"
    # a warm-up query per node and two join queries (messaging latency, state), then per
    # round: K queries and L = K trains
    assert manifest["runtime"]["messages"] == 3 * K + 2 * (K + K)


# ---------------------------------------------------------------- deployment runtime
def _deploy(cfg, out, spec, watch=None, **options):
    from loladeft.runtime.deployment import deploy

    settings = {"runtime.timeout": 240, **{f"runtime.{k}": v for k, v in options.items()}}
    return deploy(cfg.updated(settings), out, spec=spec, watch=watch)


def _assert_cleaned(marker: str) -> None:
    from loladeft.runtime.federation import MARKER_ENV
    from loladeft.runtime.processes import pids_with_env

    assert pids_with_env(MARKER_ENV, marker) == []


def test_deployment_runtime_reproduces_the_in_process_engine(tiny, reference, tmp_path):
    from loladeft.runtime.federation import FederationSpec

    seen: dict[str, str] = {}
    outcome = _deploy(
        _cfg(tiny),
        tmp_path / "dep",
        FederationSpec(nodes=K, warm=True),
        watch=lambda fed: seen.setdefault("marker", fed.marker),
    )
    assert outcome.ok
    ref_rows, ref_weights = reference
    _assert_same_rows(read_metrics(tmp_path / "dep" / "metrics.csv"), ref_rows)
    weights = load_weights(tmp_path / "dep" / "checkpoint.json")
    assert weights.keys() == ref_weights.keys()
    for name, w in weights.items():
        torch.testing.assert_close(w, ref_weights[name], rtol=1e-5, atol=1e-7)
    manifest = json.loads((tmp_path / "dep" / "manifest.json").read_text())
    assert manifest["finished"] and manifest["command"] == "loladeft flower local"
    assert not any(manifest["runtime"]["faults"].values())
    for name in ("adapter", "metric_vs_time.png", "checkpoint.json", "flower-logs/run.log"):
        assert (tmp_path / "dep" / name).exists()
    _assert_cleaned(seen["marker"])


def test_killed_supernode_block_is_reassigned_and_run_finishes(tiny, tmp_path):
    """Node ``victim`` is frozen the moment it has reported its state in round 2 (SIGSTOP
    to its process group, from a thread tailing its log), then killed: it is scheduled and
    never answers, so the server reassigns its block to the spare device."""
    import os
    import signal
    import threading
    import time

    from loladeft.runtime.federation import FederationSpec
    from loladeft.training.engine import Trainer

    cfg = _cfg(tiny, num_devices=K + 1, rounds=3)
    local = Trainer(cfg).setup()
    plan = local.clock.schedule(2, cfg.train.scheme, local.device_states(2))
    victim = int(plan.assignment[0])
    state: dict = {"killed": False}

    def hunt(fed) -> None:
        log = fed.node_log(victim)
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace").split("ROUND 2]", 1)
            after = text[1].split("Sending: query", 1) if len(text) == 2 else []
            if len(after) == 2 and "Sent successfully" in after[1]:
                os.killpg(fed.node_pids[victim], signal.SIGSTOP)  # cannot answer any more
                fed.kill_node(victim)
                state["killed"] = True
                return
            time.sleep(0.002)

    def watch(fed) -> None:
        if "hunter" not in state:
            state["marker"] = fed.marker
            state["hunter"] = threading.Thread(target=hunt, args=(fed,), daemon=True)
            state["hunter"].start()

    _deploy(
        cfg,
        tmp_path / "kill",
        FederationSpec(nodes=K + 1, warm=True),
        watch=watch,
        round_timeout=4.0,
        query_timeout=3.0,
    )
    assert state["killed"]
    rows = read_metrics(tmp_path / "kill" / "metrics.csv")
    assert [r["round"] for r in rows] == ["0", "1", "2", "3"]
    assert all(r["feasible"] == "1" and r["train_loss"] for r in rows[1:])
    faults = json.loads((tmp_path / "kill" / "manifest.json").read_text())["runtime"]["faults"]
    assert faults["reassigned"] >= 1 and faults["timeouts"] + faults["errors"] >= 1
    assert faults["skipped_blocks"] == 0
    log = (tmp_path / "kill" / "flower-logs" / "run.log").read_text()
    assert f"round 2: device {victim} failed block 1" in log
    assert f"round 3: devices [{victim}] unavailable" in log
    _assert_cleaned(state["marker"])


def test_tls_and_supernode_authentication(tiny, tmp_path):
    from loladeft.runtime.federation import FederationSpec

    seen: dict = {}

    def watch(fed):
        if "intruder" not in seen:  # a node whose key was never registered
            seen["intruder"] = fed.add_node(
                {"partition-id": 0, "num-partitions": K}, register=False, wait=False
            )
            seen["fed"] = fed
            seen["config"] = (fed.home / "config.toml").read_text()

    outcome = _deploy(
        _cfg(tiny, rounds=1),
        tmp_path / "tls",
        FederationSpec(nodes=K, tls=True, auth=True, warm=True),
        watch=watch,
    )
    assert outcome.ok
    fed = seen["fed"]
    assert "root-certificates" in seen["config"] and "insecure" not in seen["config"]
    assert "No SuperNode found with the given public key" in fed.superlink_log.read_text()
    assert "SuperNode ID" not in fed.node_log(seen["intruder"]).read_text()
    rows = read_metrics(tmp_path / "tls" / "metrics.csv")
    assert [r["round"] for r in rows] == ["0", "1"]
