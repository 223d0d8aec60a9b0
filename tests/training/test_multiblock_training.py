"""Fewer devices than blocks in training and in the Flower runtime (issue 13, item 4).

1. a multi-block device's gradients from one truncated backward pass equal those of
   separate single-block passes on the same batch, and its pass stops at its deepest block;
2. a DEFT round with K < L and a shared minibatch aggregates the centralized gradient; with
   distinct minibatches the head gradient is the mean over *devices*, not over blocks;
3. grouped layers: ``layers_per_block = 2`` gives L/2 blocks holding the right layers, the
   clock's costs are the grouped profile's, and a grouped round is the centralized gradient;
4. a Flower round with K < L equals the in-process round bit for bit; a failed multi-block
   device's blocks move together or are skipped together;
5. settings: defaults are the paper's model, K * max_blocks_per_device >= L is the check.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from helpers.tiny import NUM_LAYERS, tiny_config  # noqa: E402
from loladeft.training.engine import (  # noqa: E402
    Trainer,
    carried_blocks,
    device_gradient,
    device_gradients,
    full_gradient,
)

pytestmark = pytest.mark.torch


def _perturbed(cfg: Any) -> Trainer:
    """A set-up trainer whose LoRA B matrices are non-zero (every LoRA matrix then has a
    non-zero gradient)."""
    trainer = Trainer(cfg).setup()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in trainer.params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return trainer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


# ----------------------------------------------------------------------- 1. one backward pass
@pytest.mark.filterwarnings("ignore:Full backward hook:UserWarning")
@pytest.mark.parametrize("carried", [(0, 1), (0, 2), (1, 2), (0, 1, 2)])
def test_one_truncated_backward_equals_separate_single_block_passes(tiny, carried):
    from loladeft.models import find_blocks

    # LoRA dropout on: the forward pass (and its dropout masks) must not depend on which
    # parameters require a gradient
    trainer = _perturbed(tiny_config(tiny, lora_dropout=0.1))
    batches = [trainer._batch(0), trainer._batch(1)]  # M = 2
    blocks = [trainer.blocks[i] for i in carried]
    layers = find_blocks(trainer.model)  # input side first
    hit: set[int] = set()
    hooks = [
        layer.register_full_backward_hook(lambda _m, _gi, _go, i=i: hit.add(i))
        for i, layer in enumerate(layers)
    ]
    got, got_head, got_loss = device_gradients(
        trainer.model, blocks, trainer.head, batches, seed=11
    )
    for h in hooks:
        h.remove()
    deepest = max(carried) + 1
    assert hit == set(range(NUM_LAYERS - deepest, NUM_LAYERS))  # stops at the deepest block
    assert len(got) == len(carried)
    for i, grads in zip(carried, got, strict=True):
        want, want_head, want_loss = device_gradient(
            trainer.model, trainer.blocks[i], trainer.head, batches, seed=11
        )
        assert want_loss == pytest.approx(got_loss, abs=1e-6)
        for g, w in zip(grads, want, strict=True):
            assert float(w.norm()) > 0
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
        for g, w in zip(got_head, want_head, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)
    for p in trainer.model.parameters():  # nothing left requiring or holding a gradient
        assert p.grad is None and not p.requires_grad


def test_single_block_update_is_the_single_block_gradient_bit_for_bit(tiny):
    trainer = _perturbed(tiny_config(tiny, lora_dropout=0.1))
    stream = trainer.streams[2].consumed
    update = trainer.device_update(1, 1, 2)
    trainer.streams[2].consumed = stream
    again = trainer.device_update(1, [1], 2)
    assert list(update.block_grads) == list(again.block_grads) == [1]
    for a, b in zip(
        update.block_grads[1] + update.head_grads,
        again.block_grads[1] + again.head_grads,
        strict=True,
    ):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------- 2. aggregation
def _capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import loladeft.training.engine as engine

    captured: dict[str, Any] = {}

    def capture(optimizer, scheduler, params, grads):
        captured["grads"] = [g.clone() for g in grads]

    monkeypatch.setattr(engine, "apply_update", capture)
    return captured


def _plan(trainer: Trainer, n: int = 1) -> Any:
    return trainer.clock.schedule(n, trainer.cfg.train.scheme, trainer.device_states(n))


def test_deft_round_with_fewer_devices_than_blocks_equals_centralized_gradient(tiny, monkeypatch):
    # K = 2 devices, L = 3 blocks: some device must carry two blocks
    trainer = _perturbed(tiny_config(tiny, num_devices=2, max_blocks_per_device=2))
    plan = _plan(trainer)
    assert plan.feasible and len(set(plan.assignment.tolist())) < trainer.num_blocks
    batch = trainer._batch(0)
    monkeypatch.setattr(trainer, "_batch", lambda _k: batch)  # every device: same minibatch
    captured = _capture(monkeypatch)
    trainer.step()  # one DEFT round, M = 1
    reference, _ = full_gradient(trainer.model, trainer.params, batch)
    assert len(captured["grads"]) == len(reference)
    for got, want in zip(captured["grads"], reference, strict=True):
        assert float(want.norm()) > 0
        assert _rel(got, want) <= 1e-6


def test_head_gradient_is_the_mean_over_devices_not_blocks(tiny, monkeypatch):
    trainer = _perturbed(tiny_config(tiny, num_devices=2, max_blocks_per_device=2))
    carried = carried_blocks(_plan(trainer).assignment)
    assert sorted(len(b) for b in carried.values()) == [1, 2]
    batches = {k: trainer._batch(k) for k in carried}  # one fixed minibatch per device
    monkeypatch.setattr(trainer, "_batch", lambda k: batches[k])
    captured = _capture(monkeypatch)
    trainer.step()
    # independent reference: full backward passes on each device's minibatch
    per_device = {k: full_gradient(trainer.model, trainer.params, b)[0] for k, b in batches.items()}
    sizes = [len(b) for b in trainer.blocks]
    offsets = np.cumsum([0, *sizes])
    got = captured["grads"]
    for k, indices in carried.items():
        for i in indices:
            for j in range(offsets[i], offsets[i + 1]):
                assert _rel(got[j], per_device[k][j]) <= 1e-6
    nh = len(trainer.head)
    by_devices = [sum(per_device[k][-nh + h] for k in carried) / len(carried) for h in range(nh)]
    by_blocks = [
        sum(per_device[k][-nh + h] * len(b) for k, b in carried.items()) / trainer.num_blocks
        for h in range(nh)
    ]
    for h in range(nh):
        assert _rel(got[-nh + h], by_devices[h]) <= 1e-6
        assert _rel(by_blocks[h], by_devices[h]) > 1e-3  # the two rules differ here


def test_multiblock_clock_is_the_schemes_eq7_prime_latency(tiny):
    from loladeft.allocation.registry import solve

    cfg = tiny_config(tiny, num_devices=2, max_blocks_per_device=2, extra_block_memory_gb=0.25)
    trainer = Trainer(cfg).setup()
    inst = trainer.clock.instance(1)
    assert inst.max_blocks_per_device == 2 and inst.extra_block_memory == 0.25e9
    rec = trainer.step()
    result = solve(inst, "jbba")
    assert rec.latency["jbba"] == result.latency
    # eq. (7'): J[k, max A_k] + |A_k| S / (r_k B_k), by hand
    want = max(
        inst.J[k, max(idx)]
        + len(idx) * inst.block_bits / (inst.spectral_efficiency[k] * result.bandwidth[k])
        for k, idx in carried_blocks(result.assignment).items()
    )
    assert rec.latency["jbba"] == pytest.approx(want, rel=1e-12)


# ----------------------------------------------------------------------- 3. grouped layers
FOUR = 4


@pytest.fixture(scope="module")
def tiny4(tiny, tmp_path_factory):
    """The tiny model with 4 layers (so that 2 layers per block divide them) and its profile."""
    from dataclasses import replace

    from helpers.tiny import profile_depths
    from loladeft.profiling.profile import load_profile

    root = tmp_path_factory.mktemp("tiny4")
    config = transformers.BertConfig.from_pretrained(tiny["model"])
    config.num_hidden_layers = FOUR
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(root / "model")
    transformers.BertTokenizer.from_pretrained(tiny["model"]).save_pretrained(root / "model")
    base = load_profile(tiny["profile"])
    replace(base, model="tiny4", depths=profile_depths(FOUR)).to_json(root / "profile.json")
    return {**tiny, "model": str(root / "model"), "profile": str(root / "profile.json")}


def test_two_layers_per_block_hold_the_right_layers(tiny4):
    trainer = Trainer(tiny_config(tiny4, num_devices=2, layers_per_block=2)).setup()
    assert trainer.num_blocks == FOUR // 2
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    lora = [n for n, _ in trainer.model.named_parameters() if "lora_" in n]
    for i, block in enumerate(trainer.blocks):
        # block 1 (index 0) = depths 1, 2 = input-side layers 3, 2; block 2 = layers 1, 0
        layers = {FOUR - 1 - 2 * i, FOUR - 2 - 2 * i}
        want = [n for n in lora if int(n.split(".layer.")[1].split(".")[0]) in layers]
        assert sorted(names[id(p)] for p in block) == sorted(want)
    assert sum(len(b) for b in trainer.blocks) == len(lora)
    # the optimizer has one group per block and the head
    assert [len(g["params"]) for g in trainer.optimizer.param_groups] == [
        *(len(b) for b in trainer.blocks),
        len(trainer.head),
    ]


def test_grouped_clock_costs_are_the_profiles_deepest_layer(tiny4):
    from loladeft.profiling.profile import load_profile

    cfg = tiny_config(tiny4, num_devices=2, layers_per_block=2, batch=8)
    trainer = Trainer(cfg).setup()
    profile = load_profile(tiny4["profile"])
    scale = cfg.train.batch / profile.batch
    sc = trainer.clock.scenario
    flops = np.array([d.flops for d in profile.depths]) * scale
    np.testing.assert_array_equal(sc.costs.flops, flops[[1, 3]])  # d(G) = d(hi)
    head = sum(p.numel() for p in trainer.head)
    memory = [
        d.weight_bytes + d.activation_bytes * scale + d.block_param_bytes + 8 * head
        for d in profile.depths
    ]
    np.testing.assert_allclose(sc.costs.block_memory, [memory[1], memory[3]], rtol=1e-12)
    lora = sum(p.numel() for p in trainer.blocks[0])
    assert lora == 2 * sum(p.numel() for p in Trainer(tiny_config(tiny4)).setup().blocks[0])
    assert sc.costs.block_bits == 32 * lora  # the group's LoRA (upload = "block", the paper's S)
    assert sc.costs.head_bits == 32 * head
    assert trainer.clock.instance(1).J.shape == (2, 2)


def test_grouped_round_equals_centralized_gradient(tiny4, monkeypatch):
    trainer = _perturbed(
        tiny_config(tiny4, num_devices=1, layers_per_block=2, max_blocks_per_device=2)
    )
    batch = trainer._batch(0)
    monkeypatch.setattr(trainer, "_batch", lambda _k: batch)
    captured = _capture(monkeypatch)
    trainer.step()  # both blocks (all four layers) on the one device
    reference, _ = full_gradient(trainer.model, trainer.params, batch)
    for got, want in zip(captured["grads"], reference, strict=True):
        assert float(want.norm()) > 0
        assert _rel(got, want) <= 1e-6


# ----------------------------------------------------------------------- 5. settings, checks
def test_defaults_are_the_papers_model(tiny):
    from loladeft.config import Config

    sc = Config().scenario
    assert (sc.layers_per_block, sc.max_blocks_per_device, sc.extra_block_memory_gb) == (1, 1, 0)
    trainer = Trainer(tiny_config(tiny)).setup()
    inst = trainer.clock.instance(1)
    assert inst.max_blocks_per_device == 1 and inst.extra_block_memory == 0
    assert "max_blocks_per_device" not in trainer.clock.scenario.describe()


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"num_devices": 2}, "K = 2 is smaller than the L = 3 blocks"),
        (
            {"num_devices": 1, "max_blocks_per_device": 2},
            "K = 1 devices carrying at most max_blocks_per_device = 2 blocks each hold fewer "
            "than the L = 3 blocks",
        ),
        ({"layers_per_block": 2}, "layers_per_block: 2 does not divide the model's 3 layers"),
        (
            {"max_blocks_per_device": 2, "scheme": "comm-aware"},
            "train.scheme: comm-aware cannot schedule multi-block devices",
        ),
        (
            {"max_blocks_per_device": 2, "shared_schemes": ("ba", "random")},
            "train.shared_schemes: random cannot schedule multi-block devices",
        ),
    ],
)
def test_too_few_devices_or_a_bad_grouping_is_one_line(tiny, settings, words):
    from loladeft.exceptions import LoladeftError

    with pytest.raises(LoladeftError) as info:
        Trainer(tiny_config(tiny, **settings)).setup()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_settings_name_their_key():
    from loladeft.config import load_config
    from loladeft.exceptions import InputError

    for key, value, words in [
        ("scenario.max_blocks_per_device", 0, "greater than or equal to 1"),
        ("scenario.layers_per_block", 1.5, "valid integer"),
        ("scenario.extra_block_memory_gb", -1.0, "greater than or equal to 0"),
    ]:
        with pytest.raises(InputError, match=rf"^{key}: .*{words}"):
            load_config(None, {key: value})


def test_scenario_accepts_fewer_devices_with_multiblock_devices():
    from loladeft.system.scenario import BlockCosts, InvalidScenarioError, Scenario

    costs = BlockCosts("m", np.arange(1.0, 7.0), np.full(6, 1e8), 1e5)
    sc = Scenario(costs, num_devices=3, max_blocks_per_device=2, extra_block_memory=1e6)
    inst = sc.sample(1, 0).instance(0)
    assert (inst.num_devices, inst.num_blocks, inst.max_blocks_per_device) == (3, 6, 2)
    assert inst.extra_block_memory == 1e6
    assert sc.describe()["max_blocks_per_device"] == 2
    with pytest.raises(InvalidScenarioError, match="num_devices"):
        Scenario(costs, num_devices=2, max_blocks_per_device=2)
    with pytest.raises(InvalidScenarioError, match="max_blocks_per_device"):
        Scenario(costs, num_devices=6, max_blocks_per_device=0)
    with pytest.raises(InvalidScenarioError, match="extra_block_memory"):
        Scenario(costs, num_devices=6, extra_block_memory=-1.0)


# ----------------------------------------------------------------------- 4. Flower runtime
def _flower(cfg: Any, grid: Any) -> tuple[Any, list[str]]:
    from loladeft.runtime.server import FlowerTrainer

    logs: list[str] = []
    fast = {"round_timeout": 0.3, "query_timeout": 0.3, "node_wait": 1}
    cfg = cfg.updated({f"runtime.{k}": v for k, v in fast.items()})
    return FlowerTrainer(cfg, grid, log=logs.append).setup(), logs


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_flower_rounds_with_fewer_devices_equal_in_process_rounds(tiny):
    pytest.importorskip("flwr")
    from helpers.flower_fakes import FakeGrid

    cfg = tiny_config(
        tiny, rounds=3, num_devices=2, max_blocks_per_device=2, lora_dropout=0.1, eval_every=1
    )
    local = Trainer(cfg).setup()
    grid = FakeGrid(2)
    flower, logs = _flower(cfg, grid)
    for n in range(1, 4):
        plan = _plan(local, n)
        a, b = local.step(), flower.step()
        assert a.train_loss == b.train_loss and a.latency == b.latency
        trains = [(k, d) for k, t, d in grid.sent if t == "train"]
        carried = carried_blocks(plan.assignment)
        # one message per device, naming its deepest block
        assert trains[-len(carried) :] == [(k, max(b) + 1) for k, b in carried.items()]
    assert _same(local.weights(), flower.weights())
    assert [s.consumed for s in local.streams] == [s.consumed for s in flower.streams]
    assert logs == [] and not any(flower.faults.values())


def test_flower_rounds_with_grouped_layers_equal_in_process_rounds(tiny4):
    pytest.importorskip("flwr")
    from helpers.flower_fakes import FakeGrid

    cfg = tiny_config(tiny4, rounds=2, num_devices=2, layers_per_block=2, lora_dropout=0.1)
    local = Trainer(cfg).setup()
    flower, logs = _flower(cfg, FakeGrid(2))
    for _ in range(2):
        a, b = local.step(), flower.step()
        assert a.train_loss == b.train_loss and a.latency == b.latency
    assert _same(local.weights(), flower.weights())
    assert logs == [] and not any(flower.faults.values())


def test_failed_multiblock_device_blocks_are_skipped_together(tiny):
    """K = 2, L = 3: the device carrying two blocks fails, the other is busy: both of its
    blocks are skipped (not stepped), the third block is."""
    pytest.importorskip("flwr")
    from helpers.flower_fakes import FakeGrid

    cfg = tiny_config(tiny, rounds=1, num_devices=2, max_blocks_per_device=2)

    def tamper(k, message, reply):
        deft = message.content["deft"]
        multi = message.metadata.message_type == "train" and len(deft["depths"]) > 1
        return None if multi else reply

    local = Trainer(cfg).setup()
    carried = carried_blocks(_plan(local).assignment)
    victim = next(k for k, b in carried.items() if len(b) == 2)
    flower, logs = _flower(cfg, FakeGrid(2, tamper))
    before = [[p.detach().clone() for p in b] for b in flower.blocks]
    rec = flower.step()
    assert rec.feasible and flower.faults["skipped_blocks"] == 2
    depths = ", ".join(str(i + 1) for i in carried[victim])
    assert any(f"device {victim} failed blocks {depths}" in line for line in logs), logs
    assert any(f"no device left for blocks {depths}" in line for line in logs), logs
    for i, (old, new) in enumerate(zip(before, flower.blocks, strict=True)):
        moved = [not torch.equal(x, y) for x, y in zip(old, new, strict=True)]
        assert all(moved) if i not in carried[victim] else not any(moved)


def test_failed_multiblock_device_blocks_move_together(tiny):
    """A failed device's blocks go, all of them, to one spare that holds them; what is
    applied is the in-process round with that spare for those blocks."""
    from dataclasses import replace

    pytest.importorskip("flwr")
    from helpers.flower_fakes import FakeGrid

    cfg = tiny_config(tiny, rounds=1, num_devices=4, max_blocks_per_device=3)
    local = Trainer(cfg).setup()
    inst = local.device_states(1)
    plan = _plan(local)
    carried = carried_blocks(plan.assignment)
    victim, blocks = max(carried.items(), key=lambda kv: len(kv[1]))
    if len(blocks) < 2 or len(carried) == 4:
        pytest.fail(f"the seeded plan {carried} has no multi-block device and a spare")
    seen: list[int] = []

    def tamper(k, message, reply):
        if message.metadata.message_type == "train" and k == victim and not seen:
            seen.append(k)
            return None
        return reply

    flower, logs = _flower(cfg, FakeGrid(4, tamper))
    flower.step()
    assert flower.faults["reassigned"] == len(blocks) and flower.faults["timeouts"] == 1
    # the spare: an unused device holding them all, finishing soonest (eq. 7', by hand)
    share = plan.bandwidth[victim]
    need = inst.block_memory[max(blocks)] + (len(blocks) - 1) * inst.extra_block_memory
    spare = min(
        (
            inst.J[k, max(blocks)]
            + len(blocks) * inst.block_bits / (share * inst.spectral_efficiency[k]),
            k,
        )
        for k in range(4)
        if k not in carried and inst.device_memory[k] >= need
    )[1]
    depths = ", ".join(str(i + 1) for i in blocks)
    assert any(f"blocks {depths} reassigned to device {spare}" in line for line in logs), logs
    assignment = plan.assignment.copy()
    assignment[blocks] = spare
    local.run_devices = lambda n, i, a: Trainer.run_devices(
        local, n, i, replace(a, assignment=assignment)
    )
    local.step()
    assert _same(local.weights(), flower.weights())


def test_node_refuses_a_bad_block_list():
    pytest.importorskip("flwr")
    from flwr.app import ConfigRecord, RecordDict
    from flwr.common import serde

    from loladeft.exceptions import FieldError
    from loladeft.runtime.device import carried_depths

    assert carried_depths({"depth": 2}, 3, 1) == [2]
    # the block list survives Flower's wire format
    sent = RecordDict({"deft": ConfigRecord({"depth": 3, "depths": [1, 3]})})
    received = serde.recorddict_from_proto(serde.recorddict_to_proto(sent))
    assert carried_depths(received["deft"], 3, 2) == [1, 3]
    for deft, words in [
        ({"depth": 3, "depths": [1, 2, 3]}, "1 to 2 per device"),
        ({"depth": 3, "depths": [3, 1]}, "ascending"),
        ({"depth": 2, "depths": [2, 2]}, "distinct"),
        ({"depth": 4, "depths": [1, 4]}, "blocks of this model"),
        ({"depth": 2, "depths": [1, 3]}, "not the deepest"),
        ({"depth": 1, "depths": []}, "blocks"),
    ]:
        with pytest.raises(FieldError, match=words):
            carried_depths(deft, 3, 2)


# ----------------------------------------------------------------------- MiniLM on 3 devices
GLUE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue"


@pytest.mark.slow
@pytest.mark.skipif(not (GLUE / "MRPC").is_dir(), reason="no GLUE TSVs at ../shared/data/glue")
def test_minilm_six_blocks_train_on_three_devices(tmp_path):
    from typer.testing import CliRunner

    from loladeft.cli.app import app
    from loladeft.training.run import read_metrics

    out = tmp_path / "run"
    argv = ["train", "--task", "mrpc", "--devices", "3", "--max-blocks-per-device", "2"]
    argv += ["--rounds", "2", "--batch", "8", "--eval-every", "2", "--data-dir", str(GLUE)]
    argv += ["--out", str(out), "--precision", "fp32", "--threads", "1"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] and manifest["scenario"]["max_blocks_per_device"] == 2
    assert manifest["scenario"]["num_blocks"] == 6 and manifest["scenario"]["num_devices"] == 3
    rows = read_metrics(out / "metrics.csv")
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows[1:])


def test_simulator_scenario_groups_the_profiles_layers():
    """``loladeft simulate`` reads the same settings: its scenario groups the profile's layers
    (d, b of the deepest, S summed) and its instances carry the multi-block settings."""
    from loladeft.config import load_config
    from loladeft.experiments.simulate import base_scenario, load_block_costs
    from loladeft.system.scenario import InvalidScenarioError

    layers = load_block_costs("roberta-base")
    cfg = load_config(
        None,
        {
            "scenario.layers_per_block": 4,
            "scenario.num_devices": 2,
            "scenario.max_blocks_per_device": 2,
            "scenario.extra_block_memory_gb": 0.5,
        },
    )
    sc = base_scenario(cfg)
    assert sc.num_blocks == layers.num_blocks // 4 == 3
    np.testing.assert_array_equal(sc.costs.flops, layers.flops[[3, 7, 11]])
    np.testing.assert_array_equal(sc.costs.block_memory, layers.block_memory[[3, 7, 11]])
    assert sc.costs.block_bits == 4 * layers.block_bits
    inst = sc.sample(1, 0).instance(0)
    assert (inst.num_devices, inst.max_blocks_per_device, inst.extra_block_memory) == (2, 2, 5e8)
    with pytest.raises(InvalidScenarioError, match="layers_per_block: 5 does not divide the 12"):
        base_scenario(cfg.updated({"scenario.layers_per_block": 5}))
