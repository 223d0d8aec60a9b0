"""Checkpoints without pickle: tensors in a safetensors file, everything else in JSON.

A checkpoint ``checkpoint.json`` (the name is the caller's) and its tensor file
``checkpoint.<hash>.safetensors`` next to it::

    checkpoint.json
      {"format": "loladeft-checkpoint", "version": 2,
       "tensors": {"file": "checkpoint.<16 hex>.safetensors", "sha256": "<64 hex>"},
       "config": {...}, "round": 3, "sim_time": {"jbba": 12.5}, "streams": [24, 16, ...],
       "optimizer": {"param_groups": [...], "state": {"0": {}}}, "scheduler": {...},
       "history": [{"round": 0, "train_loss": "nan", ...}, ...],
       "digest": "<sha256 of this object without the digest>"}
    checkpoint.<16 hex>.safetensors
      weights/<parameter name>   LoRA and head weights
      optimizer/<i>/<key>        AdamW's step, exp_avg, exp_avg_sq of parameter i
      torch_rng                  torch.get_rng_state() (uint8)

Floats that are not finite (the ``nan`` loss of round 0) are the strings ``"nan"``,
``"inf"``, ``"-inf"``, so the JSON is strict.

*Reading never unpickles* (no ``torch.load``): the JSON is parsed, its digest and the tensor
file's SHA-256 are checked, the tensors are read with :func:`safetensors.torch.load`, and
every value is checked against what the run expects (the fresh trainer's own state as a
template): names, shapes and dtypes of tensors, types of every counter and optimizer setting.
Anything else (edited JSON, a swapped or truncated tensor file, wrong shapes or types,
missing keys, an old pickled ``checkpoint.pt``) is a :class:`InputError` in one line.

*Writing is atomic*: the tensor file is named by its content hash, so the JSON, written last
and renamed into place, is the commit; a kill at any point leaves the previous checkpoint
whole. Tensor files no JSON refers to are removed after the commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loladeft.exceptions import InputError

__all__ = ["FORMAT", "VERSION", "load_weights", "read", "write"]

FORMAT = "loladeft-checkpoint"
VERSION = 2
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# ------------------------------------------------------------------ writing
def _float_out(x: float) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _plain(value: Any) -> Any:
    """A JSON value: tuples -> lists, non-finite floats -> strings."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return _float_out(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__} in JSON")


