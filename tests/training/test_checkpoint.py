"""Checkpoints without pickle (issue 10 item 7, issue 14 items 1 and 9): safetensors + JSON,
every tampering refused in one line, an old pickled checkpoint never loaded."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

from helpers.tiny import tiny_config  # noqa: E402
from loladeft.exceptions import InputError  # noqa: E402
from loladeft.training import checkpoint  # noqa: E402
from loladeft.training.engine import Trainer  # noqa: E402
from loladeft.training.run import train  # noqa: E402

pytestmark = pytest.mark.torch


def _cfg(tiny, **kw):
    return tiny_config(tiny, **{"rounds": 2, "eval_every": 1, "checkpoint_every": 1, **kw})


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory) -> Path:
    """A folder holding a finished 2-round run (checkpoint at round 2)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(_cfg(tiny), out)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _doc(folder: Path) -> dict:
    return json.loads((folder / "checkpoint.json").read_text())


def _commit(folder: Path, doc: dict, tensors: dict | None = None) -> None:
    """Rewrite the checkpoint as a careful forger would: a consistent digest and, when
    ``tensors`` are given, a new tensor file with its true SHA-256."""
    if tensors is not None:
        data = safetensors_torch.save(tensors)
        sha = hashlib.sha256(data).hexdigest()
        (folder / doc["tensors"]["file"]).write_bytes(data)
        doc["tensors"]["sha256"] = sha
    doc["digest"] = checkpoint._digest(doc)
    (folder / "checkpoint.json").write_text(json.dumps(doc))


def _tensors(folder: Path) -> dict:
    return safetensors_torch.load_file(folder / _doc(folder)["tensors"]["file"])


def _first_weight(tensors: dict) -> str:
    return next(k for k in tensors if k.startswith("weights/"))


def _edit_round(f: Path) -> None:
    doc = _doc(f)
    doc["round"] = 1
    (f / "checkpoint.json").write_text(json.dumps(doc))


def _set(key, value):
    def edit(f: Path) -> None:
        doc = _doc(f)
        doc[key] = value
        _commit(f, doc)

    return edit


def _drop(key):
    def edit(f: Path) -> None:
        doc = _doc(f)
        del doc[key]
        _commit(f, doc)

    return edit


def _swap_tensor_file(f: Path) -> None:
    t = _tensors(f)
    k = _first_weight(t)
    t[k] = t[k] + 1.0
    (f / _doc(f)["tensors"]["file"]).write_bytes(safetensors_torch.save(t))


def _reshape(f: Path) -> None:
    t = _tensors(f)
    k = _first_weight(t)
    t[k] = torch.zeros(3, 3)
    _commit(f, _doc(f), t)


def _retype(f: Path) -> None:
    t = _tensors(f)
    k = _first_weight(t)
    t[k] = t[k].double()
    _commit(f, _doc(f), t)


def _drop_tensor(f: Path) -> None:
    t = _tensors(f)
    del t["torch_rng"]
    _commit(f, _doc(f), t)


def _extra_tensor(f: Path) -> None:
    t = _tensors(f)
    t["weights/evil"] = torch.zeros(2)
    _commit(f, _doc(f), t)


def _garbage_tensors(f: Path) -> None:
    doc = _doc(f)
    data = b"\xff" * 64
    (f / doc["tensors"]["file"]).write_bytes(data)
    doc["tensors"]["sha256"] = hashlib.sha256(data).hexdigest()
    _commit(f, doc)


def _tensor_path_escape(f: Path) -> None:
    doc = _doc(f)
    doc["tensors"]["file"] = "../../etc/passwd"
    _commit(f, doc)


def _lr_text(f: Path) -> None:
    doc = _doc(f)
    doc["optimizer"]["param_groups"][0]["lr"] = "0.1"
    _commit(f, doc)


def _scheduler_missing(f: Path) -> None:
    doc = _doc(f)
    del doc["scheduler"]["last_epoch"]
    _commit(f, doc)


