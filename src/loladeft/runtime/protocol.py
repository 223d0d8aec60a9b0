"""What the server and a device say to each other in a DEFT round (Flower Message API).

Two exchanges per round (Algorithm 1):

``query``  server -> every node: ``ConfigRecord "deft"`` {``round``, ``config``}; the node
           answers ``ConfigRecord "state"`` {``partition-id``, ``compute-factor``,
           ``memory-bytes``}: its own state this round. The channel is simulated at the server.
``train``  server -> each scheduled node: ``ArrayRecord "weights"`` (every LoRA and head
           parameter, the latest model ``phi^(n-1)``) and ``ConfigRecord "deft"``
           {``round``, ``depth``, ``config``}: the block and, through the run settings, ``M``.
           The node answers ``ArrayRecord "gradient"`` (the block's and the head's gradient,
           averaged over the ``M`` local iterations) and ``MetricRecord "result"``
           {``round``, ``depth``, ``partition-id``, ``loss``}.

``config`` is the run's :class:`~loladeft.training.config.TrainConfig` as JSON: every message
carries the settings it is to be computed with, so a node needs nothing else from the run and
cannot disagree with the server about them. Every reply is checked by :func:`check_gradient`
before it is aggregated.

This module imports neither torch nor Flower at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from loladeft.exceptions import LoladeftError

QUERY = "query"
TRAIN = "train"
#: ConfigRecord key of the server's instructions.
DEFT = "deft"
#: Reply records.
STATE = "state"
WEIGHTS = "weights"
GRADIENT = "gradient"
RESULT = "result"


class InvalidReply(LoladeftError, ValueError):
    """A node's reply that must not be aggregated; the message says why."""


def encode_config(cfg: Any) -> str:
    """The run settings as the JSON string every message carries."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def decode_config(text: str) -> Any:
    """Inverse of :func:`encode_config`."""
    from loladeft.training.config import TrainConfig

    return TrainConfig.from_dict(json.loads(text))


def to_array_record(tensors: Mapping[str, Any]) -> Any:
    """An ``ArrayRecord`` of named torch tensors (copied to contiguous CPU fp32/as is)."""
    from flwr.app import ArrayRecord

    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def from_array_record(record: Any) -> dict[str, np.ndarray]:
    """Named numpy arrays of an ``ArrayRecord``."""
    return {k: record[k].numpy() for k in record}


def check_gradient(
    arrays: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[tuple[int, ...], str]],
    max_norm: float,
) -> float:
    """Validate a gradient reply against the parameters it must cover.

    Parameters
    ----------
    arrays
        The reply's arrays by name.
    expected
        ``name -> (shape, dtype)`` of the block's and the head's parameters.
    max_norm
        Bound on the global L2 norm of the reply.

    Returns
    -------
    float
        The reply's global norm.

    Raises
    ------
    InvalidReply
        Missing or unexpected names, a wrong shape or dtype, a non-finite value, or a norm
        above ``max_norm``.
    """
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        what = [f"missing {missing[0]}"] if missing else []
        what += [f"unexpected {extra[0]}"] if extra else []
        raise InvalidReply(f"gradient: {', '.join(what)}")
    total = 0.0
    for name, (shape, dtype) in expected.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(shape):
            raise InvalidReply(f"gradient: {name} has shape {tuple(a.shape)}, expected {shape}")
        if str(a.dtype) != dtype:
            raise InvalidReply(f"gradient: {name} has dtype {a.dtype}, expected {dtype}")
        if not np.isfinite(a).all():
            raise InvalidReply(f"gradient: {name} holds a non-finite value")
        total += float(np.square(a, dtype=np.float64).sum())
    norm = math.sqrt(total)
    if not norm <= max_norm:
        raise InvalidReply(f"gradient: norm {norm:.4g} exceeds the bound {max_norm:.4g}")
    return norm