def _digest(doc: Mapping[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write the engine's state (:meth:`loladeft.training.engine.Trainer.state`) to ``path``
    (JSON) and its tensor file, atomically.

    ``state`` holds ``weights`` (name -> tensor), ``optimizer`` and ``scheduler``
    (``state_dict()`` of torch), ``torch_rng`` (tensor), and plain values (``config``,
    ``round``, ``sim_time``, ``streams``, ``history``).
    """
    import torch
    from safetensors.torch import save

    path = Path(path)
    tensors: dict[str, Any] = {f"weights/{n}": t for n, t in state["weights"].items()}
    opt_state: dict[str, dict[str, Any]] = {}
    for index, entry in state["optimizer"]["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                plain[key] = value
        opt_state[str(index)] = plain
    tensors["torch_rng"] = state["torch_rng"]
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    sha = hashlib.sha256(data).hexdigest()
    tensor_file = f"{path.stem}.{sha[:16]}.safetensors"
    plain_state = {
        k: v for k, v in state.items() if k not in ("weights", "optimizer", "torch_rng", "format")
    }
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "tensors": {"file": tensor_file, "sha256": sha},
        **_plain(plain_state),
        "optimizer": {
            "param_groups": _plain(state["optimizer"]["param_groups"]),
            "state": _plain(opt_state),
        },
    }
    doc["digest"] = _digest(doc)
    _write_bytes(path.with_name(tensor_file), data)
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    _write_bytes(path, text.encode())
    for old in path.parent.glob(f"{path.stem}.*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)


# ------------------------------------------------------------------ reading
def _fail(path: Path, why: str) -> InputError:
    return InputError(" ".join(f"resume: {path}: {why}".split()))


def _number(value: Any, where: str, *, integer: bool = False, low: float | None = None) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got a boolean")
    if integer:
        if not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {type(value).__name__}")
    else:
        if isinstance(value, str) and value in _FLOATS:
            value = _FLOATS[value]
        if not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {type(value).__name__}")
        value = float(value)
    if low is not None and not value >= low:
        raise ValueError(f"{where} must be >= {low:g}, got {value}")
    return value


def _like(value: Any, template: Any, where: str) -> Any:
    """``value`` checked to have ``template``'s structure and types (and converted to them:
    lists to tuples, numbers to floats)."""
    if isinstance(template, bool) or template is None:
        if value is not template and not (isinstance(template, bool) and isinstance(value, bool)):
            raise ValueError(f"{where} must be {json.dumps(template)}-typed, got {value!r}")
        return value
    if isinstance(template, int):
        return _number(value, where, integer=True)
    if isinstance(template, float):
        return _number(value, where)
    if isinstance(template, str):
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {type(value).__name__}")
        return value
    if isinstance(template, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(template):
            raise ValueError(f"{where} must be a list of {len(template)} values")
        pairs = enumerate(zip(value, template, strict=True))
        items = [_like(v, t, f"{where}[{i}]") for i, (v, t) in pairs]
        return type(template)(items)
    if isinstance(template, Mapping):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object, got {type(value).__name__}")
        keys = {str(k): k for k in template}
        if set(value) != set(keys):
            missing, extra = set(keys) - set(value), set(value) - set(keys)
            what = f"misses {sorted(missing)}" if missing else f"has unknown keys {sorted(extra)}"
            raise ValueError(f"{where} {what}")
        return {keys[k]: _like(value[k], template[keys[k]], f"{where}.{k}") for k in keys}
    raise ValueError(f"{where}: unsupported template type {type(template).__name__}")


def _float_map(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object, got {type(value).__name__}")
    return {str(k): _number(v, f"{where}.{k}") for k, v in value.items()}


_FIELD_TYPES = {"int", "float", "bool", "dict[str, float]"}


def _entry(value: Any, fields: Mapping[str, str], where: str) -> dict[str, Any]:
    """A history entry with the given field types (``int``, ``float``, ``bool``,
    ``dict[str, float]``)."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    required = set(fields)
    if not required <= set(value) or not set(value) <= required:
        raise ValueError(f"{where} must have the keys {sorted(required)}")
    out: dict[str, Any] = {}
    for key, kind in fields.items():
        v = value[key]
        if kind == "int":
            out[key] = _number(v, f"{where}.{key}", integer=True, low=0)
        elif kind == "float":
            out[key] = _number(v, f"{where}.{key}")
        elif kind == "bool":
            if not isinstance(v, bool):
                raise ValueError(f"{where}.{key} must be true or false")
            out[key] = v
        else:
            out[key] = _float_map(v, f"{where}.{key}")
    return out


def _tensor(tensors: Mapping[str, Any], key: str, shape: Sequence[int], dtype: Any) -> Any:
    if key not in tensors:
        raise ValueError(f"tensor {key} is missing")
    t = tensors[key]
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
        raise ValueError(
            f"tensor {key} is {t.dtype} {list(t.shape)}, expected {dtype} {list(shape)}"
        )
    return t


def _open(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked JSON document and the tensors of a checkpoint (integrity only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read it ({exc.strerror or exc})") from None
    if raw.startswith(_PICKLE_MAGIC):
        raise _fail(
            path,
            "old pickle checkpoint, which loladeft never loads (it could run code); "
            "rerun without --resume into another --out",
        )
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=lambda c: c)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _fail(path, "is not a JSON checkpoint") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _fail(path, "is not a loladeft checkpoint")
    if doc.get("version") != VERSION:
        raise _fail(path, f"checkpoint version {doc.get('version')!r}, expected {VERSION}")
    if not isinstance(doc.get("digest"), str) or doc["digest"] != _digest(doc):
        raise _fail(path, "its content does not match its digest (edited or corrupted)")
    try:
        info = doc["tensors"]
        name, sha = info["file"], info["sha256"]
        if not (isinstance(name, str) and isinstance(sha, str)) or Path(name).name != name:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise _fail(path, "tensors: needs a file name and its sha256") from None
    try:
        data = path.with_name(name).read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read its tensor file {name} ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise _fail(path, f"tensor file {name} does not match its sha256 (swapped or corrupted)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise _fail(path, f"tensor file {name} is not valid safetensors ({exc})") from None
    return doc, tensors


def load_weights(path: str | Path) -> dict[str, Any]:
    """The LoRA and head weights of a checkpoint by parameter name (integrity checked: the
    JSON digest and the tensor file's SHA-256)."""
    _, tensors = _open(Path(path))
    return {k.removeprefix("weights/"): v for k, v in tensors.items() if k.startswith("weights/")}


def read(
    path: str | Path,
    template: Mapping[str, Any],
    params: Sequence[Any],
    history_fields: Mapping[str, str],
) -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`write`.

    Parameters
    ----------
    path
        The checkpoint's JSON file.
    template
        The fresh trainer's own :meth:`~loladeft.training.engine.Trainer.state`: the
        checkpoint must have its weight names, shapes and dtypes, its optimizer groups and
        scheduler keys and types, its number of streams and its RNG state size.
    params
        The optimizer's parameters in its order (shapes of AdamW's moments).
    history_fields
        Field name -> type name of a history entry (``"int"``, ``"float"``, ``"bool"``,
        ``"dict[str, float]"``).

    Returns
    -------
    dict
        The state, in :func:`write`'s input layout (``config`` unchecked: the caller
        compares it with its own).

    Raises
    ------
    InputError
        Anything wrong, in one line (see the module docstring).
    """
    path = Path(path)
    doc, tensors = _open(path)
    try:
        return _check(doc, tensors, template, params, history_fields)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise _fail(path, f"malformed ({type(exc).__name__}: {exc})") from None


def _check(
    doc: dict[str, Any],
    tensors: Mapping[str, Any],
    template: Mapping[str, Any],
    params: Sequence[Any],
    history_fields: Mapping[str, str],
) -> dict[str, Any]:
    import torch

    for key in ("config", "round", "sim_time", "streams", "optimizer", "scheduler", "history"):
        if key not in doc:
            raise ValueError(f"{key} is missing")
    if not isinstance(doc["config"], dict):
        raise ValueError("config must be an object")
    weights = {
        n: _tensor(tensors, f"weights/{n}", t.shape, t.dtype)
        for n, t in template["weights"].items()
    }
    rng = template["torch_rng"]
    torch_rng = _tensor(tensors, "torch_rng", rng.shape, rng.dtype)
    opt = doc["optimizer"]
    if not isinstance(opt, dict) or set(opt) != {"param_groups", "state"}:
        raise ValueError("optimizer must hold param_groups and state")
    groups = _like(
        opt["param_groups"], template["optimizer"]["param_groups"], "optimizer.param_groups"
    )
    for got, want in zip(groups, template["optimizer"]["param_groups"], strict=True):
        if got["params"] != want["params"]:
            raise ValueError("optimizer.param_groups: parameters in another order")
    if not isinstance(opt["state"], dict):
        raise ValueError("optimizer.state must be an object")
    moments = ("exp_avg", "exp_avg_sq")
    opt_state: dict[int, dict[str, Any]] = {}
    for key, plain in opt["state"].items():
        if not key.isdigit() or int(key) >= len(params) or plain != {}:
            raise ValueError(f"optimizer.state: unexpected entry {key!r}")
        i = int(key)
        p = params[i]
        entry = {m: _tensor(tensors, f"optimizer/{i}/{m}", p.shape, p.dtype) for m in moments}
        entry["step"] = _tensor(tensors, f"optimizer/{i}/step", (), torch.float32)
        opt_state[i] = {"step": entry["step"], **{m: entry[m] for m in moments}}
    known = {"torch_rng"} | {f"weights/{n}" for n in weights}
    known |= {f"optimizer/{i}/{k}" for i in opt_state for k in ("step", *moments)}
    extra = sorted(set(tensors) - known)
    if extra:
        raise ValueError(f"unexpected tensor {extra[0]}")
    streams = doc["streams"]
    if not isinstance(streams, list) or len(streams) != len(template["streams"]):
        raise ValueError(f"streams must be a list of {len(template['streams'])} integers")
    return {
        "config": doc["config"],
        "round": _number(doc["round"], "round", integer=True, low=0),
        "sim_time": {
            k: _number(v, f"sim_time.{k}", low=0)
            for k, v in _like(doc["sim_time"], template["sim_time"], "sim_time").items()
        },
        "weights": weights,
        "optimizer": {"state": opt_state, "param_groups": groups},
        "scheduler": _like(doc["scheduler"], template["scheduler"], "scheduler"),
        "streams": [
            _number(s, f"streams[{i}]", integer=True, low=0) for i, s in enumerate(streams)
        ],
        "torch_rng": torch_rng,
        "history": _history(doc["history"], history_fields),
    }


def _history(value: Any, fields: Mapping[str, str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ValueError("history must be a list")
    unknown = set(fields.values()) - _FIELD_TYPES
    if unknown:  # pragma: no cover - a programming error, not bad input
        raise TypeError(f"history field types {sorted(unknown)} are not supported")
    return [_entry(h, fields, f"history[{i}]") for i, h in enumerate(value)]
