"""An emulated heterogeneous edge on one Linux machine (root): the building blocks of
``loladeft testbed``.

Each emulated device is a network namespace joined to the root namespace by a veth pair
(:mod:`~loladeft.testbed.netns`), whose uplink is shaped with ``tc``
(:mod:`~loladeft.testbed.shaping`: the model's ``B_k r_k`` of eq. (4) mapped to a shaped
rate), and whose processes run under a cgroup v1 CPU quota and memory limit
(:mod:`~loladeft.testbed.cgroups`). :class:`Testbed` (:mod:`~loladeft.testbed.edge`) sets up
N devices and removes them again on any exit; :func:`find_leftovers` / :func:`cleanup`
(:mod:`~loladeft.testbed.leftovers`) remove what a killed launcher left behind.
:mod:`~loladeft.testbed.link` estimates a node's uplink rate term from observed transfers and
a probe at join. Names and defaults: :mod:`~loladeft.testbed.runs`,
:mod:`~loladeft.testbed.defaults`.

Nothing here imports torch or flwr.
"""

from loladeft.testbed._command import TestbedError, require_root
from loladeft.testbed.edge import DeviceSpec, EmulatedDevice, Testbed
from loladeft.testbed.leftovers import Leftover, cleanup, find_leftovers
from loladeft.testbed.link import (
    LinkEstimator,
    ProbeError,
    ProbeResult,
    receive_probe,
    send_probe,
    spectral_efficiency,
)

__all__ = [
    "DeviceSpec",
    "EmulatedDevice",
    "Leftover",
    "LinkEstimator",
    "ProbeError",
    "ProbeResult",
    "Testbed",
    "TestbedError",
    "cleanup",
    "find_leftovers",
    "receive_probe",
    "require_root",
    "send_probe",
    "spectral_efficiency",
]
