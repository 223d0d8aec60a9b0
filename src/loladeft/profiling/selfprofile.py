"""A device's self-profile: its own row of ``J``, the memory each depth needs, and the memory
it has, measured on its own hardware with the run's model, batch, sequence lengths and
precision.

The paper's ``J[k, l]`` (eq. 3) is the time device ``k`` needs for ``M`` local iterations whose
backward pass is truncated at block ``l``. The scenario model obtains it from FLOP counts
divided by a reference device's throughput and a drawn compute factor; a self-profile times
the very step the device runs in a round
(:func:`loladeft.training.engine.device_gradient`: forward, backward down to block ``l``
only, the block's and the head's gradients) on ``M`` minibatches of the device's own shard:

* **warm-up:** one step at every depth, untimed; it also measures the memory of each depth;
* **timing:** ``repeats`` rounds over all depths, each round on fresh minibatches (the same
  ones at every depth, so depths are compared on equal inputs), interleaved so that a slow
  spell of the machine hits every depth alike; ``J[k, l]`` is the **median** over the
  repeats;
* **memory** ``b_k(l)``: on CUDA the allocator's peak during the step; on the CPU the model's
  resident weights, plus the bytes autograd saves for the backward pass (counted by the
  profiler's :class:`~loladeft.profiling.profiler.SavedTensorMeter`), plus the block's and the
  head's gradients;
* **available memory** ``b̂_k``: what the device can still allocate (CUDA's free memory, or
  ``min`` of the system's available memory and the room left under the process's memory
  cgroup), plus the weights already resident (``b_k(l)`` counts them too, so ``b̂_k >=
  b_k(l)`` says exactly that depth ``l`` fits).

:func:`linear_fit` fits the paper's linear depth model ``d(l) = a + c l`` to a profile
(least squares), a check of how well the measured row follows it.

The minibatches are read from a copy of the device's stream, so profiling consumes none of
the data the device trains on. Profiles are cached per process, node and run settings
(:func:`cached_profile`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DeviceProfile",
    "available_memory",
    "cached_profile",
    "cgroup_free_bytes",
    "linear_fit",
    "load_profile",
    "save_profile",
    "self_profile",
]

#: One profile per (run settings, device) in this process.
_CACHE: dict[tuple[str, int], DeviceProfile] = {}


@dataclass(frozen=True)
class DeviceProfile:
    """A device's measured row of the instance.

    Attributes
    ----------
    seconds
        ``J[k, l]`` for ``l = 1..L`` (depth order, ``l = 1`` nearest the output): seconds of
        ``M`` local iterations truncated at depth ``l``, median over ``repeats``.
    memory_bytes
        ``b_k(l)``: bytes computing depth ``l`` needs (weights included).
    available_bytes
        ``b̂_k``: bytes the device has for a block (weights included).
    repeats
        Timed repeats behind each median.
    spread
        Per depth, the interquartile range of the repeats over their median (noise).
    resident_bytes
        Bytes already resident that ``available_bytes`` and ``memory_bytes`` both count
        (the weights, on the CPU).
    where
        The torch device measured (``cpu``, ``cuda:0``).
    """

    seconds: tuple[float, ...]
    memory_bytes: tuple[float, ...]
    available_bytes: float
    repeats: int
    spread: tuple[float, ...] = ()
    resident_bytes: float = 0.0
    where: str = "cpu"


def cgroup_free_bytes(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """Bytes this process's memory cgroup still allows (limit minus non-reclaimable
    usage), or ``None`` when there is no limit (or no cgroup information).

    Reads cgroup v1 (``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``total_inactive_file``
    in ``memory.stat``) or v2 (``memory.max``, ``memory.current``, ``inactive_file``).
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if "memory" in controllers.split(","):
            base = root / "memory" / rel.lstrip("/")
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        elif controllers == "" and parts[0] == "0":
            base = root / rel.lstrip("/")
            files = ("memory.max", "memory.current", "inactive_file")
        else:
            continue
        try:
            raw = (base / files[0]).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:
                return None  # no limit
            usage = int((base / files[1]).read_text())
            stat = dict(
                ln.split() for ln in (base / "memory.stat").read_text().splitlines() if " " in ln
            )
            reclaimable = int(stat.get(files[2], 0))
        except (OSError, ValueError):
            continue  # e.g. the v2 line of a v1 host: no memory controller there
        return float(max(0, int(raw) - usage + reclaimable))
    return None


def available_memory(device: str = "cpu") -> float:
    """Bytes this process can still allocate on ``device`` (see the module notes)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return float(free)
    import psutil

    free = float(psutil.virtual_memory().available)
    room = cgroup_free_bytes()
    return free if room is None else min(free, room)


def linear_fit(seconds: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares fit of the paper's linear depth model ``d(l) = a + c l`` to a profile.

    Returns
    -------
    a, c, r2
        Intercept (s), slope (s per block) and the coefficient of determination.
    """
    y = np.asarray(seconds, dtype=float)
    if y.ndim != 1 or y.size < 2 or not np.isfinite(y).all():
        raise ValueError("seconds: need two or more finite values")
    depth = np.arange(1, y.size + 1, dtype=float)
    c, a = np.polyfit(depth, y, 1)
    resid = y - (a + c * depth)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else 1.0
    return float(a), float(c), r2


