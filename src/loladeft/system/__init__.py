"""System model of multi-device DEFT (paper Sec. II–III).

Only numpy is needed here. :mod:`~loladeft.system.latency` holds the latency equations
(3)–(8); :mod:`~loladeft.system.instance` holds one round's scheduling instance and the
constraints C1–C3 that every allocation must satisfy.
"""

from loladeft.system.instance import Instance, check_allocation
from loladeft.system.latency import (
    compute_latency,
    device_latency,
    round_latency,
    spectral_efficiency,
    upload_latency,
)

__all__ = [
    "Instance",
    "check_allocation",
    "compute_latency",
    "device_latency",
    "round_latency",
    "spectral_efficiency",
    "upload_latency",
]
