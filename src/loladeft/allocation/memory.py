"""Memory feasibility (constraint C3) shared by every scheme.

Whether a device can hold a block depends only on ``b(l) <= b̂_k``, so the sets of devices
able to hold each block are *nested* once blocks are sorted by memory: a device that holds
a bigger block holds every smaller one. Hall's condition for a perfect matching of blocks
to distinct devices then reduces to one count per block: the ``j``-th largest block needs
at least ``j`` devices with that much memory.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from loladeft.system.instance import Instance


def blocks_by_memory(instance: Instance) -> NDArray[np.intp]:
    """Block indices sorted by memory need, largest first (deepest first among ties)."""
    b = instance.block_memory
    return np.lexsort((-np.arange(b.size), -b))


def devices_able(instance: Instance) -> NDArray[np.intp]:
    """For each block (depth order), how many devices have enough memory to hold it."""
    mem = np.sort(instance.device_memory)
    return mem.size - np.searchsorted(mem, instance.block_memory, side="left")


def memory_infeasibility(instance: Instance) -> str | None:
    """Explain why no allocation satisfies C3, or return ``None`` if one exists.

    The explanation names the tightest group of blocks, e.g. ``"blocks of depth >= 9 need
    memory >= 4.1; 3 devices have that much, 4 blocks need them"``.
    """
    order = blocks_by_memory(instance)
    able = devices_able(instance)[order]
    need = np.arange(1, order.size + 1)
    bad = np.flatnonzero(able < need)
    if bad.size == 0:
        return None
    j = int(bad[0])
    threshold = float(instance.block_memory[order[j]])
    group = np.flatnonzero(instance.block_memory >= threshold) + 1  # 1-based depths
    n_blocks = group.size
    L = instance.num_blocks
    if np.array_equal(group, np.arange(L - n_blocks + 1, L + 1)):
        who = f"the block of depth {L}" if n_blocks == 1 else f"blocks of depth >= {group[0]}"
    else:
        who = "blocks of depths " + ", ".join(map(str, group))
    verb = "needs" if n_blocks == 1 else "need"
    n_dev = int(able[j])
    have = "no device has" if n_dev == 0 else f"{n_dev} device{'s' * (n_dev != 1)} have"
    if n_dev == 1:
        have = "1 device has"
    return (
        f"{who} {verb} memory >= {threshold:.4g}; {have} that much, "
        f"{n_blocks} block{'s' * (n_blocks != 1)} {verb} them"
    )
