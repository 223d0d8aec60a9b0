"""One round's scheduling instance, and the allocation constraints C1–C3 (paper Sec. III).

The JSON instance file is the contract shared by every loladeft tool::

    {
      "J":                   K lists of L numbers,  # s; J[k][l], depth order (eq. 3)
      "block_memory":        L numbers,             # b(l), same unit as device_memory
      "device_memory":       K numbers,             # available memory b̂_k of device k
      "spectral_efficiency": K numbers,             # r_k > 0, bit/s/Hz (eq. 4)
      "block_bits":          number,                # S > 0, bits uploaded per block
      "bandwidth":           number,                # B > 0, Hz
      "max_blocks_per_device": integer,             # optional, >= 1, default 1
      "extra_block_memory":  number                 # optional, >= 0, default 0
    }

Other keys are allowed and ignored (device names, comments...). The two optional keys
generalise the paper's model to *multi-block devices* (issue 13, not in the paper): a device
may carry up to ``max_blocks_per_device`` blocks, and each carried block beyond its deepest
adds ``extra_block_memory`` to its memory need. Missing keys mean the paper's model (one
block per device, ``L <= K``); the equations are in
:func:`loladeft.system.latency.multiblock_device_latency`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loladeft.exceptions import InvalidInstanceError
from loladeft.system.latency import device_latency, multiblock_device_latency, upload_latency

FIELDS = ("J", "block_memory", "device_memory", "spectral_efficiency", "block_bits", "bandwidth")
#: Optional keys of the multi-block generalisation and their defaults (the paper's model).
MULTIBLOCK_DEFAULTS: dict[str, Any] = {"max_blocks_per_device": 1, "extra_block_memory": 0.0}


def _array(name: str, value: Any, ndim: int) -> NDArray[np.float64]:
    """Coerce ``value`` to a read-only float array of ``ndim`` dimensions."""
    if isinstance(value, np.ndarray) and value.dtype == np.float64:
        arr = value.view()
    else:
        if isinstance(value, (str, bytes, Mapping)) or value is None:
            raise InvalidInstanceError(name, f"must be a list of numbers, got {_kind(value)}")
        _check_numbers(name, value, ndim)
        try:
            arr = np.array(value, dtype=float)
        except (ValueError, TypeError) as exc:
            raise InvalidInstanceError(name, _coerce_problem(value, ndim, exc)) from None
    if arr.ndim != ndim:
        shape = "a list of numbers" if ndim == 1 else "a list of equal-length lists of numbers"
        raise InvalidInstanceError(name, f"must be {shape} (got {arr.ndim} dimension(s))")
    if arr.size == 0:
        raise InvalidInstanceError(name, "is empty")
    arr.flags.writeable = False
    return arr


#: Largest magnitude a float holds; a JSON integer beyond it cannot become a number here.
_FLOAT_MAX = float(np.finfo(float).max)
#: Least positive normal double; ``r_k``, ``S`` and ``B`` must be at least this.
_FLOAT_TINY = float(np.finfo(float).tiny)


def _check_numbers(name: str, value: Any, ndim: int) -> None:
    """Refuse, naming ``name`` and the entry, anything in ``value`` (an array or nested
    sequence) that numpy would silently turn into a number or fail on: booleans (0/1),
    numeric strings (``"1.0"``), ``None``, objects, integers too large for a float, and
    nesting deeper than ``ndim`` (walked without recursion, so any depth is refused in one
    line). Shape problems (ragged rows, too few dimensions) are left to numpy's check."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            if value.dtype == np.bool_:
                raise InvalidInstanceError(name, "must hold numbers, found a boolean")
            return
        value = value.tolist()
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if depth < ndim and isinstance(item, (list, tuple)):
            if depth == ndim - 1 and set(map(type, item)) <= {float}:
                continue  # the common case: a row of plain floats
            stack.extend(
                (v, depth + 1, f"{where}[{i}]") for i, v in reversed(list(enumerate(item)))
            )
            continue
        problem = _not_a_number(item)
        if problem is None:
            continue
        if isinstance(item, (list, tuple)):
            problem = "nested deeper than " + ("a list" if ndim == 1 else "a list of lists")
        raise InvalidInstanceError(name, f"must hold only numbers, found {problem} at {where}")


