"""The simulator's scenario (paper Sec. VI-A) and the reference devices."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import exp1

from loladeft.system.instance import Instance
from loladeft.system.reference import (
    DEFAULT_REFERENCE,
    REFERENCE_DEVICES,
    ReferenceDevice,
    seconds_for_flops,
)
from loladeft.system.scenario import (
    GB,
    BlockCosts,
    InvalidScenarioError,
    Scenario,
)


def tiny_profile(L: int = 4, **over) -> SimpleNamespace:
    """A hand-made profile: FLOPs and activations linear in depth, like Fig. 4(a)."""
    depths = [
        SimpleNamespace(
            depth=l,
            flops=1e11 * (1 + l),
            activation_bytes=0.4e9 * l,
            weight_bytes=0.5e9,
            block_param_bytes=2e5,
        )
        for l in range(1, L + 1)
    ]
    return SimpleNamespace(**{"model": "tiny", "block_bits": 786432, "depths": depths, **over})


@pytest.fixture
def costs() -> BlockCosts:
    return BlockCosts.from_profile(tiny_profile())


# -- reference devices ---------------------------------------------------------------------


def test_default_reference_is_derated_adreno_750():
    ref = REFERENCE_DEVICES[DEFAULT_REFERENCE]
    assert DEFAULT_REFERENCE == "snapdragon-8-gen-3"
    # 1536 ALUs x 2 FLOP x 903 MHz, derated to a quarter.
    assert ref.flops_per_second == pytest.approx(0.25 * 1536 * 2 * 903e6)
    assert REFERENCE_DEVICES["snapdragon-8-gen-3-peak"].flops_per_second == pytest.approx(
        2.774016e12
    )


def test_seconds_for_flops_scalar_array_and_custom_device():
    rate = REFERENCE_DEVICES[DEFAULT_REFERENCE].flops_per_second
    assert seconds_for_flops(rate) == pytest.approx(1.0)
    assert isinstance(seconds_for_flops(3.0), float)
    np.testing.assert_allclose(seconds_for_flops([rate, 2 * rate]), [1.0, 2.0])
    dev = ReferenceDevice("toy", 1e9, "made up")
    assert seconds_for_flops(5e9, dev) == 5.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_seconds_for_flops_rejects_bad_flops(bad):
    with pytest.raises(ValueError, match="flops"):
        seconds_for_flops(bad)


def test_reference_errors():
    with pytest.raises(KeyError, match="unknown 'nope'"):
        seconds_for_flops(1.0, "nope")
    with pytest.raises(ValueError, match="flops_per_second"):
        ReferenceDevice("bad", 0.0, "")


# -- block costs from a profile -------------------------------------------------------------


def test_block_costs_sum_weights_activations_params(costs):
    l = np.arange(1, 5)
    np.testing.assert_array_equal(costs.flops, 1e11 * (1 + l))
    np.testing.assert_allclose(costs.block_memory, 0.5e9 + 0.4e9 * l + 2e5)
    assert costs.block_bits == 786432 and costs.num_blocks == 4


def test_block_costs_count_optimizer_bytes_when_present():
    prof = tiny_profile()
    for d in prof.depths:
        d.optimizer_bytes = 1e6
    c = BlockCosts.from_profile(prof)
    np.testing.assert_allclose(c.block_memory, 0.5e9 + 0.4e9 * np.arange(1, 5) + 2e5 + 1e6)


def test_block_costs_accept_dict_depths():
    prof = tiny_profile()
    prof.depths = [vars(d) for d in prof.depths]
    assert BlockCosts.from_profile(prof).num_blocks == 4


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: setattr(p, "depths", []), "profile.depths"),
        (lambda p: setattr(p.depths[1], "depth", 5), r"profile.depths\[1\].depth"),
        (lambda p: setattr(p.depths[2], "flops", -1.0), r"profile.depths\[2\].flops"),
        (lambda p: setattr(p.depths[0], "activation_bytes", "x"), "activation_bytes"),
        (lambda p: delattr(p.depths[0], "weight_bytes"), "weight_bytes"),
        (lambda p: setattr(p, "block_bits", 0), "profile.block_bits"),
        (lambda p: setattr(p.depths[0], "flops", 0.0), "flops must be > 0"),
    ],
)
def test_malformed_profile_names_the_field(mutate, field):
    prof = tiny_profile()
    mutate(prof)
    with pytest.raises(InvalidScenarioError, match=field):
        BlockCosts.from_profile(prof)


def test_builtin_roberta_profile_matches_paper_setting():
    from loladeft.profiling.profile import load_profile

    costs = BlockCosts.from_profile(load_profile("roberta-base"))
    assert costs.num_blocks == 12
    assert costs.block_bits == 24576 * 32 == 786432
    assert (np.diff(costs.flops) > 0).all() and (np.diff(costs.block_memory) > 0).all()


# -- scenario validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_devices": 3}, "num_devices: K = 3 is smaller than the L = 4"),
        ({"num_devices": 0}, "num_devices"),
        ({"bandwidth_hz": -1e6}, "bandwidth_hz"),
        ({"bandwidth_hz": 0.0}, "bandwidth_hz"),
        ({"path_loss": 0.0}, "path_loss"),
        ({"snr_db": math.nan}, "snr_db"),
        ({"snr_convention": "peak"}, "snr_convention"),
        ({"local_iterations": 0}, "local_iterations"),
        ({"compute_factor": (0.0, 1.0)}, "compute_factor"),
        ({"compute_factor": (1.0, 0.5)}, "compute_factor"),
        ({"memory_gb": (-1.0, 6.0)}, "memory_gb"),
        ({"reference": "nope"}, "reference"),
    ],
)
def test_invalid_scenario_names_the_parameter(costs, kwargs, field):
    with pytest.raises(InvalidScenarioError, match=field):
        Scenario(costs, **kwargs)


def test_invalid_rounds(costs):
    with pytest.raises(InvalidScenarioError, match="rounds"):
        Scenario(costs, num_devices=6).sample(0, 1)


# -- sampling ---------------------------------------------------------------------------


def test_sample_reproduces_bit_for_bit(costs):
    sc = Scenario(costs, num_devices=6)
    a, b = sc.sample(50, 7), sc.sample(50, np.random.default_rng(7))
    for name in ("compute_factor", "device_memory", "fading", "spectral_efficiency"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.fading, sc.sample(50, 8).fading)


def test_instance_equals_independent_recomputation(costs):
    """J = M FLOPs / (F_ref f_k) (eq. 3), r = log2(1 + snr pl |h|^2) (eq. 4), by hand."""
    sc = Scenario(costs, num_devices=6, snr_db=7.0, local_iterations=3, bandwidth_hz=40e6)
    rounds = sc.sample(5, 3)
    F = REFERENCE_DEVICES[DEFAULT_REFERENCE].flops_per_second
    for i in range(5):
        inst = rounds.instance(i)
        assert isinstance(inst, Instance)
        f = rounds.compute_factor[i]
        for k in range(6):
            for l in range(4):
                assert inst.J[k, l] == pytest.approx(3 * 1e11 * (l + 2) / F / f[k], rel=1e-12)
        snr = 10**0.7
        expect_r = [math.log2(1 + snr * 1e-3 * h) for h in rounds.fading[i]]
        np.testing.assert_allclose(inst.spectral_efficiency, expect_r, rtol=1e-12)
        np.testing.assert_array_equal(inst.device_memory, rounds.device_memory[i])
        np.testing.assert_array_equal(inst.block_memory, costs.block_memory)
        assert inst.block_bits == 786432 and inst.bandwidth == 40e6


def test_received_convention_ignores_path_loss(costs):
    t = Scenario(costs, num_devices=6, snr_convention="transmit").sample(4, 1)
    r = Scenario(costs, num_devices=6, snr_convention="received").sample(4, 1)
    np.testing.assert_array_equal(t.fading, r.fading)
    np.testing.assert_allclose(r.spectral_efficiency, np.log2(1 + 10.0 * r.fading))
    np.testing.assert_allclose(t.spectral_efficiency, np.log2(1 + 0.01 * t.fading))


def test_sampled_distributions(costs):
    """U(0.5, 1), U[1, 6] GB, Exp(1) fading, and E[log2(1 + a X)] = e^{1/a} E1(1/a) / ln 2."""
    sc = Scenario(costs, num_devices=8, snr_db=10.0)
    R = 20000
    s = sc.sample(R, 11)
    n = R * 8
    assert s.compute_factor.min() >= 0.5 and s.compute_factor.max() <= 1.0
    assert abs(s.compute_factor.mean() - 0.75) < 4 * (0.5 / math.sqrt(12)) / math.sqrt(n)
    assert s.device_memory.min() >= 1 * GB and s.device_memory.max() <= 6 * GB
    assert abs(s.fading.mean() - 1.0) < 4 / math.sqrt(n)
    a = 0.01  # 10 dB x path loss 1e-3
    exact = math.exp(1 / a) * exp1(1 / a) / math.log(2)
    se = s.spectral_efficiency.std() / math.sqrt(n)
    assert abs(s.spectral_efficiency.mean() - exact) < 4 * se
    assert exact == pytest.approx(0.0141, abs=2e-4)  # the "about 0.014 bit/s/Hz"


def test_compute_factor_redrawn_each_round_unless_fixed(costs):
    free = Scenario(costs, num_devices=6).sample(3, 0).compute_factor
    assert not np.array_equal(free[0], free[1])
    fixed = Scenario(costs, num_devices=6, fixed_compute=True).sample(3, 0).compute_factor
    assert np.array_equal(fixed[0], fixed[1]) and np.array_equal(fixed[0], fixed[2])


def test_with_revalidates(costs):
    sc = Scenario(costs, num_devices=6)
    assert sc.with_(bandwidth_hz=20e6).bandwidth_hz == 20e6
    with pytest.raises(InvalidScenarioError, match="num_devices"):
        sc.with_(num_devices=2)
    d = sc.describe()
    assert d["mean_received_snr"] == pytest.approx(0.01) and d["num_blocks"] == 4
