"""Finding and removing what testbed runs left on this machine.

A run that ends normally removes everything it created (:meth:`Testbed.close
<loladeft.testbed.edge.Testbed.close>` calls :func:`remove_run`). A launcher killed by
SIGKILL, or a machine that lost power, leaves namespaces, veths, cgroups and processes
behind; :func:`find_leftovers` lists them by their names (:func:`~loladeft.testbed.runs.
parse_name`) and :func:`cleanup` removes them, for ``loladeft testbed --cleanup``. Runs whose
owner process is still alive are left alone unless asked for explicitly.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from loladeft.testbed import cgroups
from loladeft.testbed._command import TestbedError
from loladeft.testbed.defaults import DRAIN_TIMEOUT_S, PREFIX
from loladeft.testbed.netns import (
    list_links,
    list_namespaces,
    namespace_pids,
    remove_device_link,
)
from loladeft.testbed.runs import (
    check_run_id,
    device_name,
    forget_run,
    owner_alive,
    parse_name,
    recorded_runs,
)


@dataclass(frozen=True)
class Leftover:
    """One object a testbed run created.

    Attributes
    ----------
    kind
        ``"netns"``, ``"link"`` (root-side veth), ``"cgroup"`` or ``"record"``.
    name
        Its name (the run id for a record).
    run_id
        The run that created it.
    live
        Whether the run's owner process is still alive.
    """

    kind: str
    name: str
    run_id: str
    live: bool


def find_leftovers(*, include_live: bool = False) -> list[Leftover]:
    """Every namespace, root-side veth, cgroup and run record a testbed run created.

    Parameters
    ----------
    include_live
        Also list the objects of runs whose owner is still running.
    """
    records = recorded_runs()
    live = {rid for rid, rec in records.items() if owner_alive(rec)}
    found = [Leftover("record", rid, rid, rid in live) for rid in records]
    for kind, names in (
        ("netns", list_namespaces()),
        ("link", list_links()),
        ("cgroup", list(cgroups.list_groups(f"{PREFIX}-"))),
    ):
        for name in names:
            parsed = parse_name(name)
            if parsed is not None:
                found.append(Leftover(kind, name, parsed[0], parsed[0] in live))
    return [x for x in found if include_live or not x.live]


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_run(run_id: str, devices: range | None = None) -> None:
    """Remove everything run ``run_id`` created: processes, namespaces, veths, cgroups,
    and finally its record.

    Processes are ended first (those inside the run's namespaces or cgroups: they are there
    because the run started them), then the objects are deleted. Every step is attempted even
    if an earlier one fails.

    Parameters
    ----------
    run_id
        The run.
    devices
        Device indices to remove; default: every device of the run found on the machine.

    Raises
    ------
    TestbedError
        Something could not be removed (the first failure's message).
    """
    check_run_id(run_id)
    if devices is None:
        ks = {
            p[1]
            for p in map(
                parse_name,
                [*list_namespaces(), *list_links(), *cgroups.list_groups(f"{PREFIX}-{run_id}-")],
            )
            if p is not None and p[0] == run_id
        }
    else:
        ks = set(devices)
    names = [device_name(run_id, k) for k in sorted(ks)]
    namespaces = set(list_namespaces())
    errors: list[str] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        left = [
            pid
            for name in names
            for pid in (namespace_pids(name) if name in namespaces else []) + cgroups.pids(name)
        ]
        if not left:
            break
        _kill(left)
        time.sleep(0.05)
    for name in names:
        for step in (
            lambda n=name: remove_device_link(n, n),
            lambda n=name: cgroups.remove(n) if cgroups.exists(n) else None,
        ):
            try:
                step()
            except TestbedError as exc:
                errors.append(str(exc))
    if errors:
        raise TestbedError(errors[0])
    forget_run(run_id)


def cleanup(*, run_id: str | None = None, include_live: bool = False) -> list[Leftover]:
    """Remove leftovers of dead testbed runs (or of one run), and return what was removed.

    Parameters
    ----------
    run_id
        Only this run (its owner may be alive: the caller asks for it by name).
    include_live
        Also remove the objects of runs whose owner is still alive.
    """
    found = find_leftovers(include_live=include_live or run_id is not None)
    if run_id is not None:
        found = [x for x in found if x.run_id == check_run_id(run_id)]
    for rid in sorted({x.run_id for x in found}):
        remove_run(rid)
    return found
