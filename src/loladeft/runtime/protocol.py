"""What the server and a device say to each other in a DEFT round (Flower Message API).

Two exchanges per round (Algorithm 1):

``query``  server -> every node: ``ConfigRecord "deft"`` {``round``, ``config``}; the node
           answers ``ConfigRecord "state"`` {``partition-id``, ``compute-factor``,
           ``memory-bytes``}: its own state this round. The channel is simulated at the server.
           Before round 1 the server sends one with ``round = 0`` and ``warm = true``: the
           node loads the model and its data then, not inside round 1's deadline.
``train``  server -> each scheduled node: ``weights`` (every LoRA and head parameter, the
           latest model ``phi^(n-1)``) and ``ConfigRecord "deft"`` {``round``, ``depth``,
           ``depths``, ``config``, ``stream-position``}: the blocks it carries (``depths``,
           ascending: one block in the paper's model, several with multi-block devices,
           issue 13) and the deepest of them (``depth``, where its one truncated backward
           pass stops), through the run settings ``M``, and how many minibatches of its
           shard the device has used so far. The node answers ``gradient`` (each carried
           block's and the head's gradient, averaged over the ``M`` local iterations) and
           ``MetricRecord "result"`` {``round``, ``depth``, ``partition-id``, ``loss``,
           ``seconds``} (``depth``: the deepest block; ``seconds``: its compute time).

Tensors travel packed (:func:`pack`): one ``ArrayRecord`` holding a single flat array, and a
``ConfigRecord`` ``<name>-layout`` with the tensors' names and shapes. Flower stores and
fetches every array as an object of its own, with a round trip each on every hop; one array
per message instead of one per tensor removes most of the transport time of a round.

``config`` is the run's settings (:meth:`loladeft.config.Config.run_dict`) as JSON: every message
carries the settings it is to be computed with, so a node needs nothing else from the run and
cannot disagree with the server about them.

*Replies are untrusted.* Every field of a reply is read through this module's checks
(:func:`read_state`, :func:`read_result`, :func:`get` with the expected layout,
:func:`check_gradient`) before the server uses it; anything they do not accept raises
:class:`~loladeft.exceptions.InvalidReply`. Sizes are compared with the expected layout
before a reply's array is deserialized or copied.

This module imports neither torch nor Flower at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from loladeft.exceptions import InvalidReply

QUERY = "query"
TRAIN = "train"
#: ConfigRecord key of the server's instructions.
DEFT = "deft"
#: Reply records.
STATE = "state"
WEIGHTS = "weights"
GRADIENT = "gradient"
RESULT = "result"
#: Query reply records of a measured device model: the node's self-profile, and the link
#: probe's payload.
PROFILE = "profile"
PROBE = "probe"
#: Largest timing a node may report (s), and largest probe it may be asked for (bytes).
MAX_SECONDS = 1e6
MAX_PROBE_BYTES = 256_000_000
#: Compute factors a node may report (relative to the profiled device; Sec. VI-A draws
#: them in (0, 1]): outside this range the round's latencies would over- or underflow.
COMPUTE_FACTOR_RANGE = (1e-6, 1e6)
#: Longest ``shapes`` text of a layout the server parses (characters).
MAX_LAYOUT_CHARS = 1 << 20
#: Bytes a serialized flat array may hold beyond its values (the ``.npy`` header).
_NPY_SLACK = 4096

__all__ = [
    "DEFT",
    "GRADIENT",
    "PROBE",
    "PROFILE",
    "QUERY",
    "RESULT",
    "STATE",
    "TRAIN",
    "WEIGHTS",
    "InvalidReply",
    "check_gradient",
    "decode_config",
    "encode_config",
    "get",
    "pack",
    "put",
    "read_handle_seconds",
    "read_profile",
    "read_result",
    "read_state",
    "unpack",
]


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


def unpack(
    arrays: Any, layout: Any, expected: Mapping[str, tuple[tuple[int, ...], str]] | None = None
) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack`: named numpy arrays (views of one owned flat array).

    Parameters
    ----------
    arrays, layout
        The ``ArrayRecord`` and the layout ``ConfigRecord`` of :func:`pack`.
    expected
        ``name -> (shape, dtype)`` the arrays must have (a reply); the layout is compared
        with it, and the flat array's declared shape, dtype and byte size with the layout,
        before the array is deserialized or copied.

    Raises
    ------
    InvalidReply
        The layout is unreadable, does not describe the flat array, or differs from
        ``expected``.
    """
    try:
        names, shapes = _read_layout(layout)
        flat_array = arrays["flat"]
        declared = tuple(int(d) for d in flat_array.shape)
        dtype = str(flat_array.dtype)
        nbytes = len(flat_array.data)
    except InvalidReply:
        raise
    except Exception as exc:  # any malformed field is the reply's fault
        raise InvalidReply(f"layout: unreadable ({type(exc).__name__}: {exc})") from None
    sizes = [math.prod(shape) for shape in shapes]
    total = sum(sizes)
    if len(names) != len(shapes) or len(set(names)) != len(names):
        raise InvalidReply(f"layout: {len(names)} names for {len(shapes)} shapes")
    if expected is not None:
        got = dict(zip(names, shapes, strict=True))
        want = {name: tuple(shape) for name, (shape, _) in expected.items()}
        if got != want:
            raise InvalidReply(f"layout: {_first_difference(got, want)}")
        dtypes = {d for _, d in expected.values()}
        if dtypes != {dtype}:
            raise InvalidReply(f"layout: dtype {dtype}, expected {', '.join(sorted(dtypes))}")
    if declared != (total,):
        raise InvalidReply(f"layout: {total} values for a flat array of shape {declared}")
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        raise InvalidReply(f"layout: unknown dtype {dtype!r}") from None
    if nbytes > total * itemsize + _NPY_SLACK:
        raise InvalidReply(f"layout: {nbytes} bytes for {total} values of {dtype}")
    try:
        flat = np.array(flat_array.numpy())  # owned and writable (torch.from_numpy)
    except Exception as exc:
        raise InvalidReply(f"flat array: unreadable ({type(exc).__name__}: {exc})") from None
    if flat.shape != (total,) or str(flat.dtype) != dtype:
        raise InvalidReply(
            f"flat array: holds {flat.dtype} of shape {flat.shape}, declared {dtype} {declared}"
        )
    out, start = {}, 0
    for name, shape, size in zip(names, shapes, sizes, strict=True):
        out[name] = flat[start : start + size].reshape(shape)
        start += size
    return out