def _not_a_number(item: Any) -> str | None:
    """What is wrong with one entry of an instance array, or ``None`` if it is a number."""
    if isinstance(item, (bool, np.bool_)):
        return "a boolean"
    if isinstance(item, (int, np.integer)):
        return None if abs(int(item)) <= _FLOAT_MAX else "an integer too large for a float"
    if isinstance(item, (float, np.floating)):
        return None
    if isinstance(item, str):
        return f"a string {item[:20]!r}"
    return _kind(item) if item is None else f"a {type(item).__name__}"


def _coerce_problem(value: Any, ndim: int, exc: Exception) -> str:
    if ndim == 2 and isinstance(value, list):
        lengths = {len(row) if isinstance(row, (list, tuple)) else -1 for row in value}
        if -1 in lengths:
            return "must be a list of lists of numbers"
        if len(lengths) > 1:
            return f"is ragged: rows have lengths {sorted(lengths)}"
    return "must hold only numbers"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInstanceError(name, f"must be a number, got {_kind(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise InvalidInstanceError(
            name, "must be finite, got an integer too large for a float"
        ) from None
    if not math.isfinite(x):
        raise InvalidInstanceError(name, f"must be finite, got {x}")
    if x <= 0:
        raise InvalidInstanceError(name, f"must be > 0, got {x:g}")
    if x < _FLOAT_TINY:
        raise InvalidInstanceError(
            name, f"must be >= {_FLOAT_TINY:.3g} (a normal float), got {x:g}"
        )
    return x


def _blocks_per_device(value: Any) -> int:
    """``max_blocks_per_device``: an integer >= 1 (an integral float such as 2.0 is accepted)."""
    name = "max_blocks_per_device"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInstanceError(name, f"must be an integer >= 1, got {_kind(value)}")
    if not (math.isfinite(value) and float(value).is_integer()):
        raise InvalidInstanceError(name, f"must be an integer >= 1, got {value!r}")
    if value < 1:
        raise InvalidInstanceError(name, f"must be >= 1, got {int(value)}")
    return int(value)


def _extra_memory(value: Any) -> float:
    """``extra_block_memory``: a finite number >= 0."""
    name = "extra_block_memory"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInstanceError(name, f"must be a number >= 0, got {_kind(value)}")
    x = float(value)
    if not math.isfinite(x):
        raise InvalidInstanceError(name, f"must be finite, got {x}")
    if x < 0:
        raise InvalidInstanceError(name, f"must be >= 0, got {x:g}")
    return x


def _require_normal(name: str, arr: NDArray[np.float64]) -> None:
    """Refuse positive values below the least normal double (~2.2e-308): a subnormal
    ``r_k``, ``S`` or ``B`` has lost its precision, and the bandwidth split built from it
    could round to 0."""
    ok = arr >= _FLOAT_TINY
    if not ok.all():
        raise InvalidInstanceError(
            name, f"must be >= {_FLOAT_TINY:.3g} (a normal float), found {_first_bad(arr, ok)}"
        )


def _first_bad(arr: NDArray[np.float64], ok: NDArray[np.bool_]) -> str:
    idx = np.unravel_index(int(np.argmin(ok)), arr.shape)
    where = "".join(f"[{i}]" for i in idx)
    return f"{where} = {arr[idx]!r}"


def _require(name: str, arr: NDArray[np.float64], *, positive: bool) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        raise InvalidInstanceError(name, f"must be finite, found {_first_bad(arr, finite)}")
    ok = arr > 0 if positive else arr >= 0
    if not ok.all():
        bound = "> 0" if positive else ">= 0"
        raise InvalidInstanceError(name, f"must be {bound}, found {_first_bad(arr, ok)}")


