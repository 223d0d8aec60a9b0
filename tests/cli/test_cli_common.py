"""The ``loladeft`` root: one-line usage errors, ``--version``, and options that every command
derives from the configuration module (help, shown default, bounds, typed choices)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from loladeft.cli.app import app, main
from loladeft.config import Config

runner = CliRunner()

#: Every command that runs something, with the arguments it needs to get going.
COMMANDS = {
    "simulate": ["simulate"],
    "train": ["train"],
    "profile": ["profile"],
    "reproduce": ["reproduce", "all"],
    "flower virtual": ["flower", "virtual"],
    "flower local": ["flower", "local"],
}


def run_main(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--rounds", "abc"], "Invalid value for '--rounds': 'abc' is not a valid"),
        (["simulate", "--bogus"], "No such option '--bogus'"),
        (["train", "--precision", "fp8"], "'fp8' is not one of 'auto', 'fp32', 'bf16'"),
        (["reproduce", "fig9"], "'fig9' is not one of 'fig4', 'fig5', 'fig6', 'fig7'"),
        (["flower", "simulate"], "No such command 'simulate'"),
        (["nope"], "No such command 'nope'"),
        (["flower", "local", "--nodes", "0"], "'--nodes': 0 is not in the range x>=1"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loladeft: ") and message in lines[0], err
    assert "╭" not in err + out and "Usage:" not in err


def test_task_names_are_case_insensitive(tmp_path):
    res = runner.invoke(app, ["train", "--task", "MRPC", "--print-config"])
    assert res.exit_code == 0, res.output
    assert tomllib.loads(res.stdout)["train"]["task"] == "mrpc"


def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out == f"loladeft {metadata.version('loladeft')}\n"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_config_flags_and_print_config(tmp_path, name):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 0.002\nbatch = 16\n[scenario]\nsnr_db = 3.0\n")
    flags = ["--batch", "8"] if name not in ("simulate",) else ["--snr-db", "4"]
    res = runner.invoke(app, [*COMMANDS[name], "--config", str(path), *flags, "--print-config"])
    assert res.exit_code == 0, res.output
    data = tomllib.loads(res.stdout)
    if name == "simulate":  # the sweep's tables only
        assert data["scenario"]["snr_db"] == 4.0 and "train" not in data
        assert data["rounds"] == Config().rounds
    else:
        assert data["train"]["lr"] == 0.002  # the file survives ...
        assert data["train"]["batch"] == 8  # ... where no flag overrides it
        assert data["scenario"]["snr_db"] == 3.0
    if name == "flower local":  # the command's own defaults
        assert data["scenario"]["num_devices"] == 8 and data["train"]["rounds"] == 10


def test_print_config_loads_back(tmp_path):
    res = runner.invoke(app, ["reproduce", "all", "--lr", "0.003", "--print-config"])
    assert res.exit_code == 0, res.output
    path = tmp_path / "c.toml"
    path.write_text(res.stdout)
    again = runner.invoke(app, ["reproduce", "all", "--config", str(path), "--print-config"])
    assert again.stdout == res.stdout


def _params(*path: str) -> dict[str, click.Parameter]:
    command = typer.main.get_command(app)
    ctx = click.Context(command)
    for name in path:
        command = command.get_command(ctx, name)  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


def test_options_take_help_default_and_bounds_from_the_config():
    fields = Config.model_fields
    rounds = _params("simulate")["rounds"]
    assert rounds.help.startswith(fields["rounds"].description.rstrip("."))
    assert rounds.default is None  # "not given": a config file's value survives
    assert isinstance(rounds.type, click.IntRange) and rounds.type.min == 1
    workers = _params("simulate")["workers"]
    assert (workers.type.min, workers.type.max) == (1, 64)
    lr = _params("train")["lr"]
    train = fields["train"].annotation.model_fields
    assert lr.help == train["lr"].description and lr.show_default == "0.0005"
    nodes = _params("flower", "local")["nodes"]
    assert nodes.show_default == "8"  # flower local's own default, from COMMAND_DEFAULTS


@pytest.mark.parametrize(
    ("command", "param", "choices"),
    [
        (("train",), "scheme", {"jbba", "ba", "centralized"}),
        (("train",), "precision", {"auto", "fp32", "bf16"}),
        (("train",), "task", {"mrpc", "rte", "sst2", "mnli"}),
        (("flower", "local"), "task", {"mrpc", "qqp"}),
        (("simulate",), "snr_convention", {"transmit", "received"}),
        (("simulate",), "experiment", {"fig5", "fig6", "fig8", "all"}),
        (("profile",), "dtype", {"fp32", "bf16", "fp16"}),
        (("flower", "virtual"), "scheme", {"jbba", "comm-aware"}),
        (("reproduce",), "target", {"fig4", "fig7", "table1", "all"}),
    ],
)
def test_choices_are_typed(command, param, choices):
    kind = _params(*command)[param].type
    assert isinstance(kind, click.Choice) and choices <= set(kind.choices)


def test_one_word_one_meaning():
    """An option name is a flag everywhere or a value everywhere (``--shared`` was a list in
    ``train`` and a flag in ``reproduce``), and no command shares the sweep's name."""
    kinds: dict[str, set[bool]] = {}
    for argv in COMMANDS.values():
        path = [a for a in argv if a != "all"]
        for p in _params(*path).values():
            for opt in p.opts:
                kinds.setdefault(opt, set()).add(bool(getattr(p, "is_flag", False)))
    assert {opt for opt, k in kinds.items() if len(k) > 1} == set()
    assert "--shared-schemes" in kinds and kinds["--shared"] == {True}
    assert "simulate" not in typer.main.get_command(app).commands["flower"].commands


def test_profile_takes_the_model_familys_lora_targets_unless_given(tmp_path, monkeypatch):
    """``[lora] targets`` defaults to BERT's names; ``profile`` leaves the choice to the model
    registry unless a flag or the file gives them."""
    import loladeft.profiling.profiler as profiler

    seen = []

    def fake(model, **kw):
        seen.append(kw["lora_targets"])
        raise profiler.InputError("stop here")

    monkeypatch.setattr(profiler, "profile_model", fake)
    path = tmp_path / "c.toml"
    path.write_text("[lora]\ntargets = ['k_proj']\n")
    for extra in ([], ["--lora-targets", "q_proj"], ["--config", str(path)]):
        res = runner.invoke(app, ["profile", "--model", "tiny-llama", "--no-timing", *extra])
        assert res.exit_code == 2 and "stop here" in res.stderr
    assert seen == [None, ("q_proj",), ("k_proj",)]


def test_flower_local_is_secure_unless_insecure():
    for extra, insecure in (([], False), (["--insecure"], True), (["--cold"], False)):
        res = runner.invoke(app, ["flower", "local", *extra, "--print-config"])
        assert res.exit_code == 0, res.output
        runtime = tomllib.loads(res.stdout)["runtime"]
        assert runtime["insecure"] is insecure and runtime["warm"] is ("--cold" not in extra)


def test_a_missing_extra_is_one_line(tmp_path, monkeypatch):
    """Without the ``train`` extra, a training command names the extra to install in one
    line (exit 2) instead of a ModuleNotFoundError traceback."""
    import sys

    from typer.testing import CliRunner

    from loladeft.cli.app import app

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ModuleNotFoundError
    glue = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue"
    if not glue.is_dir():
        pytest.skip("needs ../shared/data/glue")
    argv = ["train", "--task", "mrpc", "--out", str(tmp_path / "o"), "--data-dir", str(glue)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [
        "loladeft: torch is not installed: this command needs pip install 'loladeft[train]'"
    ], lines
