"""``loladeft simulate``: files, overrides, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import json
import tomllib

import pytest
from typer.testing import CliRunner

from loladeft.cli.app import app

runner = CliRunner()


def write_profile(path, L=4):
    depths = [
        {
            "depth": l,
            "flops": 2e11 * (1 + 0.3 * l),
            "activation_bytes": 0.2e9 * l,
            "weight_bytes": 0.5e9,
            "block_param_bytes": 2e5,
            "host_seconds": None,
        }
        for l in range(1, L + 1)
    ]
    path.write_text(
        json.dumps(
            {
                "model": "tiny",
                "dtype": "fp32",
                "batch": 32,
                "seq": 16,
                "lora_r": 8,
                "lora_targets": ["query", "value"],
                "block_bits": 786432,
                "source": "analytic",
                "depths": depths,
            }
        )
    )
    return path


@pytest.fixture
def config(tmp_path):
    profile = write_profile(tmp_path / "tiny.json")
    path = tmp_path / "sim.toml"
    path.write_text(
        f'rounds = 5\nworkers = 1\nout = "{(tmp_path / "res").as_posix()}"\n'
        f'[scenario]\nprofile = "{profile.as_posix()}"\nnum_devices = 6\n'
        "[sweeps]\nfig5 = [0, 10]\nfig6 = [50, 100]\nfig8 = [4, 6]\n"
    )
    return path


def invoke(*args):
    return runner.invoke(app, ["simulate", *args])


def test_simulate_writes_files_and_summary(config, tmp_path):
    res = invoke("--config", str(config), "--experiment", "fig5", "--no-plots", "--seed", "3")
    assert res.exit_code == 0, res.output
    out = tmp_path / "res"
    assert sorted(p.name for p in out.iterdir()) == ["fig5.csv", "manifest.json"]
    with (out / "fig5.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [
        "snr_db",
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
    assert len(rows) == 1 + 2 * 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["config"]["rounds"] == 5
    assert "vs comm-aware" in res.stdout and "paper: ba = 0.60 × comm-aware" in res.stdout


def test_flags_override_the_config(config, tmp_path):
    out = tmp_path / "other"
    res = invoke(
        "--config",
        str(config),
        "-e",
        "fig8",
        "--rounds",
        "3",
        "--out",
        str(out),
        "--no-plots",
        "--schemes",
        "ba,jbba",
    )
    assert res.exit_code == 0, res.output
    with (out / "fig8.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["scheme"] for r in rows} == {"ba", "jbba"}
    assert {r["rounds"] for r in rows} == {"3"}
    assert [r["num_devices"] for r in rows] == ["4", "4", "6", "6"]


def test_same_seed_same_csv(config, tmp_path):
    for name in ("a", "b"):
        res = invoke(
            "--config", str(config), "-e", "fig6", "--no-plots", "--out", str(tmp_path / name)
        )
        assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "fig6.csv").read_bytes() == (tmp_path / "b" / "fig6.csv").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "Invalid value for '--rounds': 0 is not in the range x>=1"),
        (["--rounds", "abc"], "Invalid value for '--rounds': 'abc' is not a valid integer"),
        (["--devices", "3"], "num_devices: K = 3 is smaller than the L = 4 blocks"),
        (["--experiment", "fig7"], "'fig7' is not one of 'fig5', 'fig6', 'fig8', 'all'"),
        (["--schemes", "ba,magic"], "(item 1), got 'magic'"),
        (["--workers", "0"], "Invalid value for '--workers': 0 is not in the range 1<=x<=64"),
        (["--snr-convention", "peak"], "'peak' is not one of 'transmit', 'received'"),
        (["--bandwidth-mhz", "-1"], "scenario.bandwidth_mhz: input should be greater than 0"),
        (["--no-such-flag"], "No such option"),
    ],
)
def test_bad_flags_exit_2_with_one_line(config, args, message):
    res = invoke("--config", str(config), "--no-plots", *args)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("loladeft: "), lines
    assert "Traceback" not in res.output and "╭" not in res.output


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[scenario]\nbandwidth_mhz = -100\n", "scenario.bandwidth_mhz: input should be greater"),
        ("rounds = 0\n", "rounds: input should be greater than or equal to 1"),
        ("[scenario]\nnum_devices = 2\n", "num_devices"),
        ("[scenario]\nprofile = 'no-such-profile'\n", "neither a builtin profile"),
        ("speed = 'fast'\n", "speed: unknown key"),
        ("rounds = \n", "not valid TOML"),
        ("[sweeps]\nfig8 = [2, 20]\n", "sweeps.fig8[0]"),
        ("workers = 100000\n", "workers: input should be less than or equal to 64"),
    ],
)
def test_bad_config_exit_2_with_one_line(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'out = "{(tmp_path / "o").as_posix()}"\n' + toml)
    flag = [] if "rounds = 0" in toml else ["--rounds", "2"]  # the flag would override it
    res = invoke("--config", str(path), "--no-plots", *flag)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_malformed_profile_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x", "depths": [')
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[scenario]\nprofile = "{bad.as_posix()}"\n')
    res = invoke("--config", str(cfg), "--no-plots", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "profile" in res.stderr


def test_missing_config_exit_2(tmp_path):
    res = invoke("--config", str(tmp_path / "none.toml"))
    assert res.exit_code == 2 and "cannot read" in res.stderr


def test_print_config_is_the_effective_configuration(config):
    res = invoke("--config", str(config), "--rounds", "9", "-K", "5", "--print-config")
    assert res.exit_code == 0, res.output
    data = tomllib.loads(res.stdout)
    assert data["rounds"] == 9 and data["workers"] == 1  # the flag, the file
    assert data["scenario"]["num_devices"] == 5 and data["sweeps"]["fig8"] == [4, 6]
    assert set(data) == {
        "seed",
        "rounds",
        "experiments",
        "schemes",
        "out",
        "workers",
        "stat",
        "scenario",
        "sweeps",
    }
    assert not (tmp := config.parent / "res").exists(), tmp  # nothing ran


def test_quick_and_file_precedence(config):
    res = invoke("--config", str(config), "--quick", "--print-config")
    assert tomllib.loads(res.stdout)["rounds"] == 100  # --quick beats the file's 5
    res = invoke("--config", str(config), "--quick", "--rounds", "7", "--print-config")
    assert tomllib.loads(res.stdout)["rounds"] == 7


# -- output folder (issue 14, item 8) ---------------------------------------------------------


def _run(config, out, *extra):
    return invoke("--config", str(config), "--no-plots", "--out", str(out), *extra)


def test_rerun_leaves_no_file_of_the_earlier_run(config, tmp_path):
    out = tmp_path / "res"
    assert _run(config, out, "-e", "all").exit_code == 0
    assert (out / "fig6.csv").exists()
    (out / "train").mkdir()  # another command's folder inside results/ is kept
    (out / "train" / "metrics.csv").write_text("x\n")
    res = _run(config, out, "-e", "fig5")
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["files"], "train"])
    assert not (out / "fig6.csv").exists()  # the earlier run's file is gone, not mixed in
    assert (out / "train" / "metrics.csv").read_text() == "x\n"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_folder_with_another_runs_files_is_refused_before_the_sweep(config, tmp_path, monkeypatch):
    import loladeft.experiments.simulate as sim

    monkeypatch.setattr(sim, "run_tasks", lambda *a: pytest.fail("the sweep ran"))
    out = tmp_path / "res"
    out.mkdir()
    (out / "fig5.csv").write_text("someone else's\n")
    res = _run(config, out)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds fig5.csv from another run" in lines[0], lines
    assert (out / "fig5.csv").read_text() == "someone else's\n"
    (out / "fig5.csv").unlink()
    (out / "manifest.json").write_text('{"command": "loladeft train"}')
    res = _run(config, out)
    assert res.exit_code == 2 and "another command's manifest.json" in res.stderr


def test_unwritable_out_is_noticed_before_the_sweep(config, tmp_path, monkeypatch):
    import loladeft.experiments.simulate as sim

    monkeypatch.setattr(sim, "run_tasks", lambda *a: pytest.fail("the sweep ran"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for out in (blocker, blocker / "res"):  # a file; a folder under a file
        res = _run(config, out)
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("loladeft: out: "), lines


def test_failed_sweep_keeps_the_earlier_run(config, tmp_path, monkeypatch):
    import loladeft.experiments.simulate as sim

    out = tmp_path / "res"
    assert _run(config, out, "-e", "fig5").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(path, *a):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sim, "write_csv", broken)
    res = _run(config, out, "-e", "fig6", "--seed", "4")
    assert res.exit_code == 2 and "No space left" in res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# -- interrupts (issue 14, item 6) ------------------------------------------------------------


def test_ctrl_c_stops_within_seconds_and_says_so(tmp_path):
    """SIGINT to the process group (what a terminal's Ctrl-C does) with two busy workers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "res"
    cmd = [
        sys.executable,
        "-c",
        "from loladeft.cli.app import main; main()",
        "simulate",
        "-e",
        "fig8",
        "--rounds",
        "20000",
        "--workers",
        "2",
        "--no-plots",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.name == "res" or ".partial-" in p.name for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # the workers are busy with points that take minutes
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 30 s after Ctrl-C")
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert stopped < 10, f"took {stopped:.1f} s to stop"
    lines = err.strip().splitlines()
    assert lines[-1] == "loladeft: interrupted" and "Traceback" not in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
