"""Per-depth cost profiles of a transformer fine-tuned with LoRA: the ``d(l)`` and ``b(l)`` of
the paper (Sec. II-B, Fig. 4), as a validated, JSON-round-tripping value.

A *profile* describes, for every block depth ``l = 1..L``, what one on-device step costs when
back-propagation stops at block ``l``'s LoRA parameters (Algorithm 1: "terminate gradient
propagation after the scheduled block's gradient is obtained"). Depth ``l = 1`` is the **last**
encoder layer, nearest the output and the cheapest; ``l = L`` is the first layer, nearest the
input. This is the column order of :class:`loladeft.system.instance.Instance`.

The JSON file (written by ``loladeft profile``, read by the simulator)::

    {
      "model": "roberta-base", "dtype": "fp32", "batch": 32, "seq": 128,
      "lora_r": 8, "lora_targets": ["query", "value"],
      "block_bits": 786432,              # S = LoRA params per block x bits per param
      "source": "analytic" | "measured",
      "note": "free text: how it was made",
      "meta": {...},                     # optional, free-form (versions, host, options)
      "depths": [
        {"depth": 1, "flops": ..., "activation_bytes": ..., "weight_bytes": ...,
         "block_param_bytes": ..., "host_seconds": null | s,
         # optional: "optimizer_bytes", "peak_bytes", "analytic_flops",
         #           "analytic_activation_bytes", "reference_seconds"
        }, ...
      ]
    }

``flops`` counts one forward pass plus the backward pass truncated at block ``l`` for one step
of one batch; ``activation_bytes`` the tensors autograd keeps for that backward pass;
``weight_bytes`` the frozen model weights the device holds; ``block_param_bytes`` the block's
LoRA parameters plus their gradients. This module needs only the standard library and numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loladeft.exceptions import FieldError, InputError

#: Names of the profiles shipped in ``loladeft/data/<name>.json``.
BUILTIN_PROFILES = ("roberta-base", "minilm", "llama-7b")

#: Data types a profile may be measured in, and their size in bytes.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

SOURCES = ("analytic", "measured")


class InvalidProfileError(FieldError):
    """A profile (or one of its fields, e.g. ``"depths[3].flops"``) is malformed."""

    prefix = "profile: "


def _int(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidProfileError(name, f"must be an integer, got {_kind(value)}")
    if value < minimum:
        raise InvalidProfileError(name, f"must be >= {minimum}, got {value}")
    return int(value)


def _float(name: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidProfileError(name, f"must be a number, got {_kind(value)}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InvalidProfileError(name, f"must be finite and >= 0, got {value!r}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass(frozen=True)
class DepthCost:
    """Cost of one on-device step that back-propagates down to the block at ``depth``.

    Parameters
    ----------
    depth
        Block depth ``l`` (1 = the last layer, nearest the output).
    flops
        Floating-point operations of one forward pass and the backward pass truncated at
        block ``l``'s LoRA parameters, for one step on one batch (multiply-add = 2 FLOPs).
    activation_bytes
        Bytes of the tensors autograd saves for that backward pass (deduplicated by storage,
        parameters excluded).
    weight_bytes
        Bytes of the frozen model weights held on the device (the whole model).
    block_param_bytes
        Bytes of block ``l``'s LoRA parameters plus their gradients.
    host_seconds
        Median wall time of one such step on the measuring host, or ``None`` if not timed.
    optimizer_bytes
        Optimizer state held on the device (0 in DEFT: the server keeps Adam's moments).
    peak_bytes
        The allocator's peak during the step where measurable, else ``None``.
    analytic_flops, analytic_activation_bytes
        The closed-form values of :mod:`loladeft.profiling.analytic`, beside measured ones.
    reference_seconds
        ``flops`` on the profile's reference device (``meta["reference_device"]``).
    """

    depth: int
    flops: float
    activation_bytes: float
    weight_bytes: float
    block_param_bytes: float
    host_seconds: float | None = None
    optimizer_bytes: float = 0.0
    peak_bytes: float | None = None
    analytic_flops: float | None = None
    analytic_activation_bytes: float | None = None
    reference_seconds: float | None = None

    @property
    def memory_bytes(self) -> float:
        """On-device memory ``b(l)``: weights + activations + LoRA params/grads + optimizer."""
        return (
            self.weight_bytes
            + self.activation_bytes
            + self.block_param_bytes
            + self.optimizer_bytes
        )

    @classmethod
    def from_mapping(cls, data: Any, where: str = "depths[?]") -> DepthCost:
        """Build from a JSON object, raising :class:`InvalidProfileError` naming the field."""
        if not isinstance(data, Mapping):
            raise InvalidProfileError(where, f"must be an object, got {_kind(data)}")
        for key in ("depth", "flops", "activation_bytes", "weight_bytes", "block_param_bytes"):
            if key not in data:
                raise InvalidProfileError(f"{where}.{key}", "is missing")
        optional = (
            "host_seconds",
            "peak_bytes",
            "analytic_flops",
            "analytic_activation_bytes",
            "reference_seconds",
        )
        return cls(
            depth=_int(f"{where}.depth", data["depth"], minimum=1),
            flops=_float(f"{where}.flops", data["flops"]),  # type: ignore[arg-type]
            activation_bytes=_float(f"{where}.activation_bytes", data["activation_bytes"]),  # type: ignore[arg-type]
            weight_bytes=_float(f"{where}.weight_bytes", data["weight_bytes"]),  # type: ignore[arg-type]
            block_param_bytes=_float(f"{where}.block_param_bytes", data["block_param_bytes"]),  # type: ignore[arg-type]
            optimizer_bytes=_float(f"{where}.optimizer_bytes", data.get("optimizer_bytes", 0.0)),  # type: ignore[arg-type]
            **{k: _float(f"{where}.{k}", data.get(k), optional=True) for k in optional},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``None`` → ``null``)."""
        return asdict(self)


@dataclass(frozen=True)
class Profile:
    """Per-depth costs of fine-tuning one model with LoRA (see the module docstring).

    Parameters
    ----------
    model
        Model name or path it was made for (``"roberta-base"``).
    dtype
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    batch, seq
        Batch size and sequence length of one step.
    lora_r
        LoRA rank.
    lora_targets
        Module names LoRA was applied to in every block (``("query", "value")``).
    block_bits
        ``S``: LoRA parameters per block times bits per parameter (bits uploaded per block).
    depths
        One :class:`DepthCost` per depth, in order ``1..L``.
    source
        ``"analytic"`` (closed-form formulas) or ``"measured"`` (``loladeft profile``).
    note
        Free text: how the profile was made.
    meta
        Free-form extras (versions, host, reference device, options).
    """

    model: str
    dtype: str
    batch: int
    seq: int
    lora_r: int
    lora_targets: tuple[str, ...]
    block_bits: int
    depths: tuple[DepthCost, ...]
    source: str = "measured"
    note: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise InvalidProfileError("model", "must be a non-empty string")
        if self.dtype not in DTYPE_BYTES:
            raise InvalidProfileError(
                "dtype", f"must be one of {', '.join(DTYPE_BYTES)}, got {self.dtype!r}"
            )
        for name in ("batch", "seq", "lora_r", "block_bits"):
            object.__setattr__(self, name, _int(name, getattr(self, name), minimum=1))
        targets = self.lora_targets
        if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
            raise InvalidProfileError("lora_targets", "must be a non-empty list of module names")
        if not all(isinstance(t, str) and t for t in targets):
            raise InvalidProfileError("lora_targets", "must hold non-empty strings")
        object.__setattr__(self, "lora_targets", tuple(targets))
        if self.source not in SOURCES:
            raise InvalidProfileError(
                "source", f"must be one of {', '.join(SOURCES)}, got {self.source!r}"
            )
        if not isinstance(self.note, str):
            raise InvalidProfileError("note", f"must be a string, got {_kind(self.note)}")
        if not isinstance(self.meta, Mapping):
            raise InvalidProfileError("meta", f"must be an object, got {_kind(self.meta)}")
        depths = tuple(self.depths)
        if not depths:
            raise InvalidProfileError("depths", "is empty")
        for i, d in enumerate(depths):
            if not isinstance(d, DepthCost):
                raise InvalidProfileError(f"depths[{i}]", "must be a DepthCost")
            if d.depth != i + 1:
                raise InvalidProfileError(
                    f"depths[{i}].depth", f"must be {i + 1} (depths in order 1..L), got {d.depth}"
                )
        object.__setattr__(self, "depths", depths)

    # ------------------------------------------------------------------ per-depth arrays
    @property
    def num_blocks(self) -> int:
        """``L``, the number of blocks (depths)."""
        return len(self.depths)

    def _column(self, name: str) -> NDArray[np.float64]:
        arr = np.array([getattr(d, name) for d in self.depths], dtype=float)
        arr.flags.writeable = False
        return arr

    @property
    def flops(self) -> NDArray[np.float64]:
        """FLOPs per step by depth, shape ``(L,)``."""
        return self._column("flops")

    @property
    def activation_bytes(self) -> NDArray[np.float64]:
        """Saved-activation bytes by depth, shape ``(L,)``."""
        return self._column("activation_bytes")

    @property
    def weight_bytes(self) -> NDArray[np.float64]:
        """Frozen-weight bytes by depth, shape ``(L,)`` (the same for every depth)."""
        return self._column("weight_bytes")

    @property
    def block_param_bytes(self) -> NDArray[np.float64]:
        """LoRA parameter + gradient bytes by depth, shape ``(L,)``."""
        return self._column("block_param_bytes")

    @property
    def optimizer_bytes(self) -> NDArray[np.float64]:
        """On-device optimizer state by depth, shape ``(L,)``."""
        return self._column("optimizer_bytes")

    @property
    def memory_bytes(self) -> NDArray[np.float64]:
        """On-device memory ``b(l)`` in bytes by depth, shape ``(L,)``."""
        return self._column("memory_bytes")

    @property
    def host_seconds(self) -> NDArray[np.float64]:
        """Host wall time by depth, shape ``(L,)``; NaN where not timed."""
        return np.array([np.nan if d.host_seconds is None else d.host_seconds for d in self.depths])

    @property
    def bytes_per_element(self) -> int:
        """Size of one element of :attr:`dtype` in bytes."""
        return DTYPE_BYTES[self.dtype]

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with the keys of the module docstring."""
        return {
            "model": self.model,
            "dtype": self.dtype,
            "batch": self.batch,
            "seq": self.seq,
            "lora_r": self.lora_r,
            "lora_targets": list(self.lora_targets),
            "block_bits": self.block_bits,
            "source": self.source,
            "note": self.note,
            "meta": dict(self.meta),
            "depths": [d.to_dict() for d in self.depths],
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the profile to ``path`` (parents created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_mapping(cls, data: Any) -> Profile:
        """Build from a JSON object, raising :class:`InvalidProfileError` naming the field."""
        if not isinstance(data, Mapping):
            raise InvalidProfileError("<root>", f"must be a JSON object, got {_kind(data)}")
        for key in ("model", "dtype", "batch", "seq", "lora_r", "block_bits", "depths"):
            if key not in data:
                raise InvalidProfileError(key, "is missing")
        depths = data["depths"]
        if not isinstance(depths, list):
            raise InvalidProfileError("depths", f"must be a list of objects, got {_kind(depths)}")
        return cls(
            model=data["model"],
            dtype=data["dtype"],
            batch=data["batch"],
            seq=data["seq"],
            lora_r=data["lora_r"],
            lora_targets=tuple(data.get("lora_targets", ("query", "value"))),
            block_bits=data["block_bits"],
            depths=tuple(DepthCost.from_mapping(d, f"depths[{i}]") for i, d in enumerate(depths)),
            source=data.get("source", "measured"),
            note=data.get("note", ""),
            meta=data.get("meta", {}) or {},
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Profile:
        """Read and validate a profile JSON file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"profile: cannot read {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidProfileError(
                str(path), f"is not valid JSON (line {exc.lineno}: {exc.msg})"
            ) from None
        return cls.from_mapping(data)


def builtin_profile_path(name: str) -> Path:
    """Path of the shipped profile ``name`` (one of :data:`BUILTIN_PROFILES`)."""
    return Path(str(resources.files("loladeft") / "data" / f"{name}.json"))


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """Load a builtin profile by name (``"roberta-base"``, ``"minilm"``) or a JSON file.

    Raises
    ------
    InputError
        Neither a builtin name nor an existing file.
    InvalidProfileError
        The file is malformed; the message names the field.

    Examples
    --------
    >>> p = load_profile("roberta-base")
    >>> p.num_blocks, p.block_bits
    (12, 786432)
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    text = str(name_or_path)
    if text in BUILTIN_PROFILES and not Path(text).exists():
        return Profile.from_json(builtin_profile_path(text))
    path = Path(text)
    if not path.is_file():
        known = ", ".join(BUILTIN_PROFILES)
        raise InputError(f"profile: {text!r} is neither a builtin profile ({known}) nor a file")
    return Profile.from_json(path)