def _model_bytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def self_profile(
    trainer: Any,
    device: int,
    *,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> DeviceProfile:
    """Measure device ``device``'s row of ``J`` and its memory on this machine.

    Parameters
    ----------
    trainer
        The set-up engine (:class:`~loladeft.training.engine.Trainer`) the device computes
        with: its model, blocks, head, precision, and the device's batch stream.
    device
        The device ``k`` (its shard's minibatches are used).
    repeats
        Timed repeats per depth (median).
    clock
        Wall clock (seconds).

    Returns
    -------
    DeviceProfile
    """
    import torch

    from loladeft.profiling.profiler import SavedTensorMeter
    from loladeft.training.blocks import train_only
    from loladeft.training.data import collate
    from loladeft.training.engine import _autocast, device_gradient

    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats: must be an integer >= 1, got {repeats!r}")
    model, blocks, head = trainer.model, trainer.blocks, trainer.head
    M = trainer.cfg.scenario.local_iterations
    stream = copy.deepcopy(trainer.streams[device])  # peek: the real stream is untouched

    where = str(next(model.parameters()).device)
    cuda = where.startswith("cuda")

    def batches() -> list[dict[str, Any]]:
        out = [collate(trainer.train_data, stream.next(), trainer.pad_id) for _ in range(M)]
        return [{k: v.to(where) for k, v in b.items()} for b in out] if cuda else out

    weights = _model_bytes(model)
    head_grad = sum(p.numel() * 4 for p in head)
    L = len(blocks)
    memory = np.zeros(L)
    warm = batches()
    for d in range(L):  # warm-up, and the memory of each depth
        grad_bytes = sum(p.numel() * 4 for p in blocks[d]) + head_grad
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            device_gradient(model, blocks[d], head, warm, trainer.precision)
            torch.cuda.synchronize()
            memory[d] = float(torch.cuda.max_memory_allocated())
            continue
        params = [*blocks[d], *head]
        train_only(model, params)
        meter = SavedTensorMeter([*model.parameters(), *model.buffers()])
        saved = 0
        for batch in warm:
            with meter, _autocast(trainer.precision):
                loss = model(**batch).loss
            saved = max(saved, meter.bytes)
            (loss / M).backward()
            meter.close()
            meter = SavedTensorMeter([*model.parameters(), *model.buffers()])
        for p in params:
            p.grad = None
            p.requires_grad_(False)
        memory[d] = float(weights + saved + grad_bytes)
    times = np.zeros((repeats, L))
    for r in range(repeats):
        inputs = batches()
        for d in range(L):
            if cuda:
                torch.cuda.synchronize()
            t0 = clock()
            device_gradient(model, blocks[d], head, inputs, trainer.precision)
            if cuda:
                torch.cuda.synchronize()
            times[r, d] = clock() - t0
    median = np.median(times, axis=0)
    q1, q3 = np.percentile(times, [25, 75], axis=0)
    spread = tuple(float(x) for x in (q3 - q1) / np.where(median > 0, median, 1.0))
    resident = 0.0 if cuda else float(weights)
    return DeviceProfile(
        seconds=tuple(float(x) for x in median),
        memory_bytes=tuple(float(x) for x in memory),
        available_bytes=available_memory(where) + resident,
        repeats=repeats,
        spread=spread,
        resident_bytes=resident,
        where=where,
    )


def cached_profile(key: str, device: int, measure: Callable[[], DeviceProfile]) -> DeviceProfile:
    """The profile of ``(key, device)`` from this process's cache, measuring it once.

    ``key`` names the run settings (the run's config text): a change of model, batch,
    sequence length, precision or ``M`` measures afresh. The available memory is read anew
    on every call (it changes while the device runs).
    """
    hit = _CACHE.get((key, device))
    if hit is None:
        if len(_CACHE) > 8:
            _CACHE.clear()
        hit = _CACHE[(key, device)] = measure()
        return hit
    return replace(hit, available_bytes=available_memory(hit.where) + hit.resident_bytes)


def save_profile(profile: DeviceProfile, path: Path) -> None:
    """Write a profile as JSON (atomically)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(profile)), encoding="utf-8")
    tmp.replace(path)


def load_profile(path: Path) -> DeviceProfile:
    """Read a profile written by :func:`save_profile` (the available memory is read anew).

    Raises
    ------
    ValueError
        Not a valid profile.
    """
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    prof = DeviceProfile(
        seconds=tuple(float(x) for x in data["seconds"]),
        memory_bytes=tuple(float(x) for x in data["memory_bytes"]),
        available_bytes=1.0,
        repeats=int(data["repeats"]),
        spread=tuple(float(x) for x in data.get("spread", ())),
        resident_bytes=float(data.get("resident_bytes", 0.0)),
        where=str(data.get("where", "cpu")),
    )
    if not is_valid(prof) or len(prof.seconds) != len(prof.memory_bytes):
        raise ValueError(f"{path}: not a valid self-profile")
    return replace(prof, available_bytes=available_memory(prof.where) + prof.resident_bytes)


def is_valid(profile: DeviceProfile) -> bool:
    """Whether every number of a profile is finite and positive (what the server accepts)."""
    values = [*profile.seconds, *profile.memory_bytes, profile.available_bytes]
    return bool(values) and all(math.isfinite(v) and v > 0 for v in values)
