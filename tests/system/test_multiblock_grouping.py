"""Grouped layers (issue 13): d, b and S of a group from its layers, on profile arrays, on a
shipped profile's block costs and on instances; the CLI's one-line errors for the new
instance keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loladeft.allocation.registry import solve
from loladeft.exceptions import InvalidInstanceError
from loladeft.experiments.simulate import load_block_costs
from loladeft.system.grouping import (
    group_block_costs,
    group_depth_costs,
    group_instance,
    group_sizes,
)
from loladeft.system.instance import Instance

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from loladeft.cli.app import main; main()"]


def test_group_depth_costs_hand_worked():
    d = [1.0, 2.0, 4.0, 8.0, 16.0]
    b = [10.0, 30.0, 20.0, 50.0, 40.0]  # non-monotone: the rule reads the deepest layer
    g = group_depth_costs(d, b, 3.0, [2, 3])
    assert g.depth_cost.tolist() == [2.0, 16.0]
    assert g.memory.tolist() == [30.0, 40.0]
    assert g.bits.tolist() == [6.0, 9.0]
    per_layer_bits = group_depth_costs(d, b, [1.0, 2.0, 3.0, 4.0, 5.0], 5)
    assert per_layer_bits.bits.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert group_depth_costs(d, b, [1.0, 2.0, 3.0, 4.0, 5.0], [4, 1]).bits.tolist() == [10, 5]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (3, "do not divide"),
        (0, "do not divide"),
        ([2, 2], "sum to 6"),
        ([3, 0, 3], ">= 1"),
        ([], "non-empty"),
        (True, "number of groups"),
    ],
)
def test_group_sizes_rejects(groups, message):
    with pytest.raises(InvalidInstanceError, match=message):
        group_sizes(6 if groups != 3 else 8, groups)


def test_group_block_costs_of_minilm():
    costs = load_block_costs("minilm")  # 6 layers
    grouped = group_block_costs(costs, 3)
    assert grouped.num_blocks == 3
    assert np.array_equal(grouped.flops, costs.flops[[1, 3, 5]])
    assert np.array_equal(grouped.block_memory, costs.block_memory[[1, 3, 5]])
    assert grouped.block_bits == 2 * costs.block_bits
    with pytest.raises(InvalidInstanceError, match="equal sizes"):
        group_block_costs(costs, [2, 4])


def test_group_instance_matches_a_multiblock_device_per_group():
    """A grouped block on one device costs what that device carrying the group's layers as
    a multi-block device (e = 0) costs: J of the deepest layer, |G| S bits."""
    data = json.loads((REPO / "examples" / "paper-example.json").read_text())
    inst = Instance.from_mapping(data)  # K = 6, L = 4
    grouped = group_instance(inst, 2)
    assert grouped.J.tolist() == inst.J[:, [1, 3]].tolist()
    assert grouped.block_bits == 2 * inst.block_bits
    result = solve(grouped, "jbba")
    # the same allocation, ungrouped, with each group's layers on one device
    layers = np.repeat(result.assignment, 2)
    multi = Instance.from_mapping(data | {"max_blocks_per_device": 2})
    latency = multi.device_latency(layers, result.bandwidth)
    assert np.allclose(latency, result.device_latency, rtol=1e-12)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_blocks_per_device": 0}, "max_blocks_per_device"),
        ({"max_blocks_per_device": "3"}, "max_blocks_per_device"),
        ({"extra_block_memory": -1}, "extra_block_memory"),
        ({"extra_block_memory": None}, "extra_block_memory"),
    ],
)
def test_cli_bad_multiblock_key_is_one_line_exit_2(tmp_path, extra, field):
    data = json.loads((REPO / "examples" / "paper-example.json").read_text()) | extra
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    proc = subprocess.run(
        [*CLI, "solve", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], proc.stderr


def test_cli_multiblock_json_keys(tmp_path):
    data = json.loads((REPO / "examples" / "paper-example.json").read_text())
    data = {
        k: (v[:2] if k in ("J", "device_memory", "spectral_efficiency") else v)
        for k, v in data.items()
    } | {"max_blocks_per_device": 2, "device_memory": [1e12, 1e12]}  # K = 2 < L = 4
    path = tmp_path / "mb.json"
    path.write_text(json.dumps(data))
    for scheme in ("jbba", "ba", "milp"):
        proc = subprocess.run(
            [*CLI, "solve", str(path), "--json", "-s", scheme],
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = json.loads(proc.stdout)
        assert {
            "scheme",
            "feasible",
            "latency",
            "assignment",
            "bandwidth",
            "device_latency",
            "solve_seconds",
            "iterations",
            "exact",
        } <= set(out), out
        if out["feasible"]:
            assert proc.returncode == 0
            assert len(out["assignment"]) == 4 and set(out["assignment"]) <= {0, 1}
            inst = Instance.from_mapping(data)
            T = inst.device_latency(out["assignment"], out["bandwidth"])
            assert out["latency"] == float(T.max())
        else:
            assert proc.returncode == 3
    assert (
        json.loads(
            subprocess.run(
                [*CLI, "solve", str(path), "--json"],
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
        )["exact"]
        is False
    )
