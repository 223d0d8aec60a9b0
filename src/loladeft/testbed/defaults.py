"""Every default of the emulated edge testbed, in one place.

The testbed creates Linux network namespaces, veth pairs, ``tc`` qdiscs and cgroup v1
groups. Every object it creates carries :data:`PREFIX` in its name, followed by a four-hex-digit
run id, so that cleanup can find exactly what a run created and nothing else.
"""

from __future__ import annotations

from pathlib import Path

#: Name prefix of every namespace, veth, cgroup and run record the testbed creates.
PREFIX = "lolatb"

#: Private IPv4 range the testbed draws its subnets from. Each run takes one /24 out of it
#: (``10.231.x.0/24``), and device ``k`` of that run the /30 ``10.231.x.4k/30``.
SUPERNET = "10.231.0.0/16"

#: Largest number of emulated devices per run (64 /30 subnets fit a /24).
MAX_DEVICES = 64

#: Where runs record their owner process (pid and start time) while they are alive.
STATE_DIR = Path("/run") / PREFIX

#: cgroup v1 mount point (one directory per controller below it).
CGROUP_ROOT = Path("/sys/fs/cgroup")

#: CFS scheduling period of the CPU quotas, microseconds (the kernel's default).
CFS_PERIOD_US = 100_000

#: Cores the devices' CPU quotas may use together by default: leaves room on a 2-core
#: machine for the server and the launcher.
CPU_BUDGET_CORES = 1.6

#: Smallest CPU quota the kernel accepts, microseconds.
MIN_CFS_QUOTA_US = 1_000

#: Link MTU of the veth pairs, bytes.
MTU = 1500

#: Smallest and largest shaped rate, bits/s.
MIN_RATE_BPS = 8_000.0
MAX_RATE_BPS = 10e9

#: tbf bucket: at least this many bytes, or this many seconds at the rate, whichever is more.
TBF_MIN_BURST_BYTES = 16_384
TBF_BURST_S = 0.004

#: tbf queue: at least this many bytes, or this many seconds at the rate, whichever is more
#: (a queue too short makes local TCP senders lose packets to the shaper).
TBF_MIN_LIMIT_BYTES = 262_144
TBF_LIMIT_S = 0.1

#: Seconds one ``ip``/``tc`` command may take before it counts as failed.
COMMAND_TIMEOUT_S = 20.0

#: Seconds a process gets between SIGTERM and SIGKILL at teardown.
TERM_GRACE_S = 3.0

#: Seconds teardown waits for killed processes to leave a cgroup before giving up.
DRAIN_TIMEOUT_S = 5.0

#: Weight of the newest observation in the uplink estimate (exponentially weighted mean).
EWMA_ALPHA = 0.5

#: Bytes a node sends as its link probe at join.
PROBE_BYTES = 1_000_000

#: Largest probe a receiver accepts (a device announcing more is refused).
MAX_PROBE_BYTES = 256_000_000

#: Seconds a probe receiver waits for the next bytes before giving up.
PROBE_TIMEOUT_S = 60.0
