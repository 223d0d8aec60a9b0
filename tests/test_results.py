"""``loladeft.results``: strict JSON, manifests, and output folders written whole."""

from __future__ import annotations

import json
import math

import pytest

from loladeft.exceptions import InputError
from loladeft.results import StagedOutput, package_versions, strict_json, write_manifest

NAMES = ("a.csv", "b.csv")


def _files(folder):
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def _commit(out, files):
    with StagedOutput(out, "tool", NAMES) as staged:
        for name, text in files.items():
            (staged.path / name).write_text(text)
        write_manifest(staged.path / "manifest.json", {"tool": "tool", "files": [*files]})
    return out


def test_strict_json_and_manifest(tmp_path):
    assert strict_json({1: [math.nan, (math.inf, 2.0)]}) == {"1": [None, [None, 2.0]]}
    path = write_manifest(tmp_path / "m.json", {"x": math.nan}, packages=("no-such-pkg-x",))
    data = json.loads(path.read_text())
    assert data["x"] is None and data["versions"]["no-such-pkg-x"] is None
    assert data["versions"]["numpy"] == package_versions()["numpy"]
    assert set(data["git"]) == {"commit", "dirty"}


def test_a_new_run_replaces_the_old_one_whole(tmp_path):
    out = _commit(tmp_path / "out", {"a.csv": "1", "b.csv": "1"})
    (out / "keep").mkdir()
    (out / "keep" / "f").write_text("mine")
    (out / "notes.txt").write_text("mine")
    _commit(out, {"a.csv": "2"})
    files = _files(out)
    assert files["a.csv"] == "2" and "b.csv" not in files and files["notes.txt"] == "mine"
    assert (out / "keep" / "f").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial or old folder


def test_a_failed_run_changes_nothing(tmp_path):
    out = _commit(tmp_path / "out", {"a.csv": "1"})
    before = _files(out)
    with pytest.raises(RuntimeError), StagedOutput(out, "tool", NAMES) as staged:
        (staged.path / "a.csv").write_text("half")
        raise RuntimeError("killed")
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_manifest_never_deletes_what_the_tool_does_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train").mkdir()
    (out / "train" / "metrics.csv").write_text("mine")
    (out / "manifest.json").write_text(json.dumps({"tool": "tool", "files": ["train", ".."]}))
    _commit(out, {"a.csv": "1"})
    assert (out / "train" / "metrics.csv").read_text() == "mine"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda out: (out / "a.csv").write_text("x"), "holds a.csv from another run"),
        (lambda out: (out / "manifest.json").write_text("{}"), "another command's manifest"),
        (lambda out: (out / "manifest.json").write_text("[1"), "another command's manifest"),
    ],
)
def test_another_runs_files_are_refused_up_front(tmp_path, setup, message):
    out = tmp_path / "out"
    out.mkdir()
    setup(out)
    before = _files(out)
    with pytest.raises(InputError, match=message):
        StagedOutput(out, "tool", NAMES)
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_unusable_destinations(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is not a folder"):
        StagedOutput(tmp_path / "file", "tool", NAMES)
    with pytest.raises(InputError, match="cannot write into"):
        StagedOutput(tmp_path / "file" / "out", "tool", NAMES)
