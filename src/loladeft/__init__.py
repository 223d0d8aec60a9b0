"""loladeft: low-latency device-edge cooperative fine-tuning (LoLa-DEFT) of foundation models.

Reference: H. Wu, X. Chen, K. Huang, "Resource Management for Low-latency Cooperative
Fine-tuning of Foundation Models at the Network Edge".

Layout (dependencies point downward)::

    system       the system model: latency equations (3)-(8), instances, C1-C3
    allocation   the schedulers: CRUNCH, JBBA, baselines, exact reference solvers
    cli          the ``loladeft`` command

>>> import loladeft
>>> inst = {"J": [[1.0, 2.0], [1.5, 3.0], [2.0, 2.5]], "block_memory": [1.0, 2.0],
...         "device_memory": [2.0, 1.0, 2.0], "spectral_efficiency": [1.0, 1.0, 1.0],
...         "block_bits": 1e6, "bandwidth": 2e6}
>>> result = loladeft.solve(inst, scheme="ba")
>>> result.latency, result.assignment.tolist()
(3.0, [1, 0])
"""

from loladeft.allocation import SCHEMES, AllocationResult, solve
from loladeft.exceptions import (
    InvalidInstanceError,
    LoladeftError,
    UnknownSchemeError,
    UnsupportedInstanceError,
)
from loladeft.system import Instance

__version__ = "0.1.0"

__all__ = [
    "SCHEMES",
    "AllocationResult",
    "Instance",
    "InvalidInstanceError",
    "LoladeftError",
    "UnknownSchemeError",
    "UnsupportedInstanceError",
    "solve",
]
