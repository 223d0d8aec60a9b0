"""Demo of the emulated edge: three devices with different uplinks and CPU quotas.

Run as root: ``python -m loladeft.testbed.demo``. A TCP server in the root namespace listens on
the testbed's server address; each device, inside its namespace and cgroups, first does a
fixed amount of CPU work, then connects and sends a link probe. The demo prints, per device,
the goodput and CPU quota it was given next to what was measured: the probe's throughput as
the server saw it, and the cores the work used (CPU seconds per wall second). A quota is a
ceiling: on a machine where other processes compete, a device may get less.

This is what a Flower run on the testbed builds on: a SuperLink listening on
:attr:`Testbed.server_address <loladeft.testbed.edge.Testbed.server_address>` in the root
namespace, and one SuperNode per device started with :meth:`Testbed.popen
<loladeft.testbed.edge.Testbed.popen>` that connects to that address.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import loladeft
from loladeft.exceptions import LoladeftError
from loladeft.testbed.edge import DeviceSpec, Testbed
from loladeft.testbed.link import ProbeResult, receive_probe, send_probe

#: Goodput (bit/s) and CPU quota (cores) of the three demo devices.
RATES_BPS = (8e6, 4e6, 2e6)
CPU_CORES = (0.6, 0.4, 0.2)
#: Probe size (bytes) and CPU work (loop iterations) of every device.
PROBE_BYTES = 1_000_000
WORK = 2_000_000
#: Seconds the demo waits for the devices.
TIMEOUT_S = 120.0


def _client(host: str, port: int, nbytes: int, work: int) -> None:
    """Device side: CPU work, then a probe; prints the work's wall and CPU seconds."""
    t, c = time.perf_counter(), time.process_time()
    x = 0
    for i in range(work):
        x += i * i
    print(f"{time.perf_counter() - t:.6f} {time.process_time() - c:.6f}", flush=True)
    with socket.create_connection((host, port), timeout=60) as sock:
        send_probe(sock, nbytes)


def run_demo(
    rates_bps: Sequence[float] = RATES_BPS,
    cpu_cores: Sequence[float] = CPU_CORES,
    nbytes: int = PROBE_BYTES,
    work: int = WORK,
) -> list[dict[str, float]]:
    """Set up the devices, run their work and probes, and return the figures per device.

    Returns
    -------
    list of dict
        Per device: ``set_bps``, ``measured_bps`` (probe goodput), ``set_cores``,
        ``used_cores`` (CPU seconds of the work per wall second; below ``set_cores`` when
        other processes compete for the machine) and ``compute_s`` (wall seconds of the work).
    """
    specs = [
        DeviceSpec(uplink_bps=r, cpu_cores=c) for r, c in zip(rates_bps, cpu_cores, strict=True)
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(loladeft.__file__).resolve().parents[1])}
    results: dict[str, ProbeResult] = {}
    with Testbed(specs) as tb, socket.create_server((tb.server_address, 0)) as srv:
        port = srv.getsockname()[1]
        srv.settimeout(0.5)

        def serve(conn: socket.socket, peer: str) -> None:
            with conn:
                results[peer] = receive_probe(conn)

        argv = [
            sys.executable,
            "-m",
            "loladeft.testbed.demo",
            "client",
            tb.server_address,
            str(port),
        ]
        procs = [
            tb.popen(k, [*argv, str(nbytes), str(work)], env=env, stdout=-1, text=True)
            for k in range(len(specs))
        ]
        threads: list[threading.Thread] = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(threads) < len(specs):
            failed = [k for k, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                what = f"device {failed[0]} failed" if failed else "devices did not connect"
                raise LoladeftError(f"demo: {what}")
            try:
                conn, (peer, _port) = srv.accept()
            except TimeoutError:
                continue
            threads.append(threading.Thread(target=serve, args=(conn, peer)))
            threads[-1].start()
        for t in threads:
            t.join(TIMEOUT_S)
        compute = [[float(x) for x in p.communicate(timeout=60)[0].split()] for p in procs]
        addresses = [tb.subnet.device_address(k) for k in range(len(specs))]
    return [
        {
            "set_bps": r,
            "measured_bps": results[a].throughput_bps,
            "set_cores": c,
            "used_cores": cpu / wall,
            "compute_s": wall,
        }
        for r, c, (wall, cpu), a in zip(rates_bps, cpu_cores, compute, addresses, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the demo's table; one line and exit status 2 when the testbed is unavailable."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["client"]:
        _client(args[1], int(args[2]), int(args[3]), int(args[4]))
        return 0
    try:
        rows = run_demo()
    except LoladeftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("device  set Mbit/s  measured Mbit/s  set cores  used cores  compute s")
    for k, r in enumerate(rows):
        print(
            f"{k:>6}  {r['set_bps'] / 1e6:>10.2f}  {r['measured_bps'] / 1e6:>15.2f}"
            f"  {r['set_cores']:>9.2f}  {r['used_cores']:>10.2f}  {r['compute_s']:>9.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
