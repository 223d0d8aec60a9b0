"""Grouped layers: a block made of several consecutive layers (issue 13, not in the paper).

The paper partitions the model into ``L`` blocks, one LoRA block per layer. With fewer
devices than layers, consecutive layers can be *grouped* into one block: a 32-layer model
becomes, say, 8 blocks of 4 layers, and the paper's model (one block per device, ``L <= K``)
applies to the groups unchanged.

Rule for a group ``G = {lo, ..., hi}`` of consecutive depths (depth order: ``l = 1`` nearest
the output, ``hi`` the group's deepest layer):

.. math::

   d(G) = d(hi), \\qquad b(G) = b(hi), \\qquad S(G) = \\sum_{l \\in G} S(l) = |G| \\, S.

* compute depth: the gradient of every layer of ``G`` needs the backward pass down to its
  deepest layer ``hi``, and that pass yields the shallower layers' gradients on its way, so
  the group costs what its deepest layer costs (``J[k, G] = J[k, hi]``, eq. 3);
* memory: that same truncated pass keeps what depth ``hi`` keeps (``b(hi)``); the extra LoRA
  parameters and gradients of the ``|G| - 1`` shallower layers are a few hundred KB against
  GBs of activations, and are not added (a profile's ``block_param_bytes`` per layer tells
  their size where it matters);
* bits: the device uploads the LoRA gradients of every layer of the group, so the bits add up.

Groups are given as their sizes in depth order (``[4, 4, 4, 4, 4, 4, 4, 4]``), or as a number of
equal groups that divides the number of layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from loladeft.exceptions import InvalidInstanceError
from loladeft.system.instance import Instance
from loladeft.system.scenario import BlockCosts

FloatArray = NDArray[np.float64]


def group_sizes(num_layers: int, groups: int | Sequence[int]) -> NDArray[np.intp]:
    """Validated group sizes (depth order) for ``num_layers`` layers.

    Parameters
    ----------
    num_layers
        ``L``, the number of layers (blocks before grouping).
    groups
        Number of equal groups (must divide ``L``), or the sizes of the groups, each ``>= 1``,
        summing to ``L``.

    Raises
    ------
    InvalidInstanceError
        Named ``groups``, when the grouping does not fit ``L``.
    """
    if isinstance(groups, bool):
        raise InvalidInstanceError("groups", "must be a number of groups or a list of sizes")
    if isinstance(groups, (int, np.integer)):
        n = int(groups)
        if n < 1 or num_layers % n:
            raise InvalidInstanceError(
                "groups", f"{n} equal groups do not divide {num_layers} layers"
            )
        return np.full(n, num_layers // n, dtype=np.intp)
    sizes = np.asarray(list(groups))
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer):
        raise InvalidInstanceError("groups", "must be a non-empty list of integer sizes")
    if (sizes < 1).any() or int(sizes.sum()) != num_layers:
        raise InvalidInstanceError(
            "groups", f"sizes must be >= 1 and sum to {num_layers}, got {sizes.tolist()}"
        )
    return sizes.astype(np.intp)


def deepest_layers(sizes: ArrayLike) -> NDArray[np.intp]:
    """Index (depth order, 0-based) of each group's deepest layer ``hi``."""
    return np.cumsum(np.asarray(sizes, dtype=np.intp)) - 1


@dataclass(frozen=True)
class GroupedCosts:
    """Per-group costs from per-layer ones (module docstring).

    Attributes
    ----------
    depth_cost
        ``d(G) = d(hi)`` (or any per-depth compute cost: FLOPs, seconds, a ``J`` row).
    memory
        ``b(G) = b(hi)``.
    bits
        ``S(G) = Σ_{l ∈ G} S(l)``.
    sizes
        Layers per group, depth order.
    """

    depth_cost: FloatArray
    memory: FloatArray
    bits: FloatArray
    sizes: NDArray[np.intp]


def group_depth_costs(
    depth_cost: ArrayLike,
    memory: ArrayLike,
    bits: float | ArrayLike,
    groups: int | Sequence[int],
) -> GroupedCosts:
    """Group a profile's per-depth arrays: ``d``, ``b`` and ``S`` of each group.

    ``depth_cost`` and ``memory`` have one entry per layer (depth order); ``bits`` is the
    per-layer ``S`` (a number, or one entry per layer).
    """
    d = np.asarray(depth_cost, dtype=float)
    b = np.asarray(memory, dtype=float)
    L = d.shape[-1]
    if b.shape != (L,):
        raise InvalidInstanceError("memory", f"has {b.size} entries, expected {L}")
    S = np.broadcast_to(np.asarray(bits, dtype=float), (L,))
    sizes = group_sizes(L, groups)
    hi = deepest_layers(sizes)
    starts = np.r_[0, hi[:-1] + 1]
    return GroupedCosts(d[..., hi], b[hi], np.add.reduceat(S, starts), sizes)


def group_block_costs(costs: BlockCosts, groups: int | Sequence[int]) -> BlockCosts:
    """A profile's :class:`~loladeft.system.scenario.BlockCosts` with layers grouped.

    The groups must have equal sizes: ``BlockCosts`` (like the paper) has one ``S`` for
    every block.
    """
    g = group_depth_costs(costs.flops, costs.block_memory, costs.block_bits, groups)
    _require_equal(g.sizes)
    flops, memory = g.depth_cost.copy(), g.memory.copy()
    flops.flags.writeable = False
    memory.flags.writeable = False
    return BlockCosts(costs.model, flops, memory, float(g.bits[0]), costs.head_bits)


def group_instance(instance: Instance, groups: int | Sequence[int]) -> Instance:
    """An instance whose blocks are groups of ``instance``'s consecutive blocks.

    ``J[k, G] = J[k, hi]``, ``b(G) = b(hi)``, ``S(G) = |G| S``; equal group sizes only (one
    ``S`` per instance). Devices, bandwidth and the multi-block settings are kept.
    """
    g = group_depth_costs(instance.J, instance.block_memory, instance.block_bits, groups)
    _require_equal(g.sizes)
    return Instance(
        J=g.depth_cost,
        block_memory=g.memory,
        device_memory=instance.device_memory,
        spectral_efficiency=instance.spectral_efficiency,
        block_bits=float(g.bits[0]),
        bandwidth=instance.bandwidth,
        max_blocks_per_device=instance.max_blocks_per_device,
        extra_block_memory=instance.extra_block_memory,
    )


def _require_equal(sizes: NDArray[np.intp]) -> None:
    if (sizes != sizes[0]).any():
        raise InvalidInstanceError(
            "groups", f"must have equal sizes (one S per block), got {sizes.tolist()}"
        )
