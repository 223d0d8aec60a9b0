"""The configuration module: one default per setting, TOML files, overrides, flat run config."""

from __future__ import annotations

import tomllib

import pytest

from loladeft.config import COMMAND_DEFAULTS, Config, dump_toml, from_flat, load_config, to_flat
from loladeft.exceptions import InputError


def test_precedence_defaults_command_file_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("rounds = 7\n[train]\nrounds = 3\nlr = 0.002\n[scenario]\nsnr_db = 4.0\n")
    assert load_config().train.rounds == 100
    assert load_config(command="flower local").train.rounds == 10
    cfg = load_config(path, {"train.lr": 0.003, "train.rounds": None}, command="flower local")
    assert (cfg.rounds, cfg.train.rounds, cfg.train.lr) == (7, 3, 0.003)
    assert cfg.scenario.snr_db == 4.0
    assert cfg.scenario.num_devices == COMMAND_DEFAULTS["flower local"]["scenario.num_devices"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rounds = 0", "rounds: input should be greater than or equal to 1, got 0"),
        ("ronuds = 3", "ronuds: unknown key"),
        ("[train]\nlr = '1e-3'", "train.lr: input should be a valid number, got '1e-3'"),
        ("[train]\nrounds = true", "train.rounds: input should be a valid integer, got True"),
        ("[train]\nrounds = 2.5", "train.rounds: input should be a valid integer, got 2.5"),
        ("[scenario]\nmemory_gb = [3.0, 1.0]", "scenario.memory_gb: must satisfy"),
        ("[scenario]\nsnr_db = nan", "scenario.snr_db: input should be a finite number"),
        ("[lora]\nfoo = 1", "lora.foo: unknown key"),
        ("schemes = ['jbba', 'nope']", "schemes: input should be"),
        ("workers = 100000", "workers: input should be less than or equal to 64"),
        ("[train]\ntask = 'imagenet'", "train.task: unknown task 'imagenet'"),
        ("rounds = [", "config: "),
    ],
)
def test_bad_values_name_their_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match="config: cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe rounds = 1")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(tmp_path / "bin.toml")


def test_print_config_round_trips(tmp_path):
    cfg = load_config(None, {"train.task": "rte", "lora.targets": ["query"], "train.lr": 1e-3})
    text = dump_toml(cfg)
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path) == cfg
    assert tomllib.loads(text)["train"]["task"] == "rte"


def test_flat_run_config_round_trips_and_overrides():
    cfg = load_config(
        None,
        {"train.task": "mrpc", "train.shared_schemes": ["ba", "jbba"], "train.betas": [0.8, 0.9]},
    )
    flat = to_flat(cfg)
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    assert flat["train.shared_schemes"] == "ba,jbba" and flat["train.data_dir"] == ""
    assert from_flat(flat) == cfg  # the top level keeps its defaults
    changed = from_flat({**flat, "train.lr": 0.01, "lora.targets": "query,key,value"})
    assert changed.train.lr == 0.01 and changed.lora.targets == ("query", "key", "value")
    with pytest.raises(InputError, match=r"^train\.nope: unknown key"):
        from_flat({"train.nope": 1})
    with pytest.raises(InputError, match=r"^train\.betas: input should be a valid number"):
        from_flat({"train.betas": "0.9,x"})


def test_every_default_is_valid():
    assert Config() == load_config()
