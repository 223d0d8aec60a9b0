"""Tests of the torch-free profile format and the analytic formulas."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loladeft.exceptions import InputError, LoladeftError
from loladeft.profiling import InvalidProfileError, Profile, load_profile
from loladeft.profiling.analytic import (
    SHAPES,
    analytic_profile,
    block_forward_flops,
    lora_params_per_block,
)


@pytest.mark.parametrize(
    ("name", "blocks", "bits"), [("roberta-base", 12, 786432), ("minilm", 6, 393216)]
)
def test_builtin_profiles_load(name: str, blocks: int, bits: int) -> None:
    p = load_profile(name)
    assert p.num_blocks == blocks
    assert p.block_bits == bits
    assert [d.depth for d in p.depths] == list(range(1, blocks + 1))
    # d(l) and b(l) increase with depth (the monotone property CRUNCH relies on)
    assert np.all(np.diff(p.flops) > 0)
    assert np.all(np.diff(p.memory_bytes) > 0)


def test_roberta_lora_params_match_paper() -> None:
    # Sec. VI-A: rank 8 on query and value, 24576 tunable parameters per block
    assert lora_params_per_block(SHAPES["roberta-base"], 8, ("query", "value")) == 24576


def test_forward_flops_match_hand_count() -> None:
    # one RoBERTa-base block, b=32, s=128: 4 H^2 + 2 H I matmuls per token, 2 S H attention
    t, h, i, s = 32 * 128, 768, 3072, 128
    hand = 2 * t * (4 * h * h + 2 * h * i) + 4 * t * s * h + 2 * (2 * t * 8 * (h + h))
    assert block_forward_flops(SHAPES["roberta-base"], 32, 128, 8, ("query", "value")) == hand


def test_roundtrip(tmp_path) -> None:
    p = analytic_profile("minilm", batch=4, seq=16)
    path = p.to_json(tmp_path / "p.json")
    q = load_profile(path)
    assert q == p
    np.testing.assert_array_equal(q.activation_bytes, p.activation_bytes)


def _bad(tmp_path, mutate) -> str:
    data = analytic_profile("minilm", batch=4, seq=16).to_dict()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidProfileError) as info:
        load_profile(path)
    assert isinstance(info.value, LoladeftError)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_errors_name_the_field(tmp_path) -> None:
    assert "depths[2].flops" in _bad(tmp_path, lambda d: d["depths"][2].__setitem__("flops", -1))
    assert "batch" in _bad(tmp_path, lambda d: d.__setitem__("batch", 0))
    assert "dtype" in _bad(tmp_path, lambda d: d.__setitem__("dtype", "fp8"))
    assert "depths[1].depth" in _bad(tmp_path, lambda d: d["depths"][1].__setitem__("depth", 5))
    assert "block_bits" in _bad(tmp_path, lambda d: d.pop("block_bits"))
    assert "depths[0].weight_bytes" in _bad(
        tmp_path, lambda d: d["depths"][0].__setitem__("weight_bytes", "x")
    )


def test_not_json_and_missing(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(InvalidProfileError, match="not valid JSON"):
        load_profile(path)
    with pytest.raises(InputError, match="neither a builtin"):
        load_profile("no-such-model")


def test_profile_is_frozen() -> None:
    p = load_profile("minilm")
    with pytest.raises(AttributeError):
        p.batch = 3  # type: ignore[misc]
    assert isinstance(p, Profile)


@pytest.mark.parametrize("name", ["roberta-base", "minilm"])
def test_shipped_profiles_agree_with_analytic(name: str) -> None:
    # the shipped files are measured by `loladeft profile`; the closed form must reproduce them
    shipped = load_profile(name)
    ana = analytic_profile(name)
    np.testing.assert_array_equal(shipped.flops, ana.flops)
    np.testing.assert_array_equal(shipped.activation_bytes, ana.activation_bytes)
    np.testing.assert_array_equal(shipped.weight_bytes, ana.weight_bytes)
    np.testing.assert_array_equal(shipped.block_param_bytes, ana.block_param_bytes)
    assert shipped.block_bits == ana.block_bits
