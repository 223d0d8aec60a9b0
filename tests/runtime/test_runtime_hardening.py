"""One node can never stop a Flower run (issue 14, item 2), over the in-memory Grid.

1. every field of a ``query`` reply is validated: a missing ``state`` record, a NaN, zero or
   infinite compute factor or memory, a wrong type make that node unavailable for the round;
2. any failure of reading one ``train`` reply (an infinite round number, a deeply nested
   layout, a bad ``seconds``...) is that node's failure: its block is reassigned;
3. a reply's sizes are checked against the expected layout before its array is copied;
4. a device belongs to the first node that claims it: a node claiming another device's slot
   is rejected and logged, the honest node keeps it;
5. the latency patches apply on flwr 1.42.x only; on any other version a node and the
   server still work with stock Flower;
6. ``flower local`` is secure by default (TLS + SuperNode authentication, ``--insecure``);
7. a hypothesis fuzz test: crafted query and train replies never stop the server.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers.flower_fakes import FakeGrid  # noqa: E402
from helpers.tiny import tiny_config  # noqa: E402
from loladeft.runtime import flower_patches, protocol  # noqa: E402
from loladeft.runtime.server import FlowerTrainer  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.flower]

K = 5
NAN, INF = math.nan, math.inf


def _cfg(tiny, **kw):
    return tiny_config(
        tiny, **{"rounds": 3, "num_devices": K, "lora_dropout": 0.1, "eval_every": 1, **kw}
    )


def _flower(cfg, grid):
    logs: list[str] = []
    cfg = cfg.updated(
        {"runtime.round_timeout": 0.3, "runtime.query_timeout": 0.3, "runtime.node_wait": 1}
    )
    return FlowerTrainer(cfg, grid, log=logs.append).setup(), logs


def _is(message, kind: str, round_index: int | None = None) -> bool:
    if message.metadata.message_type != kind:
        return False
    return round_index is None or message.content["deft"]["round"] == round_index


# -- 1. query replies ------------------------------------------------------------------------
def _state(key, value):
    def change(reply):
        reply.content["state"][key] = value
        return reply

    return change


def _drop_state(reply):
    del reply.content["state"]
    return reply


BAD_STATES = {
    "no state record": _drop_state,
    "compute-factor nan": _state("compute-factor", NAN),
    "compute-factor zero": _state("compute-factor", 0.0),
    "compute-factor inf": _state("compute-factor", INF),
    "compute-factor text": _state("compute-factor", "fast"),
    "compute-factor bool": _state("compute-factor", True),
    "memory nan": _state("memory-bytes", NAN),
    "memory inf": _state("memory-bytes", INF),
    "memory negative": _state("memory-bytes", -1.0),
    "memory bytes": _state("memory-bytes", b"\x00"),
    "partition float": _state("partition-id", 1.0),
    "partition out of range": _state("partition-id", K),
    "partition huge": _state("partition-id", 2**70),
    "partition list": _state("partition-id", [1, 2]),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_invalid_state_makes_only_that_node_unavailable(tiny, case):
    victim = 2

    def tamper(k, message, reply):
        if k == victim and _is(message, "query", 1):
            return BAD_STATES[case](reply)
        return reply

    flower, logs = _flower(_cfg(tiny, rounds=1), FakeGrid(K, tamper))
    rec = flower.step()  # before the fix: KeyError / ValueError / a NaN schedule escaped
    assert sorted(flower.nodes) == [k for k in range(K) if k != victim]
    assert any(f"round 1: node {100 + victim}: state rejected" in line for line in logs), logs
    assert any(f"devices [{victim}] unavailable" in line for line in logs)
    assert rec.feasible and math.isfinite(rec.train_loss)


def test_read_state_names_the_field():
    ok = RecordDict({"state": ConfigRecord({"partition-id": 1, "compute-factor": 0.5})})
    ok["state"]["memory-bytes"] = 2e9
    assert protocol.read_state(ok, K) == (1, 0.5, 2e9)
    ok["state"]["compute-factor"] = 0.0
    with pytest.raises(protocol.InvalidReply, match=r"^compute-factor: 0\.0 is not a finite"):
        protocol.read_state(ok, K)
    with pytest.raises(protocol.InvalidReply, match=r"^state: missing"):
        protocol.read_state(RecordDict(), K)


# -- 2. train replies ------------------------------------------------------------------------
def _result(key, value):
    """Replace a ``result`` field by any value (a ConfigRecord holds any type)."""

    def change(reply):
        fields = dict(reply.content["result"])
        fields[key] = value
        reply.content["result"] = ConfigRecord(fields)
        return reply

    return change


def _layout(key, value):
    def change(reply):
        reply.content["gradient-layout"][key] = value
        return reply

    return change


def _drop(name):
    def change(reply):
        del reply.content[name]
        return reply

    return change


def _swap_result(reply):
    reply.content["result"] = ArrayRecord({"round": Array(np.zeros(1))})
    return reply


DEEP = "[" * 100_000 + "]" * 100_000

BAD_TRAINS = {
    "round inf": (_result("round", INF), "round: must be an integer"),
    "round huge": (_result("round", 2**70), "(round, depth, device)"),
    "depth text": (_result("depth", "2"), "depth: must be an integer"),
    "loss nan": (_result("loss", NAN), "loss: nan is not a finite"),
    "seconds text": (_result("seconds", "abc"), "seconds: must be a number"),
    "seconds nan": (_result("seconds", NAN), "seconds: nan"),
    "seconds negative": (_result("seconds", -1.0), "seconds: -1.0"),
    "seconds missing": (_drop("result"), "result: missing"),
    "deep layout": (_layout("shapes", DEEP), "layout"),
    "shapes not json": (_layout("shapes", "{"), "layout"),
    "shapes of floats": (_layout("shapes", "[[2.5]]"), "layout"),
    "names not strings": (_layout("names", [1, 2]), "layout"),
    "no layout": (_drop("gradient-layout"), "gradient: missing"),
    "no gradient": (_drop("gradient"), "gradient: missing"),
    "result of another type": (_swap_result, "round: must be an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINS))
def test_any_failure_reading_a_train_reply_is_that_nodes_failure(tiny, case):
    change, words = BAD_TRAINS[case]
    depth = 2
    hit: dict[str, int] = {}

    def tamper(k, message, reply):
        if _is(message, "train") and message.content["deft"]["depth"] == depth and not hit:
            hit["device"] = k
            return change(reply)
        return reply

    flower, logs = _flower(_cfg(tiny, rounds=1), FakeGrid(K, tamper))
    rec = flower.step()  # before the fix: OverflowError, RecursionError, ValueError escaped
    bad = hit["device"]
    assert flower.faults["invalid"] == 1 and flower.faults["reassigned"] == 1, logs
    failed = [line for line in logs if f"device {bad} failed block {depth}" in line]
    assert len(failed) == 1 and words in failed[0], logs
    assert rec.feasible and math.isfinite(rec.train_loss)


# -- 3. sizes before copies ------------------------------------------------------------------
def _gradient_reply(grads):
    content = RecordDict()
    protocol.put(content, "gradient", grads)
    return content


@pytest.fixture
def copies(monkeypatch):
    """Every deserialization of an ``Array`` (the first copy of a reply's data)."""
    seen: list[tuple] = []
    original = Array.numpy

    def spy(self):
        seen.append(tuple(self.shape))
        return original(self)

    monkeypatch.setattr(Array, "numpy", spy)
    return seen


def test_sizes_are_checked_before_the_array_is_copied(copies):
    expected = {"w": ((2, 3), "float32"), "b": ((3,), "float32")}
    grads = {"w": torch.ones(2, 3), "b": torch.zeros(3)}
    good = _gradient_reply(grads)
    arrays = protocol.get(good, "gradient", expected)
    assert arrays["w"].tolist() == [[1.0] * 3] * 2 and copies == [(9,)]
    copies.clear()
    # a flat array far larger than the layout, and one whose bytes exceed its declared shape
    big = _gradient_reply(grads)
    big["gradient"] = ArrayRecord({"flat": Array(np.zeros(10**6, np.float32))})
    stuffed = _gradient_reply(grads)
    data = stuffed["gradient"]["flat"].data + b"\0" * 10**6
    stuffed["gradient"] = ArrayRecord(
        {"flat": Array(dtype="float32", shape=(9,), stype="numpy.ndarray", data=data)}
    )
    wrong_shape = _gradient_reply({"w": torch.ones(3, 2), "b": torch.zeros(3)})
    extra = _gradient_reply({**grads, "x": torch.zeros(1)})
    for content, words in [
        (big, r"9 values for a flat array of shape \(1000000,\)"),
        (stuffed, "bytes for 9 values"),
        (wrong_shape, r"w has shape \(3, 2\), expected \(2, 3\)"),
        (extra, "unexpected x"),
    ]:
        with pytest.raises(protocol.InvalidReply, match=words):
            protocol.get(content, "gradient", expected)
    assert copies == []  # rejected from the metadata alone


# -- 4. device identity ----------------------------------------------------------------------
def test_node_claiming_another_devices_slot_is_rejected(tiny):
    """Node 100 (device 0) claims device 1 in round 1; before the fix it came first in the
    node list and took device 1, pushing the honest node 101 out."""

    def tamper(k, message, reply):
        if k == 0 and _is(message, "query", 1):
            reply.content["state"]["partition-id"] = 1
        return reply

    grid = FakeGrid(K, tamper)
    flower, logs = _flower(_cfg(tiny, rounds=1), grid)
    flower.step()
    assert flower.nodes[1] == 101 and 0 not in flower.nodes
    assert any(
        "node 100: state rejected (partition-id: device 1 belongs to node 101)" in x for x in logs
    )
    assert flower.faults["invalid"] == 0  # device 1's block went to the honest node


def test_late_node_cannot_take_a_joined_devices_slot(tiny):
    grid = FakeGrid(K)
    intruder = 999  # joins with a node config naming device 2, after node 102 claimed it
    grid.contexts[intruder] = Context(
        run_id=1,
        node_id=intruder,
        node_config={"partition-id": 2, "num-partitions": K},
        state=RecordDict(),
        run_config={},
    )
    flower, logs = _flower(_cfg(tiny, rounds=1), grid)
    assert flower.owners == {k: 100 + k for k in range(K)}
    assert any(
        "warm-up: node 999 rejected (partition-id: device 2 belongs to node 102)" in x for x in logs
    )
    flower.step()
    assert flower.nodes[2] == 102
    assert any("node 999: state rejected" in line for line in logs)


# -- 5. the patches' version gate -----------------------------------------------------------
def test_patches_apply_only_on_the_flower_version_they_were_written_for(tiny, monkeypatch):
    from flwr.supercore.inflatable import inflatable_utils as u
    from flwr.supernode import start_client_internal as sci

    from loladeft.runtime import supernode

    assert flower_patches.flower_version().startswith(flower_patches.WRITTEN_FOR + ".")
    for fn in (u.pull_objects, u.pull_and_inflate_object_from_tree):
        monkeypatch.setattr(fn, "__kwdefaults__", dict(fn.__kwdefaults__))
    monkeypatch.setattr(sci, "time", sci.time)
    stock = dict(u.pull_objects.__kwdefaults__)

    # another Flower version: nothing patched, one line said, a node and the server still work
    monkeypatch.setattr(flower_patches, "flower_version", lambda: "1.43.0")
    monkeypatch.setattr(flower_patches, "_announced", False)
    lines: list[str] = []
    assert flower_patches.apply_server(5.0, log=lines.append) is False
    assert flower_patches.apply_server(5.0, log=lines.append) is False
    assert lines == [
        "stock Flower, loladeft's latency patches are off (flwr 1.43.0 is installed, not 1.42.x)"
    ]
    assert not supernode.patch(0.05) and sci.time.__name__ == "time"
    assert u.pull_objects.__kwdefaults__ == stock
    execs: list[list[str]] = []
    monkeypatch.setattr(supernode.os, "execv", lambda exe, argv: execs.append(argv))
    monkeypatch.setattr(supernode.sys, "argv", ["x", "--loladeft-warm", "--insecure"])
    supernode.main()  # replaced by the stock flower-supernode, without the warm executor
    assert execs and execs[0][0].endswith("flower-supernode") and execs[0][1:] == ["--insecure"]
    flower, _ = _flower(_cfg(tiny, rounds=1), FakeGrid(K))
    assert flower.step().feasible and not any(flower.faults.values())
    assert u.pull_objects.__kwdefaults__ == stock

    # 1.42.x: applied
    monkeypatch.setattr(flower_patches, "flower_version", lambda: "1.42.3")
    assert flower_patches.apply_server(5.0) is True
    assert u.pull_objects.__kwdefaults__["max_time"] == 5.0
    assert u.pull_objects.__kwdefaults__["initial_backoff"] == flower_patches.PULL_BACKOFF[0]
    assert supernode.patch(0.05) and isinstance(sci.time, flower_patches._SuperNodeTime)
    monkeypatch.setenv(flower_patches.ENV, "0")  # the switch the benchmark uses
    assert flower_patches.why_stock() == f"{flower_patches.ENV}=0"


# -- 6. secure by default --------------------------------------------------------------------
def test_flower_local_is_secure_by_default(tiny, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from loladeft.cli import flower as cli_flower
    from loladeft.cli.app import app
    from loladeft.runtime.federation import FederationSpec

    spec = FederationSpec(nodes=2)
    assert spec.tls and spec.auth
    assert not FederationSpec(nodes=2, tls=False).auth
    calls: list[dict] = []

    def run_local(cfg, out, **kw):
        calls.append({"tls": not cfg.runtime.insecure, "auth": not cfg.runtime.insecure})
        return SimpleNamespace(run_id=1, status="finished:completed", seconds=0.0)

    monkeypatch.setattr(cli_flower, "run_local", run_local)
    argv = ["flower", "local", "--task", "sst2", "--nodes", str(K), "--data-dir", tiny["data_dir"]]
    argv += ["--model", tiny["model"], "--profile", tiny["profile"]]
    for extra, secure in [([], True), (["--insecure"], False)]:
        out = ["--out", str(tmp_path / f"out-{secure}")]
        result = CliRunner().invoke(app, [*argv, *out, *extra])
        assert result.exit_code == 0, result.output
        assert calls[-1]["tls"] is secure and calls[-1]["auth"] is secure


# -- 7. fuzz ---------------------------------------------------------------------------------
ANY = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.lists(st.integers(-3, 3), min_size=1, max_size=3),
    st.just(DEEP),
)
NOT_REAL = st.one_of(
    st.sampled_from([NAN, INF, -INF]), st.text(max_size=5), st.booleans(), st.binary(max_size=4)
)


@st.composite
def bad_states(draw):
    """A ``query`` reply change that no valid reply makes."""
    kind = draw(st.sampled_from(["drop", "delete", "wrong", "error", "claim"]))
    key = draw(st.sampled_from(["partition-id", "compute-factor", "memory-bytes"]))
    if kind == "wrong":
        value = draw(
            {
                "partition-id": st.one_of(
                    NOT_REAL, st.integers(K, 2**80), st.integers(max_value=-1), st.floats()
                ),
                "compute-factor": st.one_of(
                    NOT_REAL, st.floats(max_value=0), st.floats(min_value=1.01e6)
                ),
                "memory-bytes": st.one_of(NOT_REAL, st.floats(max_value=-1e-300)),
            }[key]
        )
        return kind, key, value
    return kind, key, draw(st.integers(0, K - 1))


@st.composite
def bad_trains(draw):
    """A ``train`` reply change that no valid reply makes."""
    kind = draw(st.sampled_from(["drop", "result", "layout", "flat", "error"]))
    if kind == "drop":
        return kind, draw(st.sampled_from(["result", "gradient", "gradient-layout"])), None
    if kind == "result":
        key = draw(st.sampled_from(["round", "depth", "partition-id", "loss", "seconds"]))
        if key in ("loss", "seconds"):
            bad = NOT_REAL if key == "loss" else st.one_of(NOT_REAL, st.floats(max_value=-1e-9))
            return kind, key, draw(bad)
        return kind, key, draw(ANY)  # a valid int is made wrong by tamper (+1)
    if kind == "layout":
        key = draw(st.sampled_from(["names", "shapes"]))
        return kind, key, draw(ANY)
    if kind == "flat":
        shape = draw(st.lists(st.integers(0, 40), min_size=1, max_size=2))
        dtype = draw(st.sampled_from(["float32", "float64", "int32", "uint8"]))
        return kind, None, np.ones(shape, dtype=dtype)
    return kind, None, None


@pytest.fixture(scope="module")
def fuzz_server(tiny):
    grid = FakeGrid(K)
    flower, logs = _flower(_cfg(tiny, rounds=1000, eval_every=1000), grid)
    return flower, logs, grid


def _apply_state_change(change, k, message, reply):
    kind, key, value = change
    if kind == "error":
        return Message(Error(code=0, reason="crafted"), reply_to=message)
    state = reply.content["state"]
    if kind == "drop":
        del reply.content["state"]
    elif kind == "delete":
        del state[key]
    elif kind == "claim":
        state["partition-id"] = value if value != k else (k + 1) % K
    else:
        state[key] = value
    return reply


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(victim=st.integers(0, K - 1), change=bad_states())
def test_fuzz_query_replies_never_stop_the_server(fuzz_server, victim, change):
    flower, logs, grid = fuzz_server
    n = flower.round + 1

    def tamper(k, message, reply):
        if k == victim and _is(message, "query", n):
            return _apply_state_change(change, k, message, reply)
        return reply

    grid.tamper = tamper
    del logs[:]
    rec = flower.step()
    assert flower.round == n
    assert sorted(flower.nodes) == [k for k in range(K) if k != victim], (change, logs)
    assert any(f"round {n}: node {100 + victim}" in line for line in logs), (change, logs)
    assert flower.owners == {k: 100 + k for k in range(K)}  # the slots stay with their nodes
    assert rec.feasible and math.isfinite(rec.train_loss)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(depth=st.integers(1, 3), change=bad_trains())
def test_fuzz_train_replies_never_stop_the_server(fuzz_server, depth, change):
    flower, logs, grid = fuzz_server
    n = flower.round + 1
    kind, key, value = change
    hit: dict[str, int] = {}

    def tamper(k, message, reply):
        if hit or not (_is(message, "train", n) and message.content["deft"]["depth"] == depth):
            return reply
        hit["device"] = k
        if kind == "error":
            return Message(Error(code=0, reason="crafted"), reply_to=message)
        if kind == "drop":
            del reply.content[key]
        elif kind == "result":
            fields = dict(reply.content["result"])
            v = value
            if type(v) is int and v == fields[key]:
                v += 1
            fields[key] = v
            reply.content["result"] = ConfigRecord(fields)
        elif kind == "layout":
            reply.content["gradient-layout"][key] = value
        else:
            reply.content["gradient"] = ArrayRecord({"flat": Array(value)})
        return reply

    grid.tamper = tamper
    del logs[:]
    before = dict(flower.faults)
    rec = flower.step()
    assert flower.round == n and hit, logs
    failed = [line for line in logs if f"device {hit['device']} failed block {depth}" in line]
    assert len(failed) == 1, (change, logs)
    assert flower.faults["reassigned"] + flower.faults["skipped_blocks"] == (
        before["reassigned"] + before["skipped_blocks"] + 1
    )
    assert any(
        f"block {depth} reassigned to device" in line or f"no device left for block {depth}" in line
        for line in logs
    )
    assert rec.feasible and math.isfinite(rec.train_loss)


def test_warm_executor_survives_a_rejected_heartbeat(monkeypatch):
    """Flower's task heartbeat raises SIGINT in its process when the SuperNode rejects it
    (a late heartbeat whose task token is already retired): that killed the warm executor,
    and its node for the rest of the run. loladeft's heartbeat ignores it."""
    import signal
    from types import SimpleNamespace

    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)

    class Rejecting:
        def SendTaskHeartbeat(self, _req):
            return SimpleNamespace(success=False)

    class Failing:
        def SendTaskHeartbeat(self, _req):
            raise RuntimeError("Runtime task-token authentication failed")

    from flwr.supercore.heartbeat import make_task_heartbeat_fn_http

    make_task_heartbeat_fn_http(Rejecting())()  # Flower's own: the process gets SIGINT
    assert raised == [signal.SIGINT]
    raised.clear()
    for client in (Rejecting(), Failing()):
        assert flower_patches._task_heartbeat(client)() is True
    assert raised == []
