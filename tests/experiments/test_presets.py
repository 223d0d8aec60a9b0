"""Scenario presets, the equal-split rules and the compute scale (issue 11)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from loladeft.allocation.registry import solve
from loladeft.cli.app import app
from loladeft.config import PRESETS, load_config
from loladeft.exceptions import InputError
from loladeft.experiments.runner import simulate_point
from loladeft.experiments.simulate import load_block_costs
from loladeft.system.instance import Instance
from loladeft.system.scenario import BlockCosts, Scenario

ROOT = Path(__file__).resolve().parents[2]


def test_every_preset_is_its_table_over_the_defaults():
    default = load_config().scenario.model_dump()
    for name, values in PRESETS.items():
        cfg = load_config(None, {"preset": name})
        assert cfg.preset == name
        assert cfg.scenario.model_dump() == {**default, **values}
    assert PRESETS["paper-literal"] == {}


def test_presets_differ_as_documented():
    sc = {name: load_config(None, {"preset": name}).scenario for name in PRESETS}
    assert sc["paper-literal"].snr_convention == "transmit"
    for name in ("calibrated", "benchmarks-bk", "bk-split"):
        assert (sc[name].snr_convention, sc[name].snr_db) == ("received", 10.0)
        assert sc[name].compute_scale < 1
    assert (sc["calibrated"].equal_split, sc["calibrated"].benchmark_split) == ("active",) * 2
    assert (sc["benchmarks-bk"].equal_split, sc["benchmarks-bk"].benchmark_split) == (
        "active",
        "all",
    )
    assert (sc["bk-split"].equal_split, sc["bk-split"].benchmark_split) == ("all", "all")


def test_preset_sits_below_the_file_and_the_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "calibrated"\n[scenario]\ncompute_scale = 0.5\n')
    cfg = load_config(path)
    assert (cfg.preset, cfg.scenario.snr_convention) == ("calibrated", "received")
    assert cfg.scenario.compute_scale == 0.5  # the file's own value wins
    cfg = load_config(path, {"preset": "bk-split", "scenario.snr_db": 3.0})
    assert cfg.scenario.equal_split == "all" and cfg.scenario.snr_db == 3.0
    assert cfg.scenario.compute_scale == 0.5
    path.write_text('preset = "nope"\n')
    with pytest.raises(InputError, match=r"^preset: unknown 'nope'; choose one of paper-literal"):
        load_config(path)


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_has_a_documented_file_that_loads_to_it(name):
    path = ROOT / "configs" / "presets" / f"{name}.toml"
    text = path.read_text(encoding="utf-8")
    assert "Sec. VI" in text  # the paper's sentences it rests on
    assert load_config(path).scenario == load_config(None, {"preset": name}).scenario
    if name == "bk-split":
        assert "CONTRADICTS" in text


def _costs(L=3):
    return BlockCosts(
        "tiny",
        np.array([1e11, 1.5e11, 2e11][:L]),
        np.array([1e8, 2e8, 3e8][:L]),
        786432.0,
    )


def test_compute_scale_multiplies_every_block_time():
    costs = load_block_costs("roberta-base")
    base = Scenario(costs)
    assert np.array_equal(Scenario(costs, compute_scale=0.25).block_seconds, base.block_seconds / 4)
    with pytest.raises(ValueError, match="compute_scale"):
        Scenario(costs, compute_scale=0.0)
    with pytest.raises(ValueError, match="equal_split"):
        Scenario(costs, equal_split="half")


def test_all_split_gives_b_over_k_and_ba_is_the_brute_force_optimum_of_that_split():
    K, L = 6, 3
    sc = Scenario(_costs(L), num_devices=K, equal_split="all", benchmark_split="all")
    batch = sc.sample(20, 3)
    for i in range(len(batch)):
        inst = batch.instance(i, sc.split_for("ba"))
        res = solve(inst, "ba")
        # each scheduled device gets B/K; the K - L other shares stay unused
        assert np.allclose(res.bandwidth[res.assignment], sc.bandwidth_hz / K)
        assert np.isclose(res.bandwidth.sum(), sc.bandwidth_hz * L / K)
        # brute force over every assignment, with T = J + S K / (B r_k) and memory C3
        plain = batch.instance(i)
        comm = plain.block_bits * K / (plain.bandwidth * plain.spectral_efficiency)
        best = min(
            max(plain.J[k, l] + comm[k] for l, k in enumerate(a))
            for a in itertools.permutations(range(K), L)
            if all(plain.memory_ok[k, l] for l, k in enumerate(a))
        )
        assert res.latency == pytest.approx(best, rel=1e-12)
        # comm-aware under "all" and jbba (which always shares all of B)
        comm_res = solve(batch.instance(i, sc.split_for("comm-aware")), "comm-aware")
        assert np.allclose(comm_res.bandwidth[comm_res.assignment], sc.bandwidth_hz / K)
        assert sc.split_for("jbba", joint=True) == "active"


def test_default_rules_leave_the_instance_unchanged():
    sc = Scenario(_costs(), num_devices=5)
    batch = sc.sample(3, 1)
    inst = batch.instance(0)
    assert isinstance(inst, Instance) and inst.bandwidth == sc.bandwidth_hz
    assert sc.split_for("ba") == sc.split_for("comm-aware") == "active"
    assert batch.instance(0, "all").bandwidth == pytest.approx(sc.bandwidth_hz * 3 / 5)


def _means(scenario, schemes, rounds=150, seed=4):
    point = simulate_point(scenario, schemes, rounds, seed)
    return np.nanmean(point.latency, axis=1)


def test_calibrated_preset_separates_ba_from_comm_aware_and_curves_decrease():
    cfg = load_config(None, {"preset": "calibrated"})
    base = cfg.scenario.scenario(load_block_costs("roberta-base"))
    schemes = ("comm-aware", "ba", "jbba")
    fig5 = np.array([_means(base.with_(snr_db=x), schemes) for x in (0.0, 10.0, 20.0)])
    fig6 = np.array([_means(base.with_(bandwidth_hz=b * 1e6), schemes) for b in (20, 100, 200)])
    ratio = fig5[1, 1] / fig5[1, 0]
    assert ratio < 0.8  # BA clearly below comm-aware at 10 dB (the literal preset: ~1.0)
    for curve in (fig5, fig6):
        assert (np.diff(curve, axis=0) < 0).all()  # every scheme's mean falls along the sweep
    literal = load_config().scenario.scenario(load_block_costs("roberta-base"))
    lit = _means(literal, schemes)
    assert lit[1] / lit[0] > 0.95


def test_simulate_help_lists_the_presets_and_refuses_an_unknown_one():
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in PRESETS:
        assert name in result.output
    bad = runner.invoke(app, ["simulate", "--preset", "nope"])
    assert bad.exit_code == 2


def test_training_clock_applies_the_equal_split_rules_of_a_preset(tmp_path):
    from loladeft.training.clock import Clock

    path = tmp_path / "train.toml"
    path.write_text('preset = "bk-split"\n[scenario]\nnum_devices = 5\n')
    cfg = load_config(path, command="train")
    clock = Clock(cfg.scenario.scenario(_costs()), seed=2)
    K, B = 5, cfg.scenario.bandwidth_hz
    for scheme in ("ba", "comm-aware"):
        res = clock.schedule(1, scheme)
        assert np.allclose(res.bandwidth[res.assignment], B / K)
    jbba = clock.schedule(1, "jbba")
    assert jbba.bandwidth.sum() == pytest.approx(B)
    # the default keeps B/L
    plain = Clock(load_config(None, {"scenario.num_devices": 5}).scenario.scenario(_costs()), 2)
    res = plain.schedule(1, "ba")
    assert np.allclose(res.bandwidth[res.assignment], B / 3)
