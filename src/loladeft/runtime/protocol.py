"""What the server and a device say to each other in a DEFT round (Flower Message API).

Two exchanges per round (Algorithm 1):

``query``  server -> every node: ``ConfigRecord "deft"`` {``round``, ``config``}; the node
           answers ``ConfigRecord "state"`` {``partition-id``, ``compute-factor``,
           ``memory-bytes``}: its own state this round. The channel is simulated at the server.
           Before round 1 the server sends one with ``round = 0`` and ``warm = true``: the
           node loads the model and its data then, not inside round 1's deadline.
``train``  server -> each scheduled node: ``weights`` (every LoRA and head parameter, the
           latest model ``phi^(n-1)``) and ``ConfigRecord "deft"`` {``round``, ``depth``,
           ``config``, ``stream-position``}: the block, through the run settings ``M``, and
           how many minibatches of its shard the device has used so far. The node answers
           ``gradient`` (the block's and the head's gradient, averaged over the ``M`` local
           iterations) and ``MetricRecord "result"`` {``round``, ``depth``,
           ``partition-id``, ``loss``, ``seconds``} (``seconds``: its compute time).

Tensors travel packed (:func:`pack`): one ``ArrayRecord`` holding a single flat array, and a
``ConfigRecord`` ``<name>-layout`` with the tensors' names and shapes. Flower stores and
fetches every array as an object of its own, with a round trip each on every hop; one array
per message instead of one per tensor removes most of the transport time of a round.

``config`` is the run's settings (:meth:`loladeft.config.Config.run_dict`) as JSON: every message
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
    return json.dumps(cfg.run_dict(), sort_keys=True)


def decode_config(text: str) -> Any:
    """Inverse of :func:`encode_config`."""
    from loladeft.config import build

    return build(json.loads(text))


def pack(tensors: Mapping[str, Any]) -> tuple[Any, Any]:
    """Named torch tensors as ``(ArrayRecord {"flat": 1-D array}, ConfigRecord layout)``."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord

    names = list(tensors)
    flat = torch.cat([tensors[n].detach().reshape(-1).cpu() for n in names])
    layout = ConfigRecord(
        {"names": names, "shapes": json.dumps([list(tensors[n].shape) for n in names])}
    )
    return ArrayRecord({"flat": flat.contiguous()}), layout


def unpack(arrays: Any, layout: Any) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack`: named numpy arrays (views of the flat array).

    Raises
    ------
    InvalidReply
        The layout does not describe the flat array.
    """
    try:
        flat = np.array(arrays["flat"].numpy())  # owned and writable (torch.from_numpy)
        names = [str(n) for n in layout["names"]]
        shapes = [tuple(int(d) for d in shape) for shape in json.loads(str(layout["shapes"]))]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidReply(f"layout: unreadable ({type(exc).__name__}: {exc})") from None
    sizes = [math.prod(shape) for shape in shapes]
    if len(names) != len(shapes) or flat.ndim != 1 or flat.size != sum(sizes):
        raise InvalidReply(
            f"layout: {len(names)} names and {len(shapes)} shapes of {sum(sizes)} values for "
            f"a flat array of shape {flat.shape}"
        )
    out, start = {}, 0
    for name, shape, size in zip(names, shapes, sizes, strict=True):
        out[name] = flat[start : start + size].reshape(shape)
        start += size
    return out


def put(content: Any, key: str, tensors: Mapping[str, Any]) -> None:
    """Store named tensors in a message's ``RecordDict`` under ``key`` (:func:`pack`)."""
    content[key], content[f"{key}-layout"] = pack(tensors)


def get(content: Any, key: str) -> dict[str, np.ndarray]:
    """Named arrays stored by :func:`put`; :class:`InvalidReply` if absent or inconsistent."""
    try:
        arrays, layout = content[key], content[f"{key}-layout"]
    except KeyError:
        raise InvalidReply(f"{key}: missing from the message") from None
    return unpack(arrays, layout)


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
