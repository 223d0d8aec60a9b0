"""The Monte-Carlo sweeps: latencies, seeds, infeasible rounds, CSV and manifest."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from loladeft.config import PAPER_PROFILE, PAPER_SCHEMES, Config, load_config
from loladeft.experiments.runner import (
    Z95,
    PointTask,
    point_seed,
    pool_size,
    run_tasks,
    simulate_point,
)
from loladeft.experiments.simulate import build_tasks, load_block_costs, run_simulation
from loladeft.experiments.sweeps import EXPERIMENTS
from loladeft.system.instance import check_allocation
from loladeft.system.latency import device_latency
from loladeft.system.scenario import BlockCosts, InvalidScenarioError, Scenario

SCHEMES = ("comm-aware", "comp-aware", "random", "ba", "jbba-dual", "jbba")


def tiny_profile(L: int = 4) -> SimpleNamespace:
    depths = [
        SimpleNamespace(
            depth=l,
            flops=2e11 * (1 + 0.3 * l),
            activation_bytes=0.5e9 * l,
            weight_bytes=0.5e9,
            block_param_bytes=2e5,
        )
        for l in range(1, L + 1)
    ]
    return SimpleNamespace(model="tiny", block_bits=786432, depths=depths)


@pytest.fixture(scope="module")
def costs() -> BlockCosts:
    return BlockCosts.from_profile(tiny_profile())


@pytest.fixture(scope="module")
def point(costs):
    sc = Scenario(costs, num_devices=8, snr_db=14.0, bandwidth_hz=20e6)
    return sc, simulate_point(sc, SCHEMES, 60, np.random.SeedSequence(5), keep_allocations=True)


def tiny_config(tmp_path, **over) -> Config:
    return load_config(
        None,
        {
            "rounds": 12,
            "workers": 1,
            "out": str(tmp_path / "out"),
            "sweeps.fig5": [0.0, 10.0],
            "sweeps.fig6": [50.0, 100.0],
            "sweeps.fig8": [4, 6],
            "scenario.num_devices": 6,
            **over,
        },
    )


def test_latency_equals_core_recomputation(point):
    """Each round's latency is max_k T_k of eq. (7)-(8) recomputed from the allocation, and
    the allocation satisfies C1-C3 and the bandwidth budget."""
    sc, res = point
    rounds = sc.sample(60, np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0]))
    assert res.assignment is not None and res.bandwidth is not None
    for i in range(60):
        inst = rounds.instance(i)
        for s in range(len(SCHEMES)):
            a, bw = res.assignment[s, i], res.bandwidth[s, i]
            check_allocation(inst, a, bw)
            T = device_latency(inst.J, inst.spectral_efficiency, inst.block_bits, a, bw)
            assert res.latency[s, i] == T.max()
            assert T.max() == inst.device_latency(a, bw).max()
            k = int(np.argmax(T))
            l = int(np.flatnonzero(a == k)[0])
            assert res.compute_share[s, i] == pytest.approx(inst.J[k, l] / T[k])


def test_scheme_order_on_every_round(point):
    """jbba <= ba (and <= jbba-dual); ba (optimal P1) <= every equal-bandwidth baseline."""
    _, res = point
    lat = dict(zip(SCHEMES, res.latency, strict=True))
    tol = 1e-9
    assert (lat["jbba"] <= lat["ba"] * (1 + tol)).all()
    assert (lat["jbba"] <= lat["jbba-dual"] * (1 + tol)).all()
    for base in ("comm-aware", "comp-aware", "random"):
        assert (lat["ba"] <= lat[base] * (1 + tol)).all()
    assert (lat["jbba"] < lat["ba"] * (1 - 1e-6)).any()  # the joint bandwidth matters


def test_stats_are_mean_and_normal_ci(point):
    _, res = point
    for s, st in enumerate(res.stats()):
        v = res.latency[s]
        assert st.mean_latency_s == pytest.approx(v.mean(), rel=1e-12)
        assert st.ci95_s == pytest.approx(Z95 * v.std(ddof=1) / math.sqrt(v.size), rel=1e-12)
        assert st.rounds == 60 and st.infeasible_rounds == 0


def test_infeasible_rounds_are_counted_and_excluded(costs):
    # block 4 needs 2.5 GB + 0.5 GB weights: with 0.5-3.2 GB devices some rounds hit the wall.
    sc = Scenario(costs, num_devices=5, memory_gb=(0.5, 3.2))
    res = simulate_point(sc, ("ba", "jbba", "comm-aware"), 200, 3)
    for s, st in enumerate(res.stats()):
        bad = np.isnan(res.latency[s])
        assert 0 < st.infeasible_rounds == bad.sum() < 200
        assert st.mean_latency_s == pytest.approx(res.latency[s, ~bad].mean())
    # every scheme is memory-aware: infeasible exactly when no allocation exists.
    assert np.array_equal(np.isnan(res.latency[0]), np.isnan(res.latency[1]))
    assert np.array_equal(np.isnan(res.latency[0]), np.isnan(res.latency[2]))


def test_seeds_reproduce_bit_for_bit_across_workers(costs):
    sc = Scenario(costs, num_devices=6)
    exp = EXPERIMENTS["fig5"]
    tasks = [
        PointTask(exp, i, x, exp.apply(sc, x), SCHEMES, 15, 99)
        for i, x in enumerate((0.0, 10.0, 20.0))
    ]
    one = run_tasks(tasks, workers=1).points["fig5"]
    two = run_tasks(tasks, workers=2).points["fig5"]
    again = run_tasks(tasks[1:2], workers=1).points["fig5"]
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a.latency, b.latency)
    assert np.array_equal(one[1].latency, again[0].latency)
    other = run_tasks([replace(tasks[1], seed=100)], workers=1).points["fig5"][0]
    assert not np.array_equal(one[1].latency, other.latency)


def test_point_seeds_differ_by_experiment_and_index():
    states = {
        point_seed(1, EXPERIMENTS[e], i).generate_state(2).tobytes()
        for e in EXPERIMENTS
        for i in range(3)
    }
    assert len(states) == 9


def test_build_tasks_validates_every_point(costs, tmp_path):
    cfg = tiny_config(tmp_path, **{"sweeps.fig8": [3, 6]})
    base = Scenario(costs, num_devices=6)
    with pytest.raises(InvalidScenarioError, match=r"sweeps.fig8\[0\].*K = 3"):
        build_tasks(cfg, base)


def test_run_simulation_writes_csv_and_manifest(tmp_path):
    cfg = tiny_config(tmp_path)
    report = run_simulation(cfg, profile=tiny_profile(), plots=True, progress=False)
    out = tmp_path / "out"
    columns = {"fig5": "snr_db", "fig6": "bandwidth_mhz", "fig8": "num_devices"}
    for name, x in columns.items():
        with (out / f"{name}.csv").open(newline="") as fh:
            rows = list(csv.reader(fh))
        # the original columns, in order, then the robust statistics (issue 11)
        assert rows[0] == [
            x,
            "scheme",
            "mean_latency_s",
            "ci95_s",
            "rounds",
            "infeasible_rounds",
            "median_latency_s",
            "q25_latency_s",
            "q75_latency_s",
            "heavy_tail",
        ]
        assert len(rows) == 1 + 2 * len(SCHEMES)
        for row in rows[1:]:
            float(row[0])
            assert row[1] in SCHEMES
            assert float(row[2]) > 0 and float(row[3]) >= 0
            assert int(row[4]) == 12 and 0 <= int(row[5]) < 12
            assert float(row[7]) <= float(row[6]) <= float(row[8])
            assert row[9] in ("true", "false")
        assert (out / f"{name}.png").stat().st_size > 0
        assert (out / f"{name}.pdf").stat().st_size > 0
    text = (out / "manifest.json").read_text()
    manifest = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    for key in (
        "config",
        "seed",
        "versions",
        "git",
        "wall_seconds",
        "scenario",
        "summary",
        "experiments",
        "solver_timing",
    ):
        assert key in manifest
    assert manifest["seed"] == 2024 and manifest["config"]["rounds"] == 12
    assert manifest["versions"]["numpy"] == np.__version__
    assert set(manifest["experiments"]) == set(columns)
    # the CSV means are the manifest's and the report's
    pt = report.sweeps.points["fig5"][1]
    with (out / "fig5.csv").open(newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["snr_db"] == "10.0" and r["scheme"] == "ba")
    ba = SCHEMES.index("ba")
    assert float(row["mean_latency_s"]) == pytest.approx(np.nanmean(pt.latency[ba]), rel=1e-12)
    q25, q50, q75 = np.nanquantile(pt.latency[ba], (0.25, 0.5, 0.75))
    assert float(row["median_latency_s"]) == pytest.approx(q50, rel=1e-12)
    assert float(row["q25_latency_s"]) == pytest.approx(q25, rel=1e-12)
    assert float(row["q75_latency_s"]) == pytest.approx(q75, rel=1e-12)
    assert row["heavy_tail"] == "false"  # 12 rounds: too few for a tail estimate
    summary = [r for r in report.summary if r.experiment == "fig5"]
    assert {r.scheme for r in summary} == set(SCHEMES)
    comm = next(r for r in summary if r.scheme == "comm-aware")
    assert comm.relative_to_comm_aware == 1.0
    assert next(r for r in summary if r.scheme == "ba").paper[0]["paper"] == 0.60


def test_results_do_not_depend_on_which_experiments_run(tmp_path):
    a = run_simulation(
        tiny_config(tmp_path, experiments=["fig5"], out=str(tmp_path / "a")),
        profile=tiny_profile(),
        plots=False,
        progress=False,
    )
    b = run_simulation(
        tiny_config(tmp_path, out=str(tmp_path / "b")),
        profile=tiny_profile(),
        plots=False,
        progress=False,
    )
    assert (tmp_path / "a" / "fig5.csv").read_text() == (tmp_path / "b" / "fig5.csv").read_text()
    assert set(a.sweeps.points) == {"fig5"}
    assert not (tmp_path / "a" / "fig6.csv").exists()
    assert set(b.sweeps.points) == {"fig5", "fig6", "fig8"}


# -- configuration ------------------------------------------------------------------------


def test_default_config_is_the_papers_setting():
    cfg = load_config(None)
    sc = cfg.scenario
    assert (sc.num_devices, sc.snr_db, sc.bandwidth_mhz, sc.path_loss) == (20, 10.0, 100.0, 1e-3)
    assert sc.compute_factor == (0.5, 1.0) and sc.memory_gb == (1.0, 6.0)
    assert cfg.rounds >= 1000 and cfg.schemes == SCHEMES == PAPER_SCHEMES
    assert cfg.sweeps.fig8[0] == 12 and cfg.sweeps.fig8[-1] == 50
    assert cfg.sweeps.fig5[0] == 0 and cfg.sweeps.fig5[-1] == 20
    assert cfg.sweeps.fig6[0] == 20 and cfg.sweeps.fig6[-1] == 200
    assert sc.profile is None and PAPER_PROFILE == "roberta-base"


def test_paper_config_file_is_the_default():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "paper.toml"
    assert load_config(path) == Config()
    text = path.read_text()
    for table in ("[scenario]", "[sweeps]"):  # the file shows every table of the sweep
        assert table in text


def test_profile_defaults_to_the_papers_model(tmp_path):
    from loladeft.experiments.simulate import base_scenario

    base = base_scenario(load_config(None))
    assert base.costs.model == load_block_costs(PAPER_PROFILE).model
    assert np.array_equal(base.costs.flops, load_block_costs(PAPER_PROFILE).flops)


def test_workers_are_capped_at_the_number_of_points(costs, monkeypatch):
    """Issue 14 item 7: a config with many workers starts at most one process per point."""
    import multiprocessing

    assert pool_size(64, 3) == 3 and pool_size(2, 9) == 2 and pool_size(5, 0) == 1
    started = []
    real = multiprocessing.get_context()

    class Recording:
        def Pool(self, processes, **kw):
            started.append(processes)
            return real.Pool(processes, **kw)

    monkeypatch.setattr(multiprocessing, "get_context", lambda *a: Recording())
    sc = Scenario(costs, num_devices=6)
    exp = EXPERIMENTS["fig5"]
    tasks = [PointTask(exp, i, x, exp.apply(sc, x), ("ba",), 3, 1) for i, x in enumerate((0, 5))]
    res = run_tasks(tasks, workers=64)
    assert started == [2] and res.workers == 2


def test_table1_times_to_90_percent_of_centralized(tmp_path):
    from loladeft.experiments.table1 import run_table1
    from loladeft.training.run import CSV_COLUMNS

    seen = []

    def fake_run(cfg, folder, label):
        """Write the metrics.csv a run would: centralized best 0.80 -> target 0.72."""
        seen.append((cfg.train.task, cfg.train.scheme, cfg.train.shared_schemes, cfg.train.lr))
        folder.mkdir(parents=True)
        if cfg.train.centralized:
            curves = {"centralized": [(None, 0.5), (None, 0.8), (None, 0.7)]}
        else:
            curves = {
                "comm-aware": [(0, 0.5), (100, 0.6), (200, 0.75)],
                "ba": [(0, 0.5), (60, 0.72), (120, 0.8)],
                "jbba": [(0, 0.5), (50, 0.7), (100, 0.9)],
            }
        with (folder / "metrics.csv").open("w") as fh:
            w = csv.DictWriter(fh, CSV_COLUMNS)
            w.writeheader()
            for scheme, pts in curves.items():
                for i, (t, m) in enumerate(pts):
                    w.writerow(
                        {
                            "round": i,
                            "scheme": scheme,
                            "sim_time_s": "" if t is None else t,
                            "metric": m,
                            "metric_name": "accuracy",
                        }
                    )

    base = load_config(None, {"train.task": "mrpc", "train.rounds": 2, "train.lr": 1e-3})
    rows = run_table1(base, ["mrpc"], tmp_path, shared=True, run=fake_run)
    assert seen == [
        ("mrpc", "centralized", (), 1e-3),
        ("mrpc", "jbba", ("comm-aware", "ba", "jbba"), 1e-3),
    ]
    got = {r.scheme: r for r in rows}
    assert got["comm-aware"].target == pytest.approx(0.72)
    assert got["comm-aware"].minutes_to_target == pytest.approx(200 / 60)
    assert got["ba"].minutes_to_target == pytest.approx(1.0)  # 0.72 reached exactly at 60 s
    assert got["jbba"].reduction_vs_comm_aware == pytest.approx(0.5)
    assert got["jbba"].paper_minutes == 5.12
    assert (tmp_path / "table1.md").read_text().count("| mrpc |") == 3
    assert (tmp_path / "fig7_mrpc.png").is_file()
