"""Tests of the testbed's pure parts: rate mapping, CPU split, names, link estimation and the
probe format (no root needed; the Linux parts are in test_testbed_linux.py)."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest

from loladeft.system.latency import upload_latency
from loladeft.testbed import DeviceSpec, Testbed, TestbedError, cgroups, shaping
from loladeft.testbed.link import (
    LinkEstimator,
    ProbeError,
    receive_probe,
    send_probe,
    spectral_efficiency,
)
from loladeft.testbed.runs import device_name, parse_name, peer_name

# -- shaping: the model's rate mapped onto a shaped link --------------------------------------


def test_payload_scale_makes_emulated_upload_last_eq5():
    # A payload of P bytes at the shaped goodput scale * B_k * r_k lasts S / (B_k r_k).
    S, P = 3.2e6, 123_456
    B_k = np.array([1e5, 2.5e5, 7e5])
    r_k = np.array([1.5, 4.0, 9.25])
    rate = shaping.shaped_rate(B_k, r_k, shaping.payload_scale(S, P))
    np.testing.assert_allclose(8 * P / rate, upload_latency(S, B_k, r_k), rtol=1e-12)


def test_wire_rate_accounts_for_tcp_and_ethernet_headers():
    # MTU 1500: 1448 payload bytes per 1514-byte frame.
    assert shaping.wire_rate(1448e3) == pytest.approx(1514e3)
    assert shaping.goodput(shaping.wire_rate(5e6, 9000), 9000) == pytest.approx(5e6)
    assert shaping.goodput(1e6, 9000) == pytest.approx(1e6 * 8948 / 9014)


def test_tbf_parameters_quantise_to_bytes_and_size_bucket_and_queue():
    assert shaping.tbf_parameters(8e6) == (1_000_000, 16_384, 262_144)
    rate, burst, limit = shaping.tbf_parameters(1e9 + 3)
    assert rate == 125_000_000  # whole bytes per second
    assert burst == 500_000  # 4 ms at the rate
    assert limit == 12_500_000  # 0.1 s at the rate


@pytest.mark.parametrize(
    ("value", "match"),
    [(1.0, r"rate_bps: must be in \[8000, 1e\+10\]"), (float("nan"), "rate_bps: must be a number")],
    ids=["too-low", "nan"],
)
def test_tbf_parameters_refuse_bad_rates(value, match):
    with pytest.raises(ValueError, match=match):
        shaping.tbf_parameters(value)


def test_shaped_rate_refuses_bad_scale():
    with pytest.raises(ValueError, match="scale: must be a positive number"):
        shaping.shaped_rate(1e6, 2.0, scale=0.0)


# -- cgroups: CPU split -----------------------------------------------------------------------


def test_cpu_shares_follow_compute_factors_and_fit_the_budget():
    shares = cgroups.cpu_shares([1.0, 2.0, 5.0], cores=1.6)
    np.testing.assert_allclose(shares, [0.2, 0.4, 1.0])
    cgroups.check_cpu_budget(shares, 1.6)


def test_cpu_budget_is_enforced():
    with pytest.raises(ValueError, match=r"cpu_cores: quotas sum to 1.8 cores, over 1.6"):
        cgroups.check_cpu_budget([0.9, 0.9], 1.6)
    with pytest.raises(ValueError, match=r"cpu_cores\[1\]: must be at least 0.01"):
        cgroups.check_cpu_budget([0.5, 0.001], 1.6)
    with pytest.raises(ValueError, match="compute_factors: must be one or more positive"):
        cgroups.cpu_shares([1.0, -1.0])


# -- names ------------------------------------------------------------------------------------


def test_names_round_trip_and_fit_the_interface_name_limit():
    for k in (0, 7, 63):
        assert parse_name(device_name("0a9f", k)) == ("0a9f", k)
        assert parse_name(peer_name("0a9f", k)) == ("0a9f", k)
        assert len(peer_name("0a9f", k)) <= 15
    for other in (
        "lolatb",
        "lolatb-0a9f",
        "lolatb-0A9F-1",
        "lolatb-0a9f-1x",
        "eth0",
        "xlolatb-0a9f-1",
        "lolatb-0a9f-123",
    ):
        assert parse_name(other) is None
    with pytest.raises(ValueError, match=r"k: must be in \[0, 64\)"):
        device_name("0a9f", 64)


# -- link estimation --------------------------------------------------------------------------


def test_spectral_efficiency_inverts_eq4():
    # 1 MB in 2 s is 4 Mbit/s; with a 0.5 MHz share that is r = 8 bit/s/Hz; with a payload
    # scale of 2 (twice the model's bits sent) the model's rate term is half of that.
    assert spectral_efficiency(1_000_000, 2.0, 5e5) == pytest.approx(8.0)
    assert spectral_efficiency(1_000_000, 2.0, 5e5, scale=2.0) == pytest.approx(4.0)


def test_estimator_ewma_by_hand():
    est = LinkEstimator(alpha=0.25)
    with pytest.raises(ValueError, match="no transfer observed yet"):
        _ = est.spectral_efficiency
    assert est.observe(1_000_000, 1.0, 1e6) == pytest.approx(8.0)  # first reading as is
    assert est.observe(250_000, 1.0, 5e5) == pytest.approx(0.25 * 4 + 0.75 * 8)  # 7
    assert est.observe(3_000_000, 2.0, 2e6) == pytest.approx(0.25 * 6 + 0.75 * 7)  # 6.75
    assert est.readings == 3
    assert est.throughput(1e6) == pytest.approx(6.75e6)


def test_estimator_refuses_bad_input():
    with pytest.raises(ValueError, match=r"alpha: must be in \(0, 1\]"):
        LinkEstimator(alpha=0.0)
    est = LinkEstimator()
    with pytest.raises(ValueError, match="seconds: must be a positive finite number"):
        est.observe(10, 0.0, 1e6)
    with pytest.raises(ValueError, match="nbytes: must be a number, got bool"):
        est.observe(True, 1.0, 1e6)


def _pair():
    a, b = socket.socketpair()
    return a, b


def test_probe_round_trip_counts_the_bytes_after_the_first_chunk():
    a, b = _pair()
    with a, b:
        sender = threading.Thread(target=send_probe, args=(a, 3_000_000))
        sender.start()
        res = receive_probe(b, timeout=10)
        sender.join()
    assert 0 < res.nbytes < 3_000_000
    assert 3_000_000 - res.nbytes <= 65536  # only the first chunk is left out
    assert res.seconds > 0
    assert res.throughput_bps == pytest.approx(8 * res.nbytes / res.seconds)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (struct.pack("!8sQ", b"NOTAPROB", 10), "wrong magic"),
        (struct.pack("!8sQ", b"LOLAPRB1", 10**9), "announced 1000000000 bytes, accepted up to"),
        (struct.pack("!8sQ", b"LOLAPRB1", 100) + b"\0" * 10, "closed after 10 of 100 bytes"),
        (b"LOLA", "closed inside the header"),
    ],
    ids=["magic", "too-large", "short-payload", "short-header"],
)
def test_probe_receiver_refuses_malformed_probes(header, match):
    a, b = _pair()
    with b:
        a.sendall(header)
        a.close()
        with pytest.raises(ProbeError, match=match):
            receive_probe(b, max_bytes=1_000_000, timeout=5)


def test_probe_sender_refuses_bad_size():
    a, b = _pair()
    with a, b, pytest.raises(ValueError, match=r"nbytes: must be an integer in \(0, "):
        send_probe(a, 0)


# -- refusals: one clear error before anything is created --------------------------------------


def test_not_root_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match=r"^the testbed needs root \(network namespaces, tc"):
        Testbed([DeviceSpec(1e6)]).setup()


def test_missing_cgroup_controllers_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    with pytest.raises(TestbedError, match=r"^cgroup v1 cpu controller not mounted at "):
        cgroups.check_support()
