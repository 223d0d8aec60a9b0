"""Marks of the Linux testbed tests: they need root, network namespaces and cgroup v1, and
are skipped with the reason when the machine refuses."""

from __future__ import annotations

import pytest

from loladeft.testbed import TestbedError, cgroups, require_root
from loladeft.testbed.netns import list_namespaces


def _unavailable() -> str | None:
    try:
        require_root()
        cgroups.check_support()
        list_namespaces()
    except TestbedError as exc:
        return str(exc)
    return None


#: Why the Linux testbed cannot run here (``None``: it can).
UNAVAILABLE = _unavailable()
#: Marks of a Linux testbed test module.
LINUX = [
    pytest.mark.testbed,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"testbed unavailable: {UNAVAILABLE}"),
]
