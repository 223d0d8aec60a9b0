"""``loladeft reproduce``: every paper artifact from experiments/, the same sweep as
``loladeft simulate``, Table I's runs wired to the training command."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from loladeft.cli.app import app

runner = CliRunner()


@pytest.fixture
def config(tmp_path):
    """The shipped MiniLM profile (L = 6), few rounds and points."""
    path = tmp_path / "sim.toml"
    path.write_text(
        'rounds = 4\nworkers = 1\n[scenario]\nprofile = "minilm"\nnum_devices = 6\n'
        "[sweeps]\nfig5 = [0, 10]\nfig6 = [50, 100]\nfig8 = [6, 8]\n"
    )
    return path


def test_fig4_from_the_profile(tmp_path, config):
    out = tmp_path / "r"
    res = runner.invoke(app, ["reproduce", "fig4", "--config", str(config), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "fig4a.pdf",
        "fig4a.png",
        "fig4b.pdf",
        "fig4b.png",
    ]


@pytest.mark.parametrize("figure", ["fig5", "fig6", "fig8"])
def test_sweep_figures_are_simulates_sweep(tmp_path, config, figure):
    a, b = tmp_path / "a", tmp_path / "b"
    res = runner.invoke(app, ["reproduce", figure, "--config", str(config), "--out", str(a)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["simulate", "-e", figure, "--config", str(config), "--out", str(b)])
    assert res.exit_code == 0, res.output
    assert (a / f"{figure}.csv").read_bytes() == (b / f"{figure}.csv").read_bytes()
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_table1_runs_every_scheme_with_the_given_settings(tmp_path, config, monkeypatch):
    import loladeft.cli.train as train_cli
    from loladeft.training.run import CSV_COLUMNS

    calls = []

    def fake(cfg, folder, *, resume, threads=None, label=None, runner=None):
        calls.append((cfg.train.task, cfg.train.scheme, cfg.train.rounds, cfg.train.lr, resume))
        folder.mkdir(parents=True, exist_ok=True)
        scheme = cfg.train.scheme
        with (folder / "metrics.csv").open("w") as fh:
            w = csv.DictWriter(fh, CSV_COLUMNS)
            w.writeheader()
            w.writerow(
                {
                    "round": 1,
                    "scheme": scheme,
                    "sim_time_s": "" if scheme == "centralized" else 60,
                    "metric": 0.9,
                    "metric_name": "accuracy",
                }
            )

    monkeypatch.setattr(train_cli, "run_with_progress", fake)
    out = tmp_path / "r"
    res = runner.invoke(
        app,
        ["reproduce", "fig7", "--tasks", "MRPC", "--rounds", "3", "--lr", "0.002",
         "--config", str(config), "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert calls == [
        ("mrpc", s, 3, 0.002, True) for s in ("centralized", "comm-aware", "ba", "jbba")
    ]
    assert (out / "table1" / "table1.md").is_file() and (out / "table1" / "fig7_mrpc.png").is_file()


def test_unknown_task_is_one_line(tmp_path, config):
    res = runner.invoke(app, ["reproduce", "table1", "--tasks", "glue9", "--config", str(config)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loladeft: tasks: unknown task 'glue9'"), lines


def test_fewer_devices_target_writes_its_figure(tmp_path, monkeypatch):
    """``reproduce fewer-devices`` runs the issue-13 experiment (here on 2 rounds) and writes
    its CSV and figure; ``all`` (the paper's artifacts) does not include it."""
    from loladeft.experiments import fewer_devices as fd
    from loladeft.experiments.reproduce import plan

    assert "fewer-devices" not in plan("all")
    real = fd.fewer_devices
    monkeypatch.setattr(fd, "fewer_devices", lambda **kw: real(rounds=2, devices=(8, 32), **kw))
    out = tmp_path / "fd"
    result = runner.invoke(app, ["reproduce", "fewer-devices", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = (out / "fewer_devices.csv").read_text().splitlines()
    assert rows[0].split(",") == list(fd.CSV_COLUMNS)
    assert {r.split(",")[0] for r in rows[1:]} == {"8", "32"}
    assert (out / "fewer_devices.png").is_file()
