"""Robust statistics of the Monte-Carlo round latencies: quartiles and a heavy-tail flag.

Why the mean is not always a number
-----------------------------------
Under Rayleigh fading the channel power ``|h|^2`` is ``Exp(1)``, whose density at 0 is 1, so
``P(|h|^2 < e) ~ e`` and the upload time ``S / (B_k log2(1 + rho |h|^2)) ~ S ln 2 / (B_k rho
|h|^2)`` has a tail ``P(T > t) ~ c / t``: a Pareto tail of index 1, and
``E[1 / log2(1 + rho |h|^2)]`` is infinite at every SNR ``rho``. A scheme that may schedule
a device whatever its channel (``comp-aware``, ``random``, and every scheme when ``K = L``)
inherits that tail: its expected round latency is infinite, and its Monte-Carlo mean does not
converge but grows with the number of rounds, driven by the few worst channels drawn. A
scheme that picks the best ``L`` of ``K > L`` channels (or trades a bad channel for another
device, as ``ba`` and ``jbba`` do) only meets the ``(K - L + 1)``-th smallest channel power,
whose density vanishes at 0 like ``e^(K-L)``: a tail of index ``K - L + 1``, and a finite mean
and variance once ``K - L >= 2``.

The rule
--------
:func:`tail_index` is Hill's estimator of the tail index ``alpha`` (``P(T > t) ~ t^-alpha``)
on the largest 5% of the finite latencies (at least 10 of them):
``alpha = 1 / mean(log(x_(i) / x_(k+1)))``, ``i = 1..k``. A scheme is **heavy-tailed** at a
point (:func:`heavy_tail`) when ``alpha < 2.5``. The index is 1 for the channel-blind schemes
(no mean) and ``K - L + 1 >= 3`` for the selective ones once ``K >= L + 2`` (finite mean
and variance); Hill's estimate is biased upwards where the compute-bound body of the
distribution reaches into the largest 5% (high SNR, little upload), so the cut sits between
1 and 3 with room for that bias, above the infinite-variance bound 2. Measured on the
paper's scenario (1000 rounds, several seeds, 0-20 dB, both SNR conventions): 0.9-2.0 for
``comp-aware`` and ``random``, 4.5-57 for ``comm-aware``, ``ba`` and ``jbba`` at 20 devices.
For a flagged scheme the mean and its confidence interval are not numbers to read: the
median and the interquartile range, which exist for every distribution, are.

The estimate needs enough rounds: with fewer than :data:`MIN_ROUNDS` finite latencies the
flag is ``False`` (nothing can be said) and the index ``nan``.

Everything here is plain numpy on arrays of latencies (``nan`` = infeasible round, ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

#: Share of the largest latencies Hill's estimator uses.
TAIL_FRACTION = 0.05
#: Fewest order statistics Hill's estimator uses.
MIN_TAIL = 10
#: Fewest finite latencies for a tail estimate (and so a heavy-tail flag).
MIN_ROUNDS = 50
#: Tail index below which the mean is flagged (module docstring).
HEAVY_TAIL_INDEX = 2.5


@dataclass(frozen=True)
class RobustStats:
    """Quartiles and tail of one scheme's latencies at one point (``nan`` if none finite).

    Attributes
    ----------
    median_latency_s, q25_latency_s, q75_latency_s
        Median and quartiles of the finite latencies.
    tail_index
        Hill estimate of the tail index (:func:`tail_index`).
    heavy_tail
        ``tail_index < 2.5`` (:func:`heavy_tail`): the mean does not converge.
    """

    median_latency_s: float
    q25_latency_s: float
    q75_latency_s: float
    tail_index: float
    heavy_tail: bool


def _finite(x: ArrayLike) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def tail_index(x: ArrayLike, fraction: float = TAIL_FRACTION, min_tail: int = MIN_TAIL) -> float:
    """Hill's estimate of the tail index of the positive finite values of ``x``.

    Uses the ``k = max(min_tail, floor(fraction n))`` largest of the ``n`` values:
    ``1 / mean(log(x_(i) / x_(k+1)))``. ``nan`` with fewer than :data:`MIN_ROUNDS` values;
    ``inf`` when the ``k + 1`` largest are equal (no tail at all).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(tail_index(rng.pareto(1.0, 100_000) + 1.0), 1)  # Pareto, alpha = 1
    1.0
    """
    v = _finite(x)
    v = v[v > 0]
    n = v.size
    if n < MIN_ROUNDS:
        return math.nan
    k = min(n - 1, max(min_tail, int(fraction * n)))
    top = np.sort(v)[n - k - 1 :]  # x_(k+1), then the k largest
    logs = np.log(top[1:] / top[0])
    mean = float(logs.mean())
    return math.inf if mean <= 0 else 1.0 / mean


def heavy_tail(x: ArrayLike) -> bool:
    """Whether the latencies ``x`` have a Hill tail index below :data:`HEAVY_TAIL_INDEX`
    (module docstring)."""
    alpha = tail_index(x)
    return bool(alpha < HEAVY_TAIL_INDEX)  # nan compares False


def robust_stats(x: ArrayLike) -> RobustStats:
    """Median, quartiles, tail index and heavy-tail flag of the finite values of ``x``."""
    v = _finite(x)
    if v.size == 0:
        return RobustStats(math.nan, math.nan, math.nan, math.nan, False)
    q25, median, q75 = (float(q) for q in np.quantile(v, (0.25, 0.5, 0.75)))
    alpha = tail_index(v)
    return RobustStats(median, q25, q75, alpha, bool(alpha < HEAVY_TAIL_INDEX))