def _read_layout(layout: Any) -> tuple[list[str], list[tuple[int, ...]]]:
    """The names and shapes of a layout record, each checked for type."""
    names = layout["names"]
    text = layout["shapes"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidReply("layout: names must be a list of strings")
    if not isinstance(text, str) or len(text) > MAX_LAYOUT_CHARS:
        raise InvalidReply(f"layout: shapes must be a JSON text of <= {MAX_LAYOUT_CHARS} chars")
    parsed = json.loads(text)
    if not isinstance(parsed, list) or not all(
        isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape) for shape in parsed
    ):
        raise InvalidReply("layout: shapes must be lists of non-negative integers")
    return list(names), [tuple(int(d) for d in shape) for shape in parsed]


def _first_difference(got: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing:
        return f"missing {missing[0]}"
    if extra:
        return f"unexpected {extra[0]}"
    name = next(n for n in want if got[n] != want[n])
    return f"{name} has shape {got[name]}, expected {want[name]}"


def put(content: Any, key: str, tensors: Mapping[str, Any]) -> None:
    """Store named tensors in a message's ``RecordDict`` under ``key`` (:func:`pack`)."""
    content[key], content[f"{key}-layout"] = pack(tensors)


def get(
    content: Any, key: str, expected: Mapping[str, tuple[tuple[int, ...], str]] | None = None
) -> dict[str, np.ndarray]:
    """Named arrays stored by :func:`put` (checked against ``expected``, see :func:`unpack`);
    :class:`InvalidReply` if absent or inconsistent."""
    try:
        arrays, layout = content[key], content[f"{key}-layout"]
    except KeyError:
        raise InvalidReply(f"{key}: missing from the message") from None
    return unpack(arrays, layout, expected)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _integer(record: Any, key: str) -> int:
    value = record[key]
    if not _is_int(value):
        raise InvalidReply(f"{key}: must be an integer, got {_short(value)}")
    return int(value)


def _real(record: Any, key: str, low: float, high: float = math.inf) -> float:
    """A finite number in ``[low, high]``."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidReply(f"{key}: must be a number, got {_short(value)}")
    x = float(value)
    if not (math.isfinite(x) and low <= x <= high):
        raise InvalidReply(f"{key}: {x!r} is not a finite number in [{low:g}, {high:g}]")
    return x


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields(content: Any, record: str, read: Any) -> Any:
    """Run ``read(content[record])``; any failure is an :class:`InvalidReply`."""
    try:
        return read(content[record])
    except InvalidReply:
        raise
    except KeyError as exc:
        raise InvalidReply(f"{record}: missing {exc}") from None
    except Exception as exc:
        raise InvalidReply(f"{record}: unreadable ({type(exc).__name__}: {exc})") from None


def read_state(content: Any, num_devices: int) -> tuple[int, float, float]:
    """A ``query`` reply's ``state``: ``(partition-id, compute factor, memory in bytes)``.

    Raises
    ------
    InvalidReply
        The record or a field is missing, of the wrong type, not finite, or out of range
        (partition-id in ``[0, K)``, compute-factor in :data:`COMPUTE_FACTOR_RANGE`,
        memory-bytes finite and ``>= 0``).
    """

    def read(state: Any) -> tuple[int, float, float]:
        k = _integer(state, "partition-id")
        if not 0 <= k < num_devices:
            raise InvalidReply(f"partition-id: {k} is not a device of the run's K = {num_devices}")
        f = _real(state, "compute-factor", *COMPUTE_FACTOR_RANGE)
        return k, f, _real(state, "memory-bytes", 0.0)

    return _fields(content, STATE, read)


def read_result(content: Any) -> tuple[tuple[int, int, int], float, float]:
    """A ``train`` reply's ``result``: ``((round, depth, partition-id), loss, seconds)``.

    Raises
    ------
    InvalidReply
        The record or a field is missing, of the wrong type or not finite (``seconds``
        also negative).
    """

    def read(result: Any) -> tuple[tuple[int, int, int], float, float]:
        got = (
            _integer(result, "round"),
            _integer(result, "depth"),
            _integer(result, "partition-id"),
        )
        return got, _real(result, "loss", -math.inf), _real(result, "seconds", 0.0)

    return _fields(content, RESULT, read)


def read_handle_seconds(content: Any, record: str) -> float | None:
    """``handle-seconds`` of a reply's ``state`` or ``result`` record (the node's time from
    receiving the message to returning the reply), ``None`` where a node does not report it.

    Raises
    ------
    InvalidReply
        Present but not a finite number in ``[0, MAX_SECONDS]``.
    """

    def read(rec: Any) -> float | None:
        if "handle-seconds" not in rec:
            return None
        return _real(rec, "handle-seconds", 0.0, MAX_SECONDS)

    return _fields(content, record, read)


def read_profile(content: Any, num_blocks: int) -> tuple[list[float], list[float], float]:
    """A ``query`` reply's self-profile: ``(seconds, memory-bytes, available-bytes)``
    (:class:`~loladeft.profiling.selfprofile.DeviceProfile`).

    Raises
    ------
    InvalidReply
        The record is missing, a list does not have one entry per block (``L``), or a value
        is not a finite positive number (seconds at most :data:`MAX_SECONDS`).
    """

    def values(rec: Any, key: str, high: float) -> list[float]:
        raw = rec[key]
        if not isinstance(raw, list) or len(raw) != num_blocks:
            got = len(raw) if isinstance(raw, list) else _short(raw)
            raise InvalidReply(f"{key}: must list L = {num_blocks} numbers, got {got}")
        out = []
        for i, v in enumerate(raw):
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise InvalidReply(f"{key}[{i}]: must be a number, got {_short(v)}")
            x = float(v)
            if not (math.isfinite(x) and 0 < x <= high):
                raise InvalidReply(f"{key}[{i}]: {x!r} is not a finite number in (0, {high:g}]")
            out.append(x)
        return out

    def read(rec: Any) -> tuple[list[float], list[float], float]:
        seconds = values(rec, "seconds", MAX_SECONDS)
        memory = values(rec, "memory-bytes", math.inf)
        available = _real(rec, "available-bytes", 0.0)
        if available <= 0:
            raise InvalidReply(f"available-bytes: {available!r} is not a positive number")
        return seconds, memory, available

    return _fields(content, PROFILE, read)


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
        ``name -> (shape, dtype)`` of the carried blocks' and the head's parameters.
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
