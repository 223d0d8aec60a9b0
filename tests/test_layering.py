"""Layering (issue 10): dependencies point down, system -> allocation -> profiling / training /
runtime -> experiments -> cli; every import counts, lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "loladeft"

#: package -> packages of loladeft it must never import.
FORBIDDEN = {
    "system": {"allocation", "profiling", "training", "runtime", "experiments", "cli", "config"},
    "allocation": {"profiling", "training", "runtime", "experiments", "cli", "config"},
    "profiling": {"experiments", "cli"},
    "training": {"experiments", "cli"},
    "runtime": {"experiments", "cli"},
    "experiments": {"cli"},
    "results": {
        "system",
        "allocation",
        "profiling",
        "training",
        "runtime",
        "experiments",
        "cli",
        "config",
    },
}


def imported_packages(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """``(line, top-level loladeft package)`` of every import in the file at ``path`` (a
    module of the package folder ``root``)."""
    package = ("loladeft", *path.relative_to(root).parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this file's package
                base = package[: len(package) - node.level + 1]
                names = [".".join((*base, node.module or ""))]
            else:
                names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "loladeft" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations(root: Path = SRC) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        layer = path.relative_to(root).parts[0].removesuffix(".py")
        banned = FORBIDDEN.get(layer, set())
        for line, target in imported_packages(path, root):
            if target in banned:
                out.append(f"{path.relative_to(root)}:{line} imports loladeft.{target}")
    return out


def test_no_import_points_up():
    assert violations() == []


def test_the_check_finds_an_upward_import(tmp_path):
    """The walker sees lazy and relative imports (so the test above can fail)."""
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "bad.py").write_text(
        "def f():\n    from loladeft.profiling.profile import load_profile\n"
    )
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "worse.py").write_text("from ..experiments import output\n")
    (tmp_path / "training" / "fine.py").write_text("from loladeft.system import scenario\n")
    assert violations(tmp_path) == [
        "system/bad.py:2 imports loladeft.profiling",
        "training/worse.py:1 imports loladeft.experiments",
    ]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_every_layer_exists(layer):
    assert (SRC / layer).is_dir() or (SRC / f"{layer}.py").is_file()