def read_instance_file(path: str | Path) -> Any:
    """The JSON value of an instance file, or :class:`InvalidInstanceError` (field
    ``"file"``) saying in one line why it cannot be read: a missing or unreadable file, a
    directory, text that is not UTF-8 (a leading byte-order mark is allowed), invalid JSON,
    nesting too deep for the parser, or a number too long to read."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInstanceError("file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInstanceError(
            "file", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInstanceError(
            "file", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidInstanceError(
            "file", "not valid JSON for loladeft: nested too deeply"
        ) from None
    except ValueError:  # an integer beyond Python's digit limit for int(str)
        raise InvalidInstanceError(
            "file", "not valid JSON for loladeft: a number too long to read"
        ) from None


@dataclass(frozen=True, eq=False)
class Instance:
    """A block-allocation instance: problems P1 (equal bandwidth) and P2 (joint bandwidth).

    Parameters
    ----------
    J
        ``(K, L)`` computation latency (s) of device ``k`` for block ``l`` (eq. 3), depth
        order: column 0 is block ``l = 1``, nearest the output.
    block_memory
        Length-``L`` memory ``b(l)`` needed to compute block ``l``'s gradient.
    device_memory
        Length-``K`` available memory ``b̂_k`` of each device (same unit as ``block_memory``).
    spectral_efficiency
        Length-``K`` uplink spectral efficiency ``r_k > 0`` in bit/s/Hz (eq. 4).
    block_bits
        ``S > 0``, bits uploaded per block (eq. 5).
    bandwidth
        ``B > 0``, total uplink bandwidth in Hz.
    max_blocks_per_device
        Most blocks one device may carry in a round (default 1: the paper's model, C2).
        Above 1, a device carrying blocks ``A_k`` computes to depth ``max A_k`` once and
        uploads ``|A_k|`` gradients (:func:`~loladeft.system.latency.multiblock_device_latency`).
    extra_block_memory
        Memory each carried block beyond the deepest adds (default 0, same unit as
        ``block_memory``).

    Raises
    ------
    InvalidInstanceError
        If a field is malformed (wrong shape, NaN/inf, negative, ``L > K``...). The error
        names the field.

    Notes
    -----
    Arrays are stored read-only. ``is_monotone`` tells whether every row of ``J`` and
    ``block_memory`` are non-decreasing in depth, the paper's setting (Sec. IV-B), where the
    fast depth-aware methods apply.
    """

    J: NDArray[np.float64]
    block_memory: NDArray[np.float64]
    device_memory: NDArray[np.float64]
    spectral_efficiency: NDArray[np.float64]
    block_bits: float
    bandwidth: float
    max_blocks_per_device: int = 1
    extra_block_memory: float = 0.0
    is_monotone: bool = field(init=False)

    def __post_init__(self) -> None:
        J = _array("J", self.J, 2)
        K, L = J.shape
        b = _array("block_memory", self.block_memory, 1)
        mem = _array("device_memory", self.device_memory, 1)
        r = _array("spectral_efficiency", self.spectral_efficiency, 1)
        if b.size != L:
            raise InvalidInstanceError("block_memory", f"has {b.size} entries, J has L = {L}")
        for name, arr in (("device_memory", mem), ("spectral_efficiency", r)):
            if arr.size != K:
                raise InvalidInstanceError(name, f"has {arr.size} entries, J has K = {K} rows")
        per_device = _blocks_per_device(self.max_blocks_per_device)
        if per_device == 1 and L > K:
            raise InvalidInstanceError("J", f"has L = {L} blocks but only K = {K} devices (L > K)")
        if L > K * per_device:
            raise InvalidInstanceError(
                "J",
                f"has L = {L} blocks but K = {K} devices carry at most "
                f"{K * per_device} (max_blocks_per_device = {per_device})",
            )
        # One comparison pass decides monotonicity; a monotone row is finite and
        # non-negative iff its first entry is >= 0 and its last is finite.
        rows_monotone = bool((J[:, 1:] >= J[:, :-1]).all())
        if rows_monotone:
            _require("J", J[:, :1], positive=False)
            _require("J", J[:, -1:], positive=False)
        else:
            _require("J", J, positive=False)
        _require("block_memory", b, positive=False)
        _require("device_memory", mem, positive=False)
        _require("spectral_efficiency", r, positive=True)
        _require_normal("spectral_efficiency", r)
        set_ = object.__setattr__
        set_(self, "J", J)
        set_(self, "block_memory", b)
        set_(self, "device_memory", mem)
        set_(self, "spectral_efficiency", r)
        set_(self, "block_bits", _number("block_bits", self.block_bits))
        set_(self, "bandwidth", _number("bandwidth", self.bandwidth))
        set_(self, "max_blocks_per_device", per_device)
        set_(self, "extra_block_memory", _extra_memory(self.extra_block_memory))
        set_(self, "is_monotone", rows_monotone and bool((b[1:] >= b[:-1]).all()))

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Instance:
        """Build an instance from a mapping with the instance-file keys (extra keys ignored)."""
        if not isinstance(data, Mapping):
            raise InvalidInstanceError("instance", f"must be a JSON object, got {_kind(data)}")
        missing = [k for k in FIELDS if k not in data]
        if missing:
            raise InvalidInstanceError(missing[0], "missing key")
        optional = {k: data[k] for k in MULTIBLOCK_DEFAULTS if k in data}
        return cls(**{k: data[k] for k in FIELDS}, **optional)

    @classmethod
    def from_json(cls, path: str | Path) -> Instance:
        """Read an instance file (see the module docstring)."""
        return cls.from_mapping(read_instance_file(path))

    def to_dict(self) -> dict[str, Any]:
        """The instance-file form (plain lists), the inverse of :meth:`from_mapping`."""
        return {
            "J": self.J.tolist(),
            "block_memory": self.block_memory.tolist(),
            "device_memory": self.device_memory.tolist(),
            "spectral_efficiency": self.spectral_efficiency.tolist(),
            "block_bits": self.block_bits,
            "bandwidth": self.bandwidth,
        } | {k: getattr(self, k) for k, v in MULTIBLOCK_DEFAULTS.items() if getattr(self, k) != v}

    # -- derived quantities ---------------------------------------------------------------

    @property
    def num_devices(self) -> int:
        """``K``."""
        return self.J.shape[0]

    @property
    def num_blocks(self) -> int:
        """``L``."""
        return self.J.shape[1]

    @cached_property
    def memory_ok(self) -> NDArray[np.bool_]:
        """``(K, L)`` mask of C3: device ``k`` can hold block ``l``, ``b(l) <= b̂_k``."""
        return self.block_memory[None, :] <= self.device_memory[:, None]

    def equal_bandwidth(self) -> float:
        """Per-device bandwidth ``B / L`` of the equal split used by P1."""
        return self.bandwidth / self.num_blocks

    def latency_matrix(self) -> NDArray[np.float64]:
        """``T[k, l] = J[k, l] + S / ((B/L) r_k)`` under equal bandwidth (problem P1).

        The communication term is computed exactly as :func:`device_latency` recomputes it,
        so an allocation's latency equals one entry of this matrix bit for bit.
        """
        comm = upload_latency(self.block_bits, self.equal_bandwidth(), self.spectral_efficiency)
        with np.errstate(over="ignore"):  # beyond the largest double: inf, never finishes
            return self.J + comm[:, None]

    def device_latency(self, assignment: ArrayLike, bandwidth: ArrayLike) -> NDArray[np.float64]:
        """Per-device latency (eq. 7) of an allocation on this instance; with
        ``max_blocks_per_device > 1`` its multi-block form (eq. 7')."""
        if self.max_blocks_per_device > 1:
            return multiblock_device_latency(
                self.J, self.spectral_efficiency, self.block_bits, assignment, bandwidth
            )
        return device_latency(
            self.J, self.spectral_efficiency, self.block_bits, assignment, bandwidth
        )


class LatencyOverflowError(ValueError):
    """An allocation that meets C1–C3 and the budget but whose latency (eq. 7) is not a
    finite double: an upload ``S / (B_k r_k)`` (or ``J + upload``) overflows."""


def check_allocation(
    instance: Instance, assignment: ArrayLike, bandwidth: ArrayLike, *, rtol: float = 1e-9
) -> None:
    """Raise ``ValueError`` unless an allocation satisfies C1–C3 and the bandwidth budget
    and has a finite latency: every rule an answer of a scheme must follow, in one place
    (:func:`loladeft.solve` calls it on every answer before calling it feasible).

    C1: every block is computed by exactly one device (``assignment`` has ``L`` valid
    device indices). C2: no device computes more than ``max_blocks_per_device`` blocks (one,
    the paper's model). C3: ``b(l) <= b̂_k`` for every pair; a multi-block device carrying
    the set ``A_k`` needs ``b(max A_k) + (|A_k| - 1) e <= b̂_k`` with ``e =
    extra_block_memory`` (eq. 7', :func:`~loladeft.system.latency.multiblock_device_latency`).
    Bandwidth: finite, ``B_k > 0`` for used devices, ``B_k >= 0`` and
    ``sum B_k <= B (1 + rtol)``. Latency: every ``T_k`` (eq. 7, or 7') finite, else
    :class:`LatencyOverflowError` (a ``ValueError``) naming the device.

    The message starts with the rule broken (``"C1: "``, ``"C2: "``, ``"C3: "``,
    ``"bandwidth: "``, ``"latency: "``).
    """
    K, L, m = instance.num_devices, instance.num_blocks, instance.max_blocks_per_device
    a = np.asarray(assignment)
    bw = np.asarray(bandwidth, dtype=float)
    if a.shape != (L,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"C1: assignment must be {L} device indices, got shape {a.shape}")
    if a.min() < 0 or a.max() >= K:
        raise ValueError(f"C1: assignment has a device index outside 0..{K - 1}")
    count = np.bincount(a, minlength=K)
    used = np.flatnonzero(count)
    if count.max() > m:
        raise ValueError(
            "C2: a device computes more than one block"
            if m == 1
            else f"C2: device {int(np.argmax(count))} carries {count.max()} blocks, more "
            f"than max_blocks_per_device = {m}"
        )
    if m == 1:
        short = instance.block_memory > instance.device_memory[a]
        if short.any():
            l = int(np.argmax(short))
            raise ValueError(f"C3: device {a[l]} cannot hold block of depth {l + 1}")
    else:
        deepest = np.full(K, -1)
        np.maximum.at(deepest, a, np.arange(L))
        need = instance.block_memory[deepest[used]]
        need = need + (count[used] - 1) * instance.extra_block_memory
        short = need > instance.device_memory[used]
        if short.any():
            k = int(used[np.argmax(short)])
            raise ValueError(f"C3: device {k} cannot hold its {count[k]} block(s)")
    if bw.shape != (K,) or not np.isfinite(bw).all() or (bw < 0).any():
        raise ValueError(f"bandwidth must be {K} finite non-negative numbers")
    if (bw[used] <= 0).any():
        raise ValueError("bandwidth: a scheduled device has no bandwidth")
    if bw.sum() > instance.bandwidth * (1 + rtol):
        raise ValueError(
            f"bandwidth: sum {bw.sum():.6g} exceeds the budget {instance.bandwidth:.6g}"
        )
    _check_finite_latency(instance, a, bw)


def _check_finite_latency(
    instance: Instance, assignment: NDArray[np.intp], bandwidth: NDArray[np.float64]
) -> None:
    """The latency part of :func:`check_allocation` (C1–C3 and the budget already hold)."""
    T = instance.device_latency(assignment, bandwidth)
    bad = ~np.isfinite(T[assignment])
    if bad.any():
        l = int(np.argmax(bad))
        k = int(assignment[l])
        raise LatencyOverflowError(
            f"latency: device {k} (block of depth {l + 1}) never finishes: its upload "
            f"S / (B_k r_k) = {instance.block_bits:.6g} / ({bandwidth[k]:.6g} Hz x "
            f"spectral_efficiency[{k}] = {instance.spectral_efficiency[k]:.6g}) "
            f"plus J[{k}][{l}] = {instance.J[k, l]:.6g} s overflows"
        )
