"""One emulated device's network: a namespace joined to the root namespace by a veth pair.

Device traffic leaves its namespace through the veth end inside it (the device's uplink,
shaped by :mod:`loladeft.testbed.shaping`) and arrives at the root-side end, whose address is
the device's gateway. Each namespace also routes its run's whole /24 through that gateway, so
a server listening on any root-side address of the run (e.g. device 0's gateway) is reached
by every device over the device's own shaped link; nothing else is routed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from loladeft.testbed._command import TestbedError, run
from loladeft.testbed.defaults import MTU


@dataclass(frozen=True)
class DeviceLink:
    """The namespace and veth pair of one emulated device.

    Attributes
    ----------
    namespace
        Network namespace name.
    host_if, device_if
        veth ends: in the root namespace / inside ``namespace``.
    host_address, device_address
        IPv4 addresses of the two ends.
    prefixlen
        Prefix length of the pair's subnet.
    route
        Network (CIDR) the namespace reaches through ``host_address``.
    """

    namespace: str
    host_if: str
    device_if: str
    host_address: str
    device_address: str
    prefixlen: int
    route: str


def create_device_link(
    namespace: str,
    host_if: str,
    device_if: str,
    host_address: str,
    device_address: str,
    prefixlen: int,
    route: str,
) -> DeviceLink:
    """Create a namespace with a veth pair to the root namespace, addressed and up.

    On failure, whatever this call created is removed before the error propagates.

    Raises
    ------
    TestbedError
        A command failed (the namespace exists already, the kernel refuses veths...).
    """
    run(["ip", "netns", "add", namespace])
    try:
        peer = ["peer", "name", device_if, "mtu", str(MTU), "netns", namespace]
        run(["ip", "link", "add", host_if, "mtu", str(MTU), "type", "veth", *peer])
        run(["ip", "addr", "add", f"{host_address}/{prefixlen}", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        ns = ["ip", "-n", namespace]
        run([*ns, "addr", "add", f"{device_address}/{prefixlen}", "dev", device_if])
        run([*ns, "link", "set", "lo", "up"])
        run([*ns, "link", "set", device_if, "up"])
        run([*ns, "route", "add", route, "via", host_address, "dev", device_if])
    except TestbedError:
        remove_device_link(namespace, host_if)
        raise
    return DeviceLink(namespace, host_if, device_if, host_address, device_address, prefixlen, route)


def remove_device_link(namespace: str, host_if: str) -> None:
    """Delete a device's namespace and root-side veth; missing ones are skipped.

    Deleting the namespace destroys the veth pair unless a process still holds the namespace,
    so the root-side end is deleted explicitly as well. Processes inside the namespace must be
    ended first (:func:`namespace_pids`).
    """
    if namespace in list_namespaces():
        run(["ip", "netns", "delete", namespace])
    if host_if in list_links():
        with contextlib.suppress(TestbedError):  # gone meanwhile with its namespace
            run(["ip", "link", "delete", host_if])
        if host_if in list_links():
            raise TestbedError(f"{host_if}: veth still present after deleting it")


def exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``namespace``."""
    return ["ip", "netns", "exec", namespace, *argv]


def list_namespaces() -> list[str]:
    """Names of the network namespaces known to ``ip netns``."""
    out = run(["ip", "-j", "netns", "list"]).strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def list_links() -> list[str]:
    """Names of the interfaces of the root namespace."""
    return [entry["ifname"] for entry in json.loads(run(["ip", "-j", "link", "show"]) or "[]")]


def namespace_pids(namespace: str) -> list[int]:
    """Processes running inside ``namespace`` (empty when it does not exist)."""
    out = run(["ip", "netns", "pids", namespace], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]
