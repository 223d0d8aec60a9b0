"""The Flower runtime's server and node logic (issue 6), over an in-memory Grid.

1. honest nodes: a Flower round computes exactly what the in-process engine computes;
2. every invalid reply (non-finite, wrong shape, dtype, names, round, depth, a norm above the
   bound, a node error, no reply) is rejected, logged and its block reassigned to the best
   remaining device, whose gradient is then the one applied;
3. with no device left the block is skipped: its parameters stay, the others move;
4. virtual stragglers cost simulated time, never wall time;
5. reply validation and the runtime options, unit by unit.
The end-to-end runs over Ray and over real SuperLink/SuperNode processes are in
``test_flower_e2e.py``.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("flwr")

from helpers.flower_fakes import FakeGrid  # noqa: E402
from helpers.tiny import tiny_config  # noqa: E402
from loladeft.exceptions import FieldError  # noqa: E402
from loladeft.runtime import protocol  # noqa: E402
from loladeft.runtime.server import FlowerTrainer  # noqa: E402
from loladeft.training.engine import Trainer  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.flower]

K = 5


def _cfg(tiny: dict[str, str], **kw: object) -> Any:
    return tiny_config(
        tiny, **{"rounds": 3, "num_devices": K, "lora_dropout": 0.1, "eval_every": 1, **kw}
    )


def _flower(cfg: Any, grid: FakeGrid, **options: float) -> tuple[FlowerTrainer, list]:
    logs: list[str] = []
    fast = {"round_timeout": 0.3, "query_timeout": 0.3, "node_wait": 1, **options}
    cfg = cfg.updated({f"runtime.{k}": v for k, v in fast.items()})
    return FlowerTrainer(cfg, grid, log=logs.append).setup(), logs


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_flower_rounds_equal_in_process_rounds(tiny):
    cfg = _cfg(tiny)
    local = Trainer(cfg).setup()
    flower, logs = _flower(cfg, FakeGrid(K))
    for _ in range(3):
        a, b = local.step(), flower.step()
        assert a.train_loss == b.train_loss and a.latency == b.latency
    assert _same(local.weights(), flower.weights())
    assert flower.evaluate() == local.evaluate()
    assert logs == [] and not any(flower.faults.values())


def _set_grad(reply, fn):
    arrays = protocol.get(reply.content, "gradient")
    name = next(iter(arrays))
    arrays = fn(name, arrays)
    protocol.put(reply.content, "gradient", {k: torch.from_numpy(v) for k, v in arrays.items()})
    return reply


def _with(key, value):
    def fn(reply):
        reply.content["result"][key] = value
        return reply

    return fn


BROKEN = {
    "nan": (lambda r: _set_grad(r, lambda n, a: {**a, n: a[n] * np.nan}), "non-finite"),
    "shape": (lambda r: _set_grad(r, lambda n, a: {**a, n: a[n][:1]}), "shape"),
    "dtype": (lambda r: _set_grad(r, lambda n, a: {**a, n: a[n].astype(np.float64)}), "dtype"),
    "missing": (
        lambda r: _set_grad(r, lambda n, a: {k: v for k, v in a.items() if k != n}),
        "missing",
    ),
    "extra": (lambda r: _set_grad(r, lambda n, a: {**a, "x": a[n]}), "unexpected"),
    "norm": (lambda r: _set_grad(r, lambda n, a: {**a, n: a[n] + 1e6}), "exceeds the bound"),
    "round": (_with("round", 7), "(round, depth, device)"),
    "depth": (_with("depth", 3), "(round, depth, device)"),
    "silent": (lambda r: None, "no reply"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_invalid_reply_is_rejected_and_its_block_reassigned(tiny, case):
    change, words = BROKEN[case]
    cfg = _cfg(tiny, rounds=1)
    depth = 2
    seen: set[int] = set()

    def tamper(k, message, reply):
        if message.metadata.message_type != "train" or message.content["deft"]["depth"] != depth:
            return reply
        if depth in seen:
            return reply
        seen.add(depth)
        tamper.bad = k
        return change(reply)

    grid = FakeGrid(K, tamper)
    flower, logs = _flower(cfg, grid)
    local = Trainer(cfg).setup()
    inst = local.device_states(1)
    plan = local.clock.schedule(1, cfg.train.scheme, inst)
    t0 = time.perf_counter()
    rec = flower.step()
    assert time.perf_counter() - t0 < 30
    bad = tamper.bad
    assert bad == int(plan.assignment[depth - 1])
    kind = {"silent": "timeouts"}.get(case, "invalid")
    assert flower.faults[kind] == 1 and flower.faults["reassigned"] == 1
    assert any(words in line and f"device {bad} failed block {depth}" in line for line in logs)
    # the replacement: the unused device holding the block that finishes it soonest with the
    # failed device's bandwidth share (brute force over the devices)
    share = plan.bandwidth[bad]
    best = min(
        (
            inst.J[k, depth - 1] + inst.block_bits / (share * inst.spectral_efficiency[k]),
            k,
        )
        for k in range(K)
        if k not in set(plan.assignment.tolist())
        and inst.device_memory[k] >= inst.block_memory[depth - 1]
    )[1]
    trains = [(k, d) for k, t, d in grid.sent if t == "train"]
    assert trains[-1] == (best, depth)
    # what was applied is exactly the in-process engine's round with that device for the block
    assignment = plan.assignment.copy()
    assignment[depth - 1] = best
    from dataclasses import replace

    local.run_devices = lambda n, i, a: Trainer.run_devices(
        local, n, i, replace(a, assignment=assignment)
    )
    local.step()
    assert _same(local.weights(), flower.weights())
    # the reassigned round waits out the virtual deadline
    assert rec.latency["jbba"] >= 2 * plan.latency


def test_node_error_is_reassigned(tiny):
    from flwr.app import Error, Message

    def tamper(k, message, reply):
        if message.metadata.message_type == "train" and k == tamper.victim:
            return Message(Error(code=0, reason="device out of memory"), reply_to=message)
        return reply

    cfg = _cfg(tiny, rounds=1)
    local = Trainer(cfg).setup()
    tamper.victim = int(local.clock.schedule(1, "jbba", local.device_states(1)).assignment[0])
    flower, logs = _flower(cfg, FakeGrid(K, tamper))
    rec = flower.step()
    assert rec.feasible and flower.faults["errors"] == 1 and flower.faults["reassigned"] == 1
    assert any("device out of memory" in line for line in logs)


def test_block_without_any_device_left_is_skipped_and_not_stepped(tiny):
    cfg = _cfg(tiny, rounds=1, num_devices=3)  # K = L: no spare device

    def tamper(k, message, reply):
        is_train = message.metadata.message_type == "train"
        return None if is_train and message.content["deft"]["depth"] == 1 else reply

    grid = FakeGrid(3, tamper)
    flower, logs = _flower(cfg, grid)
    before = [[p.detach().clone() for p in b] for b in flower.blocks]
    rec = flower.step()
    assert rec.feasible and flower.faults["skipped_blocks"] == 1
    assert any("no device left for block 1" in line for line in logs)
    after = flower.blocks
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0], strict=True))
    pairs = [(x, y) for b in (1, 2) for x, y in zip(before[b], after[b], strict=True)]
    assert all(not torch.equal(x, y) for x, y in pairs)


def test_stragglers_cost_virtual_time_only(tiny):
    cfg = _cfg(tiny, rounds=2)
    flower, logs = _flower(cfg, FakeGrid(K), straggler_prob=0.5, deadline_factor=3.0)
    local = Trainer(cfg).setup()
    t0 = time.perf_counter()
    recs = [flower.step() for _ in range(2)]
    assert time.perf_counter() - t0 < 20  # no sleeping out any deadline
    assert flower.faults["stragglers"] >= 1
    assert any("straggler" in line for line in logs)
    for n, rec in enumerate(recs, 1):
        plan = local.clock.schedule(n, "jbba", local.device_states(n))
        strag = np.random.default_rng([cfg.train.seed, 0x57A6, n]).random(K) < 0.5
        if strag[plan.assignment].any():
            assert rec.latency["jbba"] > 3 * plan.latency
        else:
            assert rec.latency["jbba"] == plan.latency


def test_missing_node_is_unschedulable(tiny):
    cfg = _cfg(tiny, rounds=1)

    def tamper(k, message, reply):
        return None if k == 0 else reply

    grid = FakeGrid(K, tamper)
    flower, logs = _flower(cfg, grid)
    flower.step()
    assert any("devices [0] unavailable" in line for line in logs)
    assert all(k != 0 for k, t, _ in grid.sent if t == "train")


def test_check_gradient_accepts_exact_and_reports_norm():
    a = {"w": np.full((2, 3), 2.0, np.float32), "b": np.zeros(3, np.float32)}
    spec = {"w": ((2, 3), "float32"), "b": ((3,), "float32")}
    assert protocol.check_gradient(a, spec, 100.0) == pytest.approx(np.sqrt(24.0))
    with pytest.raises(protocol.InvalidReply, match=r"norm 4\.899 exceeds the bound 4$"):
        protocol.check_gradient(a, spec, 4.0)


def test_app_declares_every_run_config_key(tmp_path):
    """The generated Flower app declares every setting of the run as a flat typed key with
    its default, so ``flwr run --run-config key=value`` can override any of them."""
    from loladeft.config import Config, from_flat, to_flat
    from loladeft.runtime.deployment import APP_KEYS, write_app

    folder = write_app(tmp_path / "app")
    app = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == {**APP_KEYS, **to_flat(Config())}
    assert from_flat({k: v for k, v in app["config"].items() if "." in k}) == Config()
    assert app["components"] == {
        "serverapp": "loladeft.runtime.app:server_app",
        "clientapp": "loladeft.runtime.app:client_app",
    }


def test_device_state_from_node_config_or_the_scenario(tiny):
    from loladeft.runtime.device import device_state

    cfg = _cfg(tiny)
    trainer = Trainer(cfg).setup()
    drawn = trainer.clock.rounds(4)
    for k in range(K):
        node = {"partition-id": k, "num-partitions": K}
        assert device_state(cfg, node, 4) == (
            drawn.compute_factor[0, k],
            drawn.device_memory[0, k],
        )
    real = {"partition-id": 1, "num-partitions": K, "compute-factor": 0.7, "memory-gb": 3.5}
    assert device_state(cfg, real, 4) == (0.7, 3.5e9)
    for bad, words in [
        ({"compute-factor": 0.7}, "compute-factor given without its pair"),
        ({"compute-factor": 0.0, "memory-gb": 1}, "compute-factor > 0"),
        ({"compute-factor": "x", "memory-gb": 1}, "must be numbers"),
        ({"num-partitions": K + 1}, "does not fit the run's K = 5"),
    ]:
        with pytest.raises(FieldError, match=words):
            device_state(cfg, {"partition-id": 0, "num-partitions": K, **bad}, 4)


@pytest.mark.parametrize("command", ["virtual", "local"])
@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--nodes", "2"], "nodes: K = 2 is smaller than the L = 3 blocks"),
        (["--straggler-prob", "1"], "runtime.straggler_prob: input should be less than 1"),
        (["--round-timeout", "-1"], "runtime.round_timeout: input should be greater than 0"),
        (["--data-dir", "/nonexistent/glue"], "data-dir"),
        (["--task", "glue9"], "task"),
        (["--scheme", "fastest"], "scheme"),
    ],
)
def test_flower_commands_refuse_bad_input_in_one_line(tiny, tmp_path, command, extra, words):
    """Found before any process starts: exit 2, one line, nothing written."""
    from typer.testing import CliRunner

    from loladeft.cli.app import app

    argv = ["flower", command, "--task", "sst2", "--nodes", str(K)]
    argv += ["--data-dir", tiny["data_dir"], "--model", tiny["model"]]
    argv += ["--profile", tiny["profile"], "--out", str(tmp_path / "out"), *extra]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("loladeft: ") and words in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_resumed_flower_run_continues_every_devices_stream(tiny, tmp_path):
    """The nodes keep nothing: after a restart (fresh nodes, server from its checkpoint) a
    run continues exactly as if it had not stopped."""
    cfg = _cfg(tiny, rounds=4)
    straight, _ = _flower(cfg, FakeGrid(K))
    for _ in range(4):
        straight.step()
    first, _ = _flower(cfg, FakeGrid(K))
    first.step()
    first.step()
    first.save(tmp_path / "ckpt.pt")
    resumed, _ = _flower(cfg, FakeGrid(K))  # new nodes: no state from the first run
    resumed.load(tmp_path / "ckpt.pt")
    resumed.step()
    resumed.step()
    assert _same(straight.weights(), resumed.weights())
    assert [s.consumed for s in resumed.streams] == [s.consumed for s in straight.streams]


def test_only_flower_patches_uses_flower_internals():
    """Every runtime module but ``flower_patches`` imports only Flower's public packages."""
    import ast

    import loladeft.runtime

    public = {"flwr.app", "flwr.serverapp", "flwr.clientapp", "flwr.simulation"}
    folder = Path(loladeft.runtime.__file__).parent
    found: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found.setdefault(path.stem, set()).update(n for n in names if n.split(".")[0] == "flwr")
    private = {m: sorted(n - public) for m, n in found.items() if n - public}
    assert set(private) == {"flower_patches"}, private
    assert found["virtual"] == {"flwr.serverapp", "flwr.simulation"}
