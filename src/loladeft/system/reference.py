"""Reference devices that turn a FLOP count into seconds (paper Sec. VI-A-2).

The paper anchors the "standard local computation capability" (``f_k = 1`` in eq. 3) to a
Snapdragon 8 Gen 3 and derives per-block latency from the number of floating-point
operations. It does not say which FLOP/s figure it used. loladeft uses a documented
*sustained* throughput, so that ``d(l) = FLOPs(l) / flops_per_second``:

``snapdragon-8-gen-3`` (default)
    Peak FP32 of its Adreno 750 GPU: 1536 FP32 ALUs x 2 FLOP per fused multiply-add x
    903 MHz = 2.774e12 FLOP/s, the figure listed in the variants table of the Wikipedia
    article "Adreno" (https://en.wikipedia.org/wiki/Adreno, Adreno 750 row; Qualcomm itself
    publishes no FLOP/s figure for this GPU). That is a **peak** figure. Training kernels on
    a phone GPU sustain far less: fp32 GEMMs from OpenCL/Vulkan back ends reach a fraction
    of the ALU peak, attention and layer-norm are memory bound (76.8 GB/s LPDDR5X), and a
    phone throttles under a sustained load within minutes. loladeft applies a derating
    factor of 0.25 (an assumption, not a measurement), giving a **sustained** 6.9e11 FLOP/s.
``snapdragon-8-gen-3-peak``
    The same GPU at its peak, not derated, 2.774e12 FLOP/s, for an optimistic bound.
``snapdragon-8-gen-3-cpu``
    The Kryo CPU's vector peak: Cortex-X4 (4 x 128-bit FMA pipes, 32 FLOP/cycle, 3.3 GHz)
    + 5 x Cortex-A720 (2 pipes, 16 FLOP/cycle, 3 x 3.2 + 2 x 3.0 GHz) + 2 x Cortex-A520
    (8 FLOP/cycle, 2.3 GHz) = 3.9e11 FLOP/s peak (clocks from Qualcomm's product brief,
    pipe widths from Arm's core descriptions), derated by the same 0.25 to a sustained
    9.8e10 FLOP/s.

Every figure is a parameter of the simulator, not a fact about the paper: ``loladeft
simulate --config`` can pick another device, and :func:`seconds_for_flops` accepts any
:class:`ReferenceDevice`. Only the *ratio* of compute to upload latency depends on it;
the relative ranking of the schemes at a fixed ratio does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Derating from peak to sustained throughput applied to the Snapdragon entries (assumed).
SUSTAINED_FRACTION = 0.25

_ADRENO_750_PEAK = 1536 * 2 * 903e6  # 2.774e12 FLOP/s
_KRYO_8G3_PEAK = 32 * 3.3e9 + 16 * (3 * 3.2e9 + 2 * 3.0e9) + 8 * 2 * 2.3e9  # 3.9e11 FLOP/s


@dataclass(frozen=True)
class ReferenceDevice:
    """A device with ``f_k = 1``: the FLOP/s that turns a FLOP count into seconds.

    Parameters
    ----------
    name
        Registry key (``"snapdragon-8-gen-3"``).
    flops_per_second
        Sustained floating-point throughput in FLOP/s (> 0, finite).
    source
        Where the figure comes from and how it was derated, in one sentence.
    """

    name: str
    flops_per_second: float
    source: str

    def __post_init__(self) -> None:
        rate = self.flops_per_second
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise ValueError(f"flops_per_second: must be a number, got {type(rate).__name__}")
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"flops_per_second: must be finite and > 0, got {rate!r}")
        object.__setattr__(self, "flops_per_second", float(rate))


DEFAULT_REFERENCE = "snapdragon-8-gen-3"

REFERENCE_DEVICES: dict[str, ReferenceDevice] = {
    d.name: d
    for d in (
        ReferenceDevice(
            "snapdragon-8-gen-3",
            SUSTAINED_FRACTION * _ADRENO_750_PEAK,
            "Adreno 750 FP32 peak 2.774e12 FLOP/s (1536 ALUs x 2 x 903 MHz, Wikipedia "
            "'Adreno' variants table) x 0.25 assumed sustained fraction",
        ),
        ReferenceDevice(
            "snapdragon-8-gen-3-peak",
            _ADRENO_750_PEAK,
            "Adreno 750 FP32 peak 2.774e12 FLOP/s (1536 ALUs x 2 x 903 MHz, Wikipedia "
            "'Adreno' variants table), not derated",
        ),
        ReferenceDevice(
            "snapdragon-8-gen-3-cpu",
            SUSTAINED_FRACTION * _KRYO_8G3_PEAK,
            "Kryo CPU NEON FP32 peak 3.9e11 FLOP/s (X4 32 FLOP/cycle @ 3.3 GHz, 5 x A720 "
            "16 FLOP/cycle @ 3.0-3.2 GHz, 2 x A520 8 FLOP/cycle @ 2.3 GHz) x 0.25",
        ),
    )
}


def get_reference(device: str | ReferenceDevice = DEFAULT_REFERENCE) -> ReferenceDevice:
    """Look up a reference device by name (or pass a :class:`ReferenceDevice` through).

    Raises
    ------
    KeyError
        Unknown name; the message lists the known ones.
    """
    if isinstance(device, ReferenceDevice):
        return device
    try:
        return REFERENCE_DEVICES[device]
    except KeyError:
        known = ", ".join(REFERENCE_DEVICES)
        raise KeyError(f"reference device: unknown {device!r}; choose one of {known}") from None


def seconds_for_flops(
    flops: ArrayLike, device: str | ReferenceDevice = DEFAULT_REFERENCE
) -> float | NDArray[np.float64]:
    """Run time of ``flops`` floating-point operations on a reference device (``f_k = 1``).

    ``d = flops / flops_per_second``: the ``d(l)`` of eq. (3) when ``flops`` is the cost of
    one step that back-propagates down to block ``l``.

    Parameters
    ----------
    flops
        A FLOP count or an array of them (non-negative, finite).
    device
        A name from :data:`REFERENCE_DEVICES` or a :class:`ReferenceDevice`.

    Returns
    -------
    float or ndarray
        Seconds, a float for a scalar input, else an array of the input's shape.

    Examples
    --------
    >>> round(seconds_for_flops(6.935e11), 3)
    1.0
    """
    ref = get_reference(device)
    arr = np.asarray(flops, dtype=float)
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("flops: must be finite and >= 0")
    seconds = arr / ref.flops_per_second
    return float(seconds) if seconds.ndim == 0 else seconds