def _history_type(f: Path) -> None:
    doc = _doc(f)
    doc["history"][1]["feasible"] = "yes"
    _commit(f, doc)


def _nan_literal(f: Path) -> None:
    doc = _doc(f)
    doc["sim_time"] = {k: "NaN" for k in doc["sim_time"]}  # the digest of the parsed text
    _commit(f, doc)
    text = (f / "checkpoint.json").read_text().replace('"NaN"', "NaN")
    (f / "checkpoint.json").write_text(text)


def _not_json(f: Path) -> None:
    (f / "checkpoint.json").write_bytes(b"\x00\x01 not json")


def _deep(f: Path) -> None:
    (f / "checkpoint.json").write_text("[" * 100000 + "]" * 100000)


CASES = {
    "edited JSON": (_edit_round, "does not match its digest"),
    "round as text": (_set("round", "2"), "round must be an integer"),
    "negative round": (_set("round", -1), "round must be >= 0"),
    "streams missing": (_drop("streams"), "streams is missing"),
    "streams wrong length": (_set("streams", [0]), "streams must be a list of 5"),
    "config not an object": (_set("config", [1, 2]), "config must be an object"),
    "swapped tensor file": (_swap_tensor_file, "does not match its sha256"),
    "wrong shape": (_reshape, "expected torch.float32"),
    "wrong dtype": (_retype, "is torch.float64"),
    "missing tensor": (_drop_tensor, "tensor torch_rng is missing"),
    "extra tensor": (_extra_tensor, "unexpected tensor weights/evil"),
    "garbage tensor file": (_garbage_tensors, "is not valid safetensors"),
    "tensor path escape": (_tensor_path_escape, "needs a file name"),
    "lr as text": (_lr_text, "lr must be a number"),
    "scheduler key missing": (_scheduler_missing, "misses ['last_epoch']"),
    "history wrong type": (_history_type, "feasible must be true or false"),
    "NaN literal": (_nan_literal, "must be a number"),
    "not JSON": (_not_json, "is not a JSON checkpoint"),
    "deeply nested": (_deep, "is not a JSON checkpoint"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_checkpoint_is_refused_in_one_line(tiny, run, tmp_path, case):
    folder = _copy(run, tmp_path)
    tamper, words = CASES[case]
    tamper(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(InputError) as info:
        train(_cfg(tiny, rounds=3), folder, resume=True)
    message = str(info.value)
    assert message.startswith("resume: ") and "\n" not in message, message
    assert words in message, message
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_tampered_checkpoint_cli_exit_2(tiny, run, tmp_path):
    from typer.testing import CliRunner

    from loladeft.cli.app import app

    folder = _copy(run, tmp_path)
    _swap_tensor_file(folder)
    argv = ["train", "--task", "sst2", "--data-dir", tiny["data_dir"], "--model", tiny["model"]]
    argv += ["--profile", tiny["profile"], "--devices", "5", "--rounds", "3", "--batch", "8"]
    argv += ["--out", str(folder), "--resume", "--threads", "1"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not match its sha256" in lines[0], lines
    assert "Traceback" not in result.output


class _Boom:
    """A pickle that, when loaded, writes a marker file (what a crafted checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_old_pickle_checkpoint_is_refused_never_loaded(tiny, run, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    shutil.copy(run / "metrics.csv", folder / "metrics.csv")
    marker = tmp_path / "marker"
    torch.save({"weights": _Boom(marker)}, folder / "checkpoint.pt")
    with pytest.raises(InputError, match=r"old pickle checkpoint.*rerun without --resume"):
        train(_cfg(tiny), folder, resume=True)
    # even under the new name, a pickle (zip archive or bare) is refused by its magic bytes
    trainer = Trainer(_cfg(tiny)).setup()
    for payload in ((folder / "checkpoint.pt").read_bytes(), pickle.dumps(_Boom(marker))):
        (folder / "checkpoint.json").write_bytes(payload)
        with pytest.raises(InputError, match="old pickle checkpoint"):
            trainer.load(folder / "checkpoint.json")
    assert not marker.exists()


def test_resume_never_calls_torch_load(tiny, run, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    folder = _copy(run, tmp_path)
    trainer = train(_cfg(tiny), folder, resume=True)
    assert trainer.round == 2 and trainer.history[-1].round == 2


def test_checkpoint_round_trips_every_value(tiny, run):
    trainer = Trainer(_cfg(tiny)).setup()
    trainer.load(run / "checkpoint.json")
    doc = _doc(run)
    assert trainer.round == doc["round"] == 2
    tensors = _tensors(run)
    for name, w in trainer.weights().items():
        assert torch.equal(w, tensors[f"weights/{name}"]), name
    assert torch.equal(torch.get_rng_state(), tensors["torch_rng"])
    assert [s.consumed for s in trainer.streams] == doc["streams"]
    assert trainer.history[0].train_loss != trainer.history[0].train_loss  # nan kept
    assert doc["history"][0]["train_loss"] == "nan"  # strict JSON
    names = sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint"))
    assert names == sorted(["checkpoint.json", doc["tensors"]["file"]])  # older ones removed


def test_a_kill_while_saving_leaves_the_previous_checkpoint(tiny, run, tmp_path, monkeypatch):
    folder = _copy(run, tmp_path)
    trainer = Trainer(_cfg(tiny)).setup()
    trainer.load(folder / "checkpoint.json")
    trainer.step()
    real = checkpoint._write_bytes

    def die_on_json(path, data):
        if path.suffix == ".json":
            raise KeyboardInterrupt  # killed after the tensor file, before the commit
        real(path, data)

    monkeypatch.setattr(checkpoint, "_write_bytes", die_on_json)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(folder / "checkpoint.json")
    monkeypatch.undo()
    again = Trainer(_cfg(tiny)).setup()
    again.load(folder / "checkpoint.json")
    assert again.round == 2


@pytest.mark.parametrize("case", ["resume without checkpoint", "unwritable", "under a file"])
def test_output_folder_problems_are_one_line_before_any_work(tiny, run, tmp_path, case):
    if case == "resume without checkpoint":
        out = tmp_path / "other"
        out.mkdir()
        shutil.copy(run / "metrics.csv", out / "metrics.csv")
        shutil.copy(run / "manifest.json", out / "manifest.json")
        words, resume = "no checkpoint.json to continue from", True
    elif case == "unwritable":
        out, words, resume = Path("/proc/loladeft-test/run"), "cannot write into /proc", False
    else:
        (tmp_path / "file").write_text("x")
        out, words, resume = tmp_path / "file" / "run", "is not a folder", False
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def no_setup(*args, **kwargs):
        raise AssertionError("the run started before its output folder was checked")

    with pytest.raises(InputError) as info:  # the files are another run's (lr)
        train(_cfg(tiny, lr=1e-3), out, resume=resume, make_trainer=no_setup)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_resume_restarts_the_same_run_killed_before_its_first_checkpoint(tiny, tmp_path):
    class _Kill(Exception):
        pass

    def kill(trainer, rec):
        raise _Kill

    cfg = _cfg(tiny, checkpoint_every=2)
    with pytest.raises(_Kill):
        train(cfg, tmp_path / "run", on_round=kill)  # killed after round 1, no checkpoint
    assert not (tmp_path / "run" / "checkpoint.json").exists()
    with pytest.raises(InputError, match=r"no checkpoint\.json"):  # another run's settings
        train(_cfg(tiny, checkpoint_every=2, lr=1e-3), tmp_path / "run", resume=True)
    trainer = train(cfg, tmp_path / "run", resume=True)  # the same run starts over
    assert trainer.round == 2
