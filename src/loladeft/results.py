"""Result files and their provenance: versions, git revision, strict-JSON manifests, and an
output folder that a reader never sees half-written or mixed with another run.

One module for every command that writes results (``loladeft simulate``, ``reproduce``,
``train``); it needs only the standard library, so any layer may use it.

:func:`package_versions`  versions of Python and the named packages
:func:`git_revision`      commit and dirty flag of the checkout holding the code
:func:`write_json`        strict JSON (``nan``/``inf`` become ``null``), written atomically
:func:`write_manifest`    a run's ``manifest.json``: its entries plus versions and git revision
:class:`StagedOutput`     build a run's files in a fresh sibling folder, then rename it into
                          place (``loladeft simulate``'s output folder)
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from loladeft.exceptions import InputError

__all__ = [
    "StagedOutput",
    "git_revision",
    "package_versions",
    "strict_json",
    "write_json",
    "write_manifest",
]

#: Packages every manifest lists.
BASE_PACKAGES = ("loladeft", "numpy", "scipy")


def package_versions(names: Iterable[str] = ()) -> dict[str, str | None]:
    """Versions of Python, the platform, :data:`BASE_PACKAGES` and ``names`` (None if a
    package is not installed)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in dict.fromkeys((*BASE_PACKAGES, *names)):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(root: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding the code."""
    root = root or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, recursively (dict keys
    become strings, tuples lists), so that it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented strict JSON; atomically (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n", "utf-8")
    os.replace(tmp, path)
    return path


def write_manifest(path: Path, entries: dict[str, Any], packages: Iterable[str] = ()) -> Path:
    """``manifest.json``: ``entries`` plus ``versions`` (:func:`package_versions` of
    ``packages``) and ``git`` (:func:`git_revision`), as strict JSON."""
    return write_json(
        path, {**entries, "versions": package_versions(packages), "git": git_revision()}
    )


class StagedOutput:
    """A run's output folder, written whole or not at all.

    The files are written into a fresh sibling folder (:attr:`path`, created at once, so an
    unwritable destination is noticed before any work); :meth:`commit` then renames it to
    ``out``. If ``out`` already exists, the files of the previous run of the same ``tool``
    (those its ``manifest.json`` lists) are dropped and every other entry (other commands'
    folders and files, e.g. ``results/train/``) is moved into the new folder first, so a
    reader sees the old run or the new one, never a mix.

    Parameters
    ----------
    out
        Destination folder.
    tool
        The ``"tool"`` entry of the manifest this run writes (``"loladeft simulate"``).
    names
        Every file name this kind of run may write. An existing ``out`` that holds one of
        them without a manifest of ``tool`` listing it holds another run's files: refused.

    Raises
    ------
    InputError
        ``out`` is not a folder, holds another run's files, or cannot be written.
    """

    def __init__(self, out: str | Path, tool: str, names: Iterable[str]) -> None:
        self.out = Path(out)
        self.tool = tool
        self.names = frozenset((*names, "manifest.json"))
        self._previous()  # refuse early
        parent = self.out.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=parent))
        except OSError as exc:
            raise InputError(f"out: cannot write into {parent}: {exc.strerror or exc}") from None

    def _previous(self) -> set[str]:
        """Names in ``out`` that belong to the previous run of this tool (to drop)."""
        out = self.out
        if not out.exists():
            return set()
        if not out.is_dir():
            raise InputError(f"out: {out} exists and is not a folder")
        listed: set[str] = set()
        manifest = out / "manifest.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                data = None
            if not isinstance(data, dict) or data.get("tool") != self.tool:
                raise InputError(
                    f"out: {out} holds another command's manifest.json; choose another --out"
                )
            files = data.get("files")
            listed = {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()
            listed.add("manifest.json")
        foreign = sorted(n for n in os.listdir(out) if n in self.names and n not in listed)
        if foreign:
            raise InputError(
                f"out: {out} holds {', '.join(foreign)} from another run (no {self.tool} "
                "manifest lists it); move it away or choose another --out"
            )
        return listed & self.names & set(os.listdir(out))  # never more than this tool writes

    def commit(self) -> Path:
        """Rename the staged folder to ``out`` (see the class docstring); returns ``out``."""
        out = self.out
        if out.exists():
            drop = self._previous()
            for name in os.listdir(out):
                if name not in drop:
                    os.replace(out / name, self.path / name)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.absolute().parent))
            os.replace(out, old / out.name)
            os.replace(self.path, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.path, out)
        return out

    def discard(self) -> None:
        """Remove the staged folder (the run failed or was interrupted)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()
