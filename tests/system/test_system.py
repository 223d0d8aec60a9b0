"""System model (paper Sec. II–III): latency equations, the instance contract, C1–C3."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from loladeft.exceptions import InvalidInstanceError
from loladeft.system import (
    Instance,
    check_allocation,
    compute_latency,
    device_latency,
    round_latency,
    spectral_efficiency,
    upload_latency,
)

VALID = {
    "J": [[1.0, 2.0], [1.5, 3.0], [2.0, 2.5]],
    "block_memory": [1.0, 2.0],
    "device_memory": [2.0, 1.0, 2.0],
    "spectral_efficiency": [1.0, 2.0, 4.0],
    "block_bits": 1e6,
    "bandwidth": 2e6,
}


# -- eqs. (3)-(8) ------------------------------------------------------------------------


def test_compute_latency_is_M_d_over_f():
    J = compute_latency([1.0, 2.0, 4.0], [1.0, 2.0], local_iterations=3)
    np.testing.assert_allclose(J, [[3.0, 6.0, 12.0], [1.5, 3.0, 6.0]], rtol=1e-15)


def test_spectral_efficiency_is_log2_one_plus_snr():
    np.testing.assert_allclose(spectral_efficiency([0.0, 1.0, 3.0, 1023.0]), [0, 1, 2, 10])


def test_upload_latency_is_S_over_B_r():
    np.testing.assert_allclose(upload_latency(8e6, [1e6, 2e6], [2.0, 4.0]), [4.0, 1.0])


def test_device_and_round_latency():
    J = [[1.0, 2.0], [3.0, 5.0], [0.5, 0.7]]
    r = [1.0, 2.0, 1.0]
    # block 1 -> device 2, block 2 -> device 0; device 1 idle
    T = device_latency(J, r, 2.0, [2, 0], [4.0, 0.0, 1.0])
    np.testing.assert_allclose(T, [2.0 + 2.0 / 4.0, 0.0, 0.5 + 2.0])
    assert round_latency(J, r, 2.0, [2, 0], [4.0, 0.0, 1.0]) == pytest.approx(2.5)


# -- the instance contract ----------------------------------------------------------------


def test_valid_instance_fields_and_shapes():
    inst = Instance.from_mapping({**VALID, "names": ["a", "b", "c"], "comment": "ignored"})
    assert (inst.num_devices, inst.num_blocks) == (3, 2)
    assert inst.is_monotone
    assert inst.block_bits == 1e6 and inst.bandwidth == 2e6
    assert inst.to_dict() == VALID
    with pytest.raises(ValueError):
        inst.J[0, 0] = 9.0  # stored read-only


def test_accepts_numpy_arrays_and_ints():
    data = {k: np.asarray(v) if isinstance(v, list) else v for k, v in VALID.items()}
    data["device_memory"] = np.array([2, 1, 2])
    data["bandwidth"] = 2_000_000
    inst = Instance.from_mapping(data)
    assert inst.to_dict() == VALID


def test_latency_matrix_equal_bandwidth():
    inst = Instance.from_mapping(VALID)
    # B/L = 1e6 Hz; upload term S / (1e6 r_k) = 1/r_k
    np.testing.assert_allclose(
        inst.latency_matrix(), [[2.0, 3.0], [2.0, 3.5], [2.25, 2.75]], rtol=1e-15
    )
    assert inst.equal_bandwidth() == 1e6


@pytest.mark.parametrize(
    ("J", "b", "monotone"),
    [
        ([[1, 2], [1, 1], [0, 5]], [1, 1], True),
        ([[1, 2], [2, 1], [0, 5]], [1, 1], False),  # a row decreases
        ([[1, 2], [1, 2], [0, 5]], [2, 1], False),  # block memory decreases
    ],
)
def test_is_monotone(J, b, monotone):
    inst = Instance.from_mapping({**VALID, "J": J, "block_memory": b})
    assert inst.is_monotone is monotone


def test_from_json_round_trip(tmp_path):
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(VALID))
    assert Instance.from_json(path).to_dict() == VALID


def test_from_json_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInstanceError, match="JSON") as info:
        Instance.from_json(path)
    assert info.value.field == "file"


def test_from_json_missing_file(tmp_path):
    with pytest.raises(InvalidInstanceError) as info:
        Instance.from_json(tmp_path / "nope.json")
    assert info.value.field == "file"


def _with(**changes):
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return data


_DROP = object()
NAN, INF = float("nan"), float("inf")

MALFORMED = {
    # missing keys
    **{f"missing-{k}": (_with(**{k: _DROP}), k) for k in VALID},
    # J: shape and values
    "J-ragged": (_with(J=[[1.0, 2.0], [1.0], [2.0, 3.0]]), "J"),
    "J-1d": (_with(J=[1.0, 2.0, 3.0]), "J"),
    "J-3d": (_with(J=[[[1.0, 2.0]], [[1.0, 2.0]], [[1.0, 2.0]]]), "J"),
    "J-empty": (_with(J=[]), "J"),
    "J-empty-rows": (_with(J=[[], [], []]), "J"),
    "J-nan": (_with(J=[[1.0, NAN], [1.5, 3.0], [2.0, 2.5]]), "J"),
    "J-nan-middle": (_with(J=[[1.0, NAN, 3.0]] * 3, block_memory=[1, 2, 3]), "J"),
    "J-inf": (_with(J=[[1.0, 2.0], [1.5, INF], [2.0, 2.5]]), "J"),
    "J-inf-middle": (_with(J=[[1.0, INF, 3.0]] * 3, block_memory=[1, 2, 3]), "J"),
    "J-negative": (_with(J=[[-1.0, 2.0], [1.5, 3.0], [2.0, 2.5]]), "J"),
    "J-negative-nonmonotone": (_with(J=[[1.0, 2.0], [1.5, -3.0], [2.0, 2.5]]), "J"),
    "J-string": (_with(J="[[1, 2]]"), "J"),
    "J-string-entry": (_with(J=[["a", 2.0], [1.5, 3.0], [2.0, 2.5]]), "J"),
    "J-bool-entry": (_with(J=[[True, 2.0], [1.5, 3.0], [2.0, 2.5]]), "J"),
    "J-null": (_with(J=None), "J"),
    "J-dict": (_with(J={"a": 1}), "J"),
    "L-greater-than-K": (
        _with(
            J=[[1.0, 2.0, 3.0]] * 2,
            block_memory=[1, 1, 1],
            device_memory=[2, 2],
            spectral_efficiency=[1, 1],
        ),
        "J",
    ),
    # block_memory
    "block_memory-short": (_with(block_memory=[1.0]), "block_memory"),
    "block_memory-long": (_with(block_memory=[1.0, 2.0, 3.0]), "block_memory"),
    "block_memory-negative": (_with(block_memory=[-1.0, 2.0]), "block_memory"),
    "block_memory-nan": (_with(block_memory=[NAN, 2.0]), "block_memory"),
    "block_memory-inf": (_with(block_memory=[1.0, INF]), "block_memory"),
    "block_memory-bool": (_with(block_memory=[True, 2.0]), "block_memory"),
    "block_memory-scalar": (_with(block_memory=1.0), "block_memory"),
    # device_memory
    "device_memory-short": (_with(device_memory=[2.0, 1.0]), "device_memory"),
    "device_memory-negative": (_with(device_memory=[2.0, -1.0, 2.0]), "device_memory"),
    "device_memory-nan": (_with(device_memory=[2.0, NAN, 2.0]), "device_memory"),
    "device_memory-inf": (_with(device_memory=[2.0, INF, 2.0]), "device_memory"),
    "device_memory-string": (_with(device_memory="2 1 2"), "device_memory"),
    "device_memory-bool": (_with(device_memory=[2.0, False, 2.0]), "device_memory"),
    "device_memory-numpy-bool": (_with(device_memory=np.ones(3, dtype=bool)), "device_memory"),
    "block_memory-tuple-bool": (_with(block_memory=(True, 2.0)), "block_memory"),
    # spectral_efficiency
    "r-zero": (_with(spectral_efficiency=[1.0, 0.0, 4.0]), "spectral_efficiency"),
    "r-negative": (_with(spectral_efficiency=[1.0, -2.0, 4.0]), "spectral_efficiency"),
    "r-nan": (_with(spectral_efficiency=[1.0, NAN, 4.0]), "spectral_efficiency"),
    "r-inf": (_with(spectral_efficiency=[1.0, INF, 4.0]), "spectral_efficiency"),
    "r-long": (_with(spectral_efficiency=[1.0, 2.0, 4.0, 1.0]), "spectral_efficiency"),
    # scalars
    "bandwidth-zero": (_with(bandwidth=0.0), "bandwidth"),
    "bandwidth-negative": (_with(bandwidth=-1e6), "bandwidth"),
    "bandwidth-nan": (_with(bandwidth=NAN), "bandwidth"),
    "bandwidth-inf": (_with(bandwidth=INF), "bandwidth"),
    "bandwidth-string": (_with(bandwidth="2e6"), "bandwidth"),
    "bandwidth-bool": (_with(bandwidth=True), "bandwidth"),
    "bandwidth-list": (_with(bandwidth=[2e6]), "bandwidth"),
    "bandwidth-null": (_with(bandwidth=None), "bandwidth"),
    "block_bits-zero": (_with(block_bits=0), "block_bits"),
    "block_bits-negative": (_with(block_bits=-5.0), "block_bits"),
    "block_bits-inf": (_with(block_bits=INF), "block_bits"),
    "block_bits-string": (_with(block_bits="1e6"), "block_bits"),
}


@pytest.mark.parametrize(("data", "field"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_instance_names_the_field(data, field):
    with pytest.raises(InvalidInstanceError, match=rf"^{field}\b") as info:
        Instance.from_mapping(data)
    assert info.value.field == field
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data", [[1, 2, 3], "instance", None, 42])
def test_non_mapping_instance(data):
    with pytest.raises(InvalidInstanceError, match="instance"):
        Instance.from_mapping(data)


def test_invalid_instance_error_is_a_value_error():
    with pytest.raises(ValueError):
        Instance.from_mapping(_with(bandwidth=0.0))


# -- C1-C3 and the bandwidth budget -------------------------------------------------------


@pytest.fixture
def inst():
    return Instance.from_mapping(VALID)


def test_check_allocation_accepts_a_valid_allocation(inst):
    check_allocation(inst, [1, 0], [1e6, 1e6, 0.0])
    check_allocation(inst, [0, 2], [0.5e6, 0.0, 1.5e6])
    check_allocation(inst, np.array([2, 0], dtype=np.int64), [1e6, 0.0, 1e6 * (1 + 1e-12)])


@pytest.mark.parametrize(
    ("assignment", "bandwidth", "match"),
    [
        ([0], [1e6, 1e6, 0.0], "C1"),  # a block left out
        ([0, 1, 2], [1e6, 1e6, 0.0], "C1"),  # too many entries
        ([0, 3], [1e6, 0.0, 0.0], "C1"),  # no device 3
        ([-1, 0], [1e6, 0.0, 0.0], "C1"),
        ([0.0, 2.0], [1e6, 0.0, 1e6], "C1"),  # not integers
        ([0, 0], [2e6, 0.0, 0.0], "C2"),  # one device, two blocks
        ([0, 1], [1e6, 1e6, 0.0], "C3"),  # device 1 (memory 1) cannot hold block 2 (memory 2)
        ([1, 0], [1e6, 1e6], "bandwidth"),  # wrong length
        ([1, 0], [1.5e6, 1e6, 0.0], "bandwidth"),  # over budget
        ([1, 0], [1e6, 1e6, -0.5], "bandwidth"),  # negative
        ([1, 0], [1e6, NAN, 0.0], "bandwidth"),
        ([1, 0], [0.0, 1e6, 1e6], "bandwidth"),  # scheduled device 0 gets nothing
    ],
)
def test_check_allocation_rejects(inst, assignment, bandwidth, match):
    with pytest.raises(ValueError, match=match):
        check_allocation(inst, assignment, bandwidth)


def test_memory_mask(inst):
    # b = [1, 2], device memory = [2, 1, 2]
    np.testing.assert_array_equal(inst.memory_ok, [[True, True], [True, False], [True, True]])


def test_instance_device_latency_matches_eq7(inst):
    T = inst.device_latency([1, 0], [0.5e6, 1.5e6, 0.0])
    expected = [2.0 + 1e6 / (0.5e6 * 1.0), 1.5 + 1e6 / (1.5e6 * 2.0), 0.0]
    np.testing.assert_allclose(T, expected, rtol=1e-15)
    assert math.isclose(max(expected), 4.0)
