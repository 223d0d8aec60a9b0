"""Real devices, real clock: self-profiling, reply validation of profiles, link estimation,
the measured instance, wall-clock accounting and the testbed summary (no root needed)."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from loladeft.exceptions import InvalidReply
from loladeft.runtime import protocol
from loladeft.runtime.wallclock import LinkBook, RoundRecord, measured_instance


# ------------------------------------------------------------------ reply validation
def _profile_reply(**changes):
    rec = {"seconds": [0.1, 0.2, 0.3], "memory-bytes": [1e6, 2e6, 3e6], "available-bytes": 5e9}
    rec.update(changes)
    return {protocol.PROFILE: rec}


def test_read_profile_accepts_a_valid_profile():
    seconds, memory, available = protocol.read_profile(_profile_reply(), 3)
    assert seconds == [0.1, 0.2, 0.3] and memory == [1e6, 2e6, 3e6] and available == 5e9


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"seconds": [0.1, 0.2]}, "seconds: must list L = 3 numbers, got 2"),
        ({"seconds": [0.1, math.nan, 0.3]}, r"seconds\[1\]: nan is not a finite number"),
        ({"seconds": [0.1, -0.2, 0.3]}, r"seconds\[1\]: -0.2 is not a finite number"),
        ({"seconds": [0.1, 0.0, 0.3]}, r"seconds\[1\]: 0.0 is not a finite number"),
        ({"seconds": [0.1, True, 0.3]}, r"seconds\[1\]: must be a number"),
        ({"memory-bytes": [1e6, math.inf, 3e6]}, r"memory-bytes\[1\]: inf is not a finite"),
        ({"memory-bytes": "1,2,3"}, "memory-bytes: must list L = 3 numbers"),
        ({"available-bytes": 0.0}, "available-bytes: 0.0 is not a positive number"),
        ({"available-bytes": math.nan}, "available-bytes: nan is not a finite number"),
    ],
)
def test_read_profile_rejects_bad_fields(changes, words):
    with pytest.raises(InvalidReply, match=words):
        protocol.read_profile(_profile_reply(**changes), 3)


def test_read_profile_and_handle_seconds_missing_or_bad():
    with pytest.raises(InvalidReply, match="profile: missing"):
        protocol.read_profile({}, 3)
    rec = _profile_reply()[protocol.PROFILE]
    del rec["available-bytes"]
    with pytest.raises(InvalidReply, match="profile: missing 'available-bytes'"):
        protocol.read_profile({protocol.PROFILE: rec}, 3)
    assert protocol.read_handle_seconds({protocol.STATE: {}}, protocol.STATE) is None
    assert protocol.read_handle_seconds({protocol.STATE: {"handle-seconds": 0.5}}, "state") == 0.5
    with pytest.raises(InvalidReply, match=r"handle-seconds: -1\.0 is not a finite"):
        protocol.read_handle_seconds({protocol.RESULT: {"handle-seconds": -1.0}}, "result")


# ------------------------------------------------------------------ link estimation
def test_link_book_messaging_and_transfer_by_hand():
    book = LinkBook(2, bandwidth=1e6, alpha=0.5)
    assert book.messaging(0) == 0.0
    book.observe_message(0, elapsed=0.30, handle=0.10)  # l0 = 0.2 (first reading as is)
    book.observe_message(0, elapsed=0.50, handle=0.10)  # 0.5 * 0.4 + 0.5 * 0.2 = 0.3
    assert book.messaging(0) == pytest.approx(0.3)
    # 1 MB moved in 2.0 - 0.5 - 0.3 = 1.2 s over a plain link of B = 1 MHz
    t = book.transfer_time(0, elapsed=2.0, handle=0.5)
    assert t == pytest.approx(1.2)
    book.observe_transfer(0, 1_000_000, t, 1e6)
    assert book.rate_term(0) == pytest.approx(8e6 / 1.2 / 1e6)
    assert book.rate_term(1) is None
    # plain link: device 1 has no reading and takes the median of the others
    r = book.spectral_efficiency()
    assert r[0] == r[1] == pytest.approx(8 / 1.2)
    # testbed: readings are rho = measured / shaped goodput; r = rho x the round's draw
    tb = LinkBook(2, bandwidth=1e6, alpha=1.0)
    tb.observe_transfer(0, 100_000, 1.0, 1e6)  # 0.8 Mbit/s over a 1 Mbit/s shaped link
    assert tb.spectral_efficiency([2.0, 3.0]) == pytest.approx([1.6, 3.0])
    # a transfer faster than the messaging latency gives no reading
    tb.observe_transfer(1, 100_000, 0.0, 1e6)
    assert tb.rate_term(1) is None


def test_link_estimate_of_a_shaped_transfer_recovers_the_rate():
    """A device that uploads 400 kB at a shaped 2 Mbit/s behind a 0.25 s messaging latency:
    the estimate recovers the shaped rate term (rho = 1 at the testbed, r = R / B plain)."""
    rng = np.random.default_rng(1)
    book = LinkBook(1, bandwidth=10e6, alpha=0.5)
    for _ in range(5):
        handle = rng.uniform(0.5, 2.0)
        book.observe_message(0, elapsed=0.25 + 0.01 + rng.uniform(0, 0.002), handle=0.01)
        elapsed = handle + 0.25 + 400_000 * 8 / 2e6
        t = book.transfer_time(0, elapsed, handle)
        book.observe_transfer(0, 400_000, t, 10e6)
    assert book.rate_term(0) * 10e6 == pytest.approx(2e6, rel=0.01)


# ------------------------------------------------------------------ measured instance
def test_measured_instance_from_profiles():
    from loladeft.profiling.selfprofile import DeviceProfile

    profiles = {
        0: DeviceProfile((1.0, 2.0, 3.0), (10.0, 20.0, 30.0), 25.0, 3),
        2: DeviceProfile((2.0, 1.5, 4.0), (10.0, 21.0, 29.0), 100.0, 3),  # noisy dip at l=2
    }
    inst = measured_instance(
        profiles,
        np.array([1.0, 2.0, 3.0, 4.0]),
        num_devices=4,
        num_blocks=3,
        block_bits=8e6,
        bandwidth=1e6,
    )
    assert inst.J.tolist() == [[1, 2, 3], [2, 2, 4], [2, 2, 4], [2, 2, 4]]
    assert inst.block_memory.tolist() == [10, 21, 30]  # the largest need per depth
    assert inst.device_memory.tolist() == [25, 0, 100, 0]  # silent devices: unschedulable
    assert inst.spectral_efficiency.tolist() == [1, 2, 3, 4]
    assert inst.is_monotone


def test_measured_instance_schedules_like_the_hand_worked_optimum():
    """Two blocks, two devices that each fit everything: device 0 computes fast, device 1
    uploads fast. Both assignments by hand (equal split, B_k = 1 Hz, S = 8 bit):
    d0->l1, d1->l2: max(1 + 8/1, 3 + 8/4) = 9; d1->l1, d0->l2: max(2 + 8/4, 2 + 8/1) = 10.
    ba (equal bandwidth) on the measured instance must pick the first."""
    from loladeft.allocation.registry import solve
    from loladeft.profiling.selfprofile import DeviceProfile

    profiles = {
        0: DeviceProfile((1.0, 2.0), (1.0, 1.0), 5.0, 3),
        1: DeviceProfile((2.0, 3.0), (1.0, 1.0), 5.0, 3),
    }
    inst = measured_instance(
        profiles, np.array([1.0, 4.0]), num_devices=2, num_blocks=2, block_bits=8.0, bandwidth=2.0
    )
    res = solve(inst, "ba")
    assert list(res.assignment) == [0, 1]
    assert res.latency == pytest.approx(9.0)


# ------------------------------------------------------------------ accounting
def test_round_record_overhead_by_hand():
    rec = RoundRecord(3, predicted_s=4.0, measured_s=5.0)
    rec.rows = [
        {"compute_s": 1.0, "transfer_s": 2.5, "delivered": 1},
        {"compute_s": 3.0, "transfer_s": 1.2, "delivered": 1},  # slowest: 4.2
        {"compute_s": math.nan, "transfer_s": math.nan, "delivered": 0},
    ]
    assert rec.overhead_s == pytest.approx(0.8)
    assert rec.columns() == {
        "predicted_latency_s": 4.0,
        "measured_latency_s": 5.0,
        "overhead_s": pytest.approx(0.8),
    }
    assert math.isnan(RoundRecord(1, 1.0).overhead_s)


def test_metrics_csv_adds_the_wallclock_columns_for_the_driver_only():
    from loladeft.config import load_config
    from loladeft.training.engine import RoundLog
    from loladeft.training.run import CSV_COLUMNS, metric_rows

    assert CSV_COLUMNS[-3:] == ("predicted_latency_s", "measured_latency_s", "overhead_s")
    assert CSV_COLUMNS[:11] == (
        "round",
        "scheme",
        "mode",
        "sim_time_s",
        "round_latency_s",
        "train_loss",
        "metric",
        "metric_name",
        "metrics",
        "feasible",
        "wall_s",
    )
    cfg = load_config(None, {"train.task": "sst2", "train.shared_schemes": ["jbba", "ba"]})
    wc = {"predicted_latency_s": 1.5, "measured_latency_s": 2.0, "overhead_s": 0.25}
    logs = [
        RoundLog(1, 0.5, {"jbba": 1.5, "ba": 2.5}, {"jbba": 1.5, "ba": 2.5}, 0.1, wallclock=wc),
        RoundLog(2, 0.4, {"jbba": 1.0, "ba": 2.0}, {"jbba": 2.5, "ba": 4.5}, 0.1),
    ]
    rows = metric_rows(cfg, logs)
    assert [r["scheme"] for r in rows] == ["jbba", "ba", "jbba", "ba"]
    assert (rows[0]["predicted_latency_s"], rows[0]["measured_latency_s"]) == ("1.5", "2.0")
    assert rows[0]["overhead_s"] == "0.25"
    assert rows[1]["measured_latency_s"] == rows[2]["measured_latency_s"] == ""


# ------------------------------------------------------------------ available memory
def test_cgroup_free_bytes_reads_v1_and_v2(tmp_path):
    from loladeft.profiling.selfprofile import cgroup_free_bytes

    v1 = tmp_path / "v1"
    (v1 / "memory" / "dev").mkdir(parents=True)
    (v1 / "memory" / "dev" / "memory.limit_in_bytes").write_text("1000000\n")
    (v1 / "memory" / "dev" / "memory.usage_in_bytes").write_text("700000\n")
    (v1 / "memory" / "dev" / "memory.stat").write_text("cache 5\ntotal_inactive_file 100000\n")
    proc = tmp_path / "cgroup1"
    proc.write_text("0::/\n5:memory:/dev\n4:cpu,cpuacct:/dev\n")
    assert cgroup_free_bytes(proc, v1) == 400000.0  # 1e6 - 7e5 + 1e5 reclaimable
    v2 = tmp_path / "v2"
    (v2 / "dev").mkdir(parents=True)
    (v2 / "dev" / "memory.max").write_text("max\n")
    proc2 = tmp_path / "cgroup2"
    proc2.write_text("0::/dev\n")
    assert cgroup_free_bytes(proc2, v2) is None  # no limit
    (v2 / "dev" / "memory.max").write_text("2000\n")
    (v2 / "dev" / "memory.current").write_text("1500\n")
    (v2 / "dev" / "memory.stat").write_text("anon 1\ninactive_file 200\n")
    assert cgroup_free_bytes(proc2, v2) == 700.0


# ------------------------------------------------------------------ self-profiling
@pytest.mark.torch
def test_self_profile_is_monotone_in_depth_and_follows_the_flop_counts(tiny):
    """The measured row of J rises with depth as the profiler's FLOP counts do (each deeper
    truncation back-propagates through one more block), and the memory of each depth rises
    by the saved activations of one more block; the stream is not consumed."""
    pytest.importorskip("peft")
    from loladeft.config import load_config
    from loladeft.profiling import profiler
    from loladeft.profiling.selfprofile import linear_fit, self_profile
    from loladeft.training.engine import Trainer

    cfg = load_config(
        None,
        {
            "train.task": "sst2",
            "train.model": tiny["model"],
            "train.data_dir": tiny["data_dir"],
            "scenario.profile": tiny["profile"],
            "scenario.num_devices": 3,
            "scenario.local_iterations": 2,
            "train.batch": 128,
        },
    )
    trainer = Trainer(cfg).setup(dev=False)
    prof = self_profile(trainer, 1, repeats=5)
    assert trainer.streams[1].consumed == 0
    L = trainer.num_blocks
    assert len(prof.seconds) == len(prof.memory_bytes) == L
    assert all(b > a for a, b in zip(prof.seconds, prof.seconds[1:], strict=False)), prof
    assert all(b > a for a, b in zip(prof.memory_bytes, prof.memory_bytes[1:], strict=False))
    assert 0 < prof.available_bytes < 1e15

    from loladeft import models
    from loladeft.config import LoraSettings

    spec = models.resolve(tiny["model"])
    model = models.build(spec, LoraSettings(dropout=0.0, targets=("query", "value")))
    for p in model.parameters():
        p.requires_grad_(False)
    lora = models.lora_blocks(model)
    batch = profiler.make_batch(spec, model, 8, 8, meta=False)
    flops = [profiler.measure_depth(model, lora, d, batch).flops for d in range(1, L + 1)]
    assert all(b > a for a, b in itertools.pairwise(flops))
    assert np.corrcoef(prof.seconds, flops)[0, 1] > 0.9
    a, c, r2 = linear_fit(prof.seconds)  # identical blocks: d(l) = a + c l (the paper's model)
    assert a > 0 and c > 0 and r2 > 0.8


def test_linear_fit_by_hand():
    from loladeft.profiling.selfprofile import linear_fit

    a, c, r2 = linear_fit([3.0, 5.0, 7.0, 9.0])  # d(l) = 1 + 2 l
    assert (a, c, r2) == pytest.approx((1.0, 2.0, 1.0))
    with pytest.raises(ValueError, match="two or more"):
        linear_fit([1.0])


# ------------------------------------------------------------------ testbed (pure parts)
def test_draw_edge_maps_the_scenario_onto_the_testbed():
    from loladeft.config import load_config
    from loladeft.runtime.testbed_federation import draw_edge

    cfg = load_config(None, {"train.task": "mrpc", "train.batch": 8}, command="testbed")
    edge = draw_edge(cfg)
    f, cores = np.array(edge.compute_factor), np.array(edge.cpu_cores)
    assert cores.sum() == pytest.approx(cfg.testbed.cpu_budget)
    assert cores / cores.sum() == pytest.approx(f / f.sum())  # proportional to f_k
    m, head = np.array(edge.memory_drawn_bytes), np.array(edge.headroom_bytes)
    assert head == pytest.approx(edge.phi * m)
    # the upper-quartile device just holds the deepest block: the wall binds below it
    from loladeft.profiling.profile import load_profile

    deepest = load_profile("minilm").depths[-1]
    need = deepest.activation_bytes * 8 / load_profile("minilm").batch
    need += 2 * deepest.block_param_bytes
    assert float(np.quantile(head, 0.75)) == pytest.approx(need)
    assert (head < need).sum() >= 2


def _write_run(folder: Path, scheme: str, rounds: list[tuple], devices: list[tuple]) -> None:
    from loladeft.training.run import CSV_COLUMNS

    folder.mkdir(parents=True)
    with (folder / "metrics.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS)
        w.writeheader()
        w.writerow({"round": 0, "scheme": scheme, "metric": "0.5"})
        for n, pred, meas, over, metric in rounds:
            w.writerow(
                {
                    "round": n,
                    "scheme": scheme,
                    "metric": metric,
                    "predicted_latency_s": pred,
                    "measured_latency_s": meas,
                    "overhead_s": over,
                }
            )
    from loladeft.runtime.wallclock import DEVICE_COLUMNS

    with (folder / "wallclock.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, DEVICE_COLUMNS)
        w.writeheader()
        for n, k, compute, transfer in devices:
            w.writerow(
                {"round": n, "device": k, "compute_s": compute, "transfer_s": transfer}
                | {"delivered": 1}
            )


def test_summary_of_two_schemes_by_hand(tmp_path):
    from loladeft.runtime.testbed_federation import summarize

    _write_run(
        tmp_path / "ba",
        "ba",
        [(1, 4.0, 5.0, 0.5, ""), (2, 4.0, 4.0, 0.2, "0.7"), (3, 6.0, 5.0, 0.5, "0.8")],
        [(1, 0, 3.0, 1.0), (1, 1, 1.0, 1.0), (2, 0, 2.0, 2.0), (3, 0, 1.0, 3.0)],
    )
    _write_run(
        tmp_path / "jbba",
        "jbba",
        [(1, 2.0, 2.0, 0.1, ""), (2, 3.0, 2.5, 0.1, "0.75")],
        [(1, 0, 1.0, 1.0), (2, 0, 2.0, 0.5)],
    )
    s = summarize(tmp_path, ["ba", "jbba"])
    ba, jb = s["schemes"]["ba"], s["schemes"]["jbba"]
    assert ba["measured_mean_s"] == pytest.approx(14 / 3)
    assert ba["measured_median_s"] == 5.0
    assert ba["predicted_mean_s"] == pytest.approx(14 / 3)
    # |4-5|/5 = 0.2, 0, |6-5|/5 = 0.2 -> median 0.2
    assert ba["prediction_error_median"] == pytest.approx(0.2)
    assert ba["overhead_share_median"] == pytest.approx(0.1)  # 0.1, 0.05, 0.1
    # the critical device's compute share per round: 3/4, 2/4, 1/4 -> median 0.5
    assert ba["compute_share_of_critical_device"] == pytest.approx(0.5)
    # target: the lower of the best metrics (0.8, 0.75) = 0.75; wall clock to reach it
    assert s["target_metric"] == 0.75
    assert ba["time_to_target_s"] == pytest.approx(14.0)
    assert jb["time_to_target_s"] == pytest.approx(4.5)
    assert s["order_by_measured"] == s["order_by_predicted"] == ["jbba", "ba"]
    assert s["orders_agree"] is True
    assert json.loads((tmp_path / "summary.json").read_text())["target_metric"] == 0.75
    assert (tmp_path / "summary.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--schemes", "jbba,fastest"], "schemes: unknown scheme 'fastest'"),
        (["--schemes", "jbba,jbba"], "schemes: a scheme is named twice"),
        (["--nodes", "2"], "is smaller than the L = 6 blocks"),
        (["--device-model", "guess"], "scenario.device_model: input should be"),
    ],
)
def test_testbed_command_refuses_bad_input_in_one_line(tmp_path, argv, words):
    from typer.testing import CliRunner

    from loladeft.cli.app import app

    glue = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue"
    if not glue.is_dir():
        pytest.skip("needs ../shared/data/glue")
    full = ["testbed", "--task", "mrpc", "--data-dir", str(glue)]
    result = CliRunner().invoke(app, [*full, "--out", str(tmp_path / "o"), *argv])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("loladeft: ") and words in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_profile_file_round_trip_and_refusal(tmp_path):
    from loladeft.profiling.selfprofile import DeviceProfile, load_profile, save_profile

    prof = DeviceProfile((1.0, 2.0), (10.0, 20.0), 5.0, 3, (0.1, 0.2), 4.0, "cpu")
    save_profile(prof, tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert (back.seconds, back.memory_bytes, back.repeats) == ((1.0, 2.0), (10.0, 20.0), 3)
    assert back.available_bytes > back.resident_bytes == 4.0  # read anew, weights added
    data = json.loads((tmp_path / "p.json").read_text())
    data["seconds"] = [1.0, float("nan")]
    (tmp_path / "q.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a valid self-profile"):
        load_profile(tmp_path / "q.json")


def test_pullers_keep_a_slow_reply_from_holding_back_a_fast_one():
    """Flower's pull fetches listed replies one after another and blocks on one whose arrays
    are still uploading: each reply pulled on its own arrives when it lands."""
    import threading
    import time
    from types import SimpleNamespace

    from loladeft.runtime.server import Pullers

    t0 = time.monotonic()
    lock = threading.Lock()

    class Grid:
        def pull_messages(self, ids):
            out = []
            for mid in ids:
                if mid == "slow":
                    time.sleep(0.3)  # its arrays still on their way
                    if time.monotonic() - t0 < 1.0:
                        continue
                with lock:
                    out.append(SimpleNamespace(id=mid))
            return out

    pullers = Pullers(SimpleNamespace(grid=Grid(), poll_interval=0.01))
    pullers.watch("slow")
    pullers.watch("fast")
    got = {}
    while len(got) < 2 and time.monotonic() - t0 < 5:
        for mid, reply, arrived in pullers.drain(0.05):
            assert reply.id == mid
            got[mid] = arrived - t0
    pullers.close()
    assert got["fast"] < 0.2 and got["slow"] >= 1.0
