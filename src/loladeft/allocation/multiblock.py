"""Block allocation with multi-block devices (issue 13, not in the paper): ``ba`` and ``jbba``
when ``max_blocks_per_device > 1``.

A device ``k`` carrying the blocks ``A_k`` computes once, down to its deepest block, and
uploads ``|A_k|`` gradients (eq. 7' of :func:`~loladeft.system.latency.multiblock_device_latency`):

.. math::

   T_k = J[k, \\max A_k] + \\frac{|A_k| S}{r_k B_k}, \\quad
   b(\\max A_k) + (|A_k| - 1) e \\le \\hat b_k, \\quad |A_k| \\le m, \\quad \\sum_k B_k \\le B.

Problems
--------
*P1' (scheme* ``ba`` *).* The paper's P1 fixes the bandwidth per **block**: each of the ``L``
gradient uploads gets ``B/L`` (``T_{k,l} = J_{k,l} + SL/(B r_k)``), independently of the
allocation. P1' keeps that rule per carried block, ``B_k = |A_k| B / L``: the shares still sum
to exactly ``B``, every gradient still travels over ``B/L`` (the paper's equal split), and a
device's latency becomes ``T_k = J[k, \\max A_k] + SL/(B r_k) = T_{k, \\max A_k}``, the same
matrix as P1 (:meth:`~loladeft.system.Instance.latency_matrix`). With one block per device it
is P1 exactly. (Splitting ``B`` equally over the *active devices* instead would couple every
device's upload to how many others are active, and would charge a device carrying ``m``
blocks ``m`` times the upload of P1 for the same bandwidth.) P1' minimises
``max_k T_{k, max A_k}``.

*P2' (scheme* ``jbba`` *).* The bandwidth is optimised jointly: minimise ``max_k T_k`` over
``A`` and ``{B_k}``.

Covers: levels and counts
-------------------------
Only two numbers per device matter: its *level* ``l_k = max A_k`` (its deepest block) and its
*count* ``n_k = |A_k|``. Device ``k`` may take level ``l`` with at most
``c_k(l) = min(m, l, 1 + ⌊(b̂_k - b(l)) / e⌋)`` blocks (0 if ``b(l) > b̂_k``; ``m`` stands for
``⌊·⌋`` when ``e = 0``). Levels ``l_k`` are distinct (each is its device's own block).
*Lemma (pool).* Levels and counts ``1 <= n_k <= c_k(l_k)`` come from an allocation iff
``Σ_{k: l_k >= j} n_k >= L - j + 1`` for every depth ``j`` and ``Σ_k n_k = L``.
*Proof.* Necessity: blocks ``j..L`` all sit on devices whose level is ``>= j``. Sufficiency:
place blocks deepest first, keeping a *pool* of the unused slots of the devices met so far;
block ``j`` goes to the device whose level it is, if any, else to any pool slot (every slot in
the pool belongs to a deeper device, so it may take ``j``). The inequality at ``j`` says the
pool is never empty when needed. ∎ :func:`cover_assignment` is that construction.

Fast methods
------------
*ba (P1').* Threshold search over the distinct entries of ``T_{k,l}`` with a greedy test
(:func:`_greedy_cover`): deepest block first, use a pool slot if there is one, else open an
unused device eligible at this depth (``T_{k,j} <= t``, ``c_k(j) >= 1``), the one with most
slots (ties: the one eligible at the fewest shallower depths). Outside the theorem's setting
the other greedy variants of :data:`VARIANTS` are tried when the first fails (among them one
that opens the device of least ``T``, whose success is monotone in ``t``, so ``ba`` is never
worse than that greedy's least threshold); when ``K >= L`` the single-block P1 optimum is a
candidate too; then a local search moves blocks off the bottleneck (:func:`_lower_bottleneck`).

*Theorem.* On a monotone instance (rows of ``J`` and ``b`` non-decreasing in depth, the
paper's setting) with ``e = 0`` the test is exact, so ``ba`` is.
*Proof.* There each device's eligible depths form a prefix ``{1..s_k}`` and its slot count is
``min(m, l)`` at every eligible level ``l``. Suppose the greedy fails at block ``j``: the pool
is empty and every device with ``s_k >= j`` is open, at a level ``l_k > j``. An open device
whose ``min(m, l_k)`` slots included one for a block ``<= j`` would still have it in the pool,
so each has ``m`` slots, all spent on the ``L - j`` blocks deeper than ``j``:
``m · #{k : s_k >= j} = L - j``. Any allocation puts the ``L - j + 1`` blocks ``j..L`` on
devices with ``s_k >= j``, at most ``m`` each: impossible. The test is exact, hence monotone
in ``t``, and the binary search returns the optimum. ∎

Otherwise (``e > 0``, or non-monotone ``J``/``b``) the greedy is a heuristic: it only ever
returns valid allocations, so ``ba`` is an upper bound, and ``extra["exact"]`` is ``False``.
If it finds no allocation even without a deadline, the exact MILP
(:mod:`.multiblock_milp`) decides, so infeasibility is always exact.

*jbba (P2').* A Newton–Dinkelbach iteration as in :mod:`.jbba`: for a cover, the least
deadline with ``B`` is the root of ``Σ_k n_k S / (r_k (T - J[k, l_k])) = B``
(:func:`~.jbba.equalized_deadline` with ``r_k / n_k``); at the current deadline a greedy
(:func:`_min_bandwidth_cover`, deepest block first, the cheapest of a pool slot and a new
device at ``w_{k,j}(T) = S / (r_k (T - J_{k,j}))`` per block, or pool-first) looks for a cover
needing less than ``B``; its root is the next deadline. It starts from the ``ba`` cover and,
when ``K >= L``, from the single-block ``jbba`` optimum, so it is never worse than either. When
the greedy finds no better cover, a local search takes the single-block move (one block to
another device, used or not) or swap (two blocks of different devices) that lowers the total
bandwidth at the current deadline the most, else the best eviction of a whole device onto the
others, which lowers the root too
(:func:`_improving_move`). Neither is an exact minimum-bandwidth
oracle, so ``jbba`` here is not exact
(``extra["exact"] = False``); its gap against the exact reference
(:func:`.multiblock_milp.solve_jbba_milp`) is printed by ``benchmarks/bench_multiblock.py``.
"""

from __future__ import annotations

import heapq
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from loladeft.allocation.bottleneck import solve_ba
from loladeft.allocation.jbba import equalized_deadline, equalizing_bandwidth, solve_jbba
from loladeft.allocation.result import Solution
from loladeft.exceptions import UnsupportedInstanceError
from loladeft.system.instance import Instance

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

#: Schemes that accept ``max_blocks_per_device > 1``, and the function that solves them.
MULTIBLOCK_SCHEMES = {
    "jbba": "multiblock:solve_jbba_multiblock",
    "ba": "multiblock:solve_ba_multiblock",
    "milp": "multiblock_milp:solve_milp_multiblock",
}


def multiblock_scheme(name: str) -> Any:
    """The scheme function for a multi-block instance, or ``UnsupportedInstanceError``."""
    from importlib import import_module

    if name not in MULTIBLOCK_SCHEMES:
        raise UnsupportedInstanceError(
            f"{name}: max_blocks_per_device > 1 is supported by "
            f"{', '.join(MULTIBLOCK_SCHEMES)} only"
        )
    module, func = MULTIBLOCK_SCHEMES[name].split(":")
    return getattr(import_module(f"loladeft.allocation.{module}"), func)


class Cover(NamedTuple):
    """Levels and counts of an allocation (module docstring): device ``k`` carries
    ``count[k]`` blocks, the deepest at ``level[k]`` (0-based; ``-1`` and 0 when unused)."""

    level: IntArray
    count: IntArray

    @property
    def used(self) -> IntArray:
        return np.flatnonzero(self.count)


def capacities(instance: Instance) -> IntArray:
    """``(K, L)`` slots ``c_k(l)``: most blocks device ``k`` may carry with deepest block
    ``l``; 0 where it cannot hold block ``l`` at all (C3'). Checked with the same sum
    ``b(l) + (n - 1) e <= b̂_k`` as :func:`~loladeft.system.instance.check_allocation`."""
    b, mem, e = instance.block_memory, instance.device_memory, instance.extra_block_memory
    m = instance.max_blocks_per_device
    K, L = instance.J.shape
    room = mem[:, None] - b[None, :]
    if e > 0:
        cap = 1 + np.floor(np.maximum(room, 0) / e).astype(np.int64)
        cap = np.minimum(cap, m)
        for _ in range(2):  # repair the floor's rounding against the exact test
            over = (b[None, :] + (cap - 1) * e > mem[:, None]) & (cap > 1)
            cap -= over
            under = (b[None, :] + cap * e <= mem[:, None]) & (cap < m)
            cap += under
    else:
        cap = np.full((K, L), m, dtype=np.int64)
    cap = np.minimum(cap, np.arange(1, L + 1)[None, :])  # only l blocks lie at depth <= l
    return np.where(room >= 0, cap, 0).astype(np.intp)


def cover_assignment(cover: Cover, num_blocks: int) -> IntArray:
    """The allocation of a valid cover: deepest block first, a device's own level first,
    else a slot of the pool (Lemma in the module docstring)."""
    level, count = cover
    owner = np.full(num_blocks, -1, dtype=np.intp)
    used = np.flatnonzero(count)
    owner[level[used]] = used
    assignment = np.empty(num_blocks, dtype=np.intp)
    pool: list[list[int]] = []  # [device, slots left]
    for j in range(num_blocks - 1, -1, -1):
        k = int(owner[j])
        if k >= 0:
            assignment[j] = k
            if count[k] > 1:
                pool.append([k, int(count[k]) - 1])
        else:
            slot = pool[-1]
            assignment[j] = slot[0]
            slot[1] -= 1
            if slot[1] == 0:
                pool.pop()
    return assignment


def cover_of(assignment: IntArray, num_devices: int) -> Cover:
    """Levels and counts of an allocation."""
    count = np.bincount(assignment, minlength=num_devices).astype(np.intp)
    level = np.full(num_devices, -1, dtype=np.intp)
    np.maximum.at(level, assignment, np.arange(assignment.size))
    return Cover(level, count)


# -- P1' ---------------------------------------------------------------------------------


def solve_ba_multiblock(instance: Instance, **_: Any) -> Solution | None:
    """Scheme ``ba`` with multi-block devices: problem P1' (module docstring).

    Exact on monotone instances with ``extra_block_memory = 0`` (proof in the module
    docstring); otherwise the best allocation the greedy test finds (``extra["exact"]``).
    """
    cap = capacities(instance)
    T = instance.latency_matrix()
    ok = cap > 0
    values = np.unique(T[ok])
    exact = instance.is_monotone and instance.extra_block_memory == 0
    tests = 0

    def test(t: float) -> Cover | None:
        nonlocal tests
        tests += 1
        eligible = ok & (T <= t)
        found = _greedy_cover(eligible, cap)
        if exact:
            return found
        for pool_first, prefer in VARIANTS:
            if found is not None:
                break
            found = _greedy_cover(eligible, cap, pool_first=pool_first, prefer=prefer, T=T)
        return found

    best = test(values[-1]) if values.size else None
    if best is None:
        if exact:
            return None
        from loladeft.allocation.multiblock_milp import solve_milp_multiblock

        return solve_milp_multiblock(instance)  # exact: decides infeasibility
    lo, hi = 0, values.size - 1  # values[hi] passes the test
    while lo < hi:
        mid = (lo + hi) // 2
        found = test(values[mid])
        if found is None:
            lo = mid + 1
        else:
            hi, best = mid, found
    cover = best
    if not exact:
        if instance.num_devices >= instance.num_blocks:
            cover = _better_p1(instance, T, cover)
        while (lower := _lower_bottleneck(T, cap, cover)) is not None:
            cover = lower
    return p1_solution(instance, cover, iterations=tests, extra={"exact": exact})


def _better_p1(instance: Instance, T: FloatArray, cover: Cover) -> Cover:
    """The better of ``cover`` and the single-block P1 optimum (when one exists)."""
    single = solve_ba(instance)
    if single is None:
        return cover
    other = cover_of(single.assignment, instance.num_devices)
    return other if _p1_value(T, other) < _p1_value(T, cover) else cover


def _lower_bottleneck(T: FloatArray, cap: IntArray, cover: Cover) -> Cover | None:
    """Local search for P1': a cover whose largest ``T[k, l_k]`` is below ``cover``'s, or
    ``None``. While a device sits at the bottleneck, its deepest block moves to another device
    (or is swapped with another device's block) so that every receiver stays below the
    bottleneck and the donor's latency drops; each move lowers a bottleneck device's
    latency, so the search ends (at most ``4 L`` moves)."""
    K, L = T.shape
    t = _p1_value(T, cover)
    assignment = cover_assignment(cover, L)
    rows, blocks = np.arange(K), np.arange(L)
    for _ in range(4 * L):
        level, count = cover_of(assignment, K)
        used = np.flatnonzero(count)
        top = used[T[used, level[used]] >= t]
        if top.size == 0:
            return cover_of(assignment, K)
        d = int(top[0])
        j, n = int(level[d]), int(count[d])
        rest = assignment == d
        rest[j] = False
        second = int(blocks[rest].max()) if rest.any() else -1

        def fits(k: Any, lv: Any, nk: Any) -> Any:
            return (nk <= cap[k, lv]) & (T[k, lv] < t)

        # move j to device b
        new_b = np.maximum(level, j)
        ok = fits(rows, new_b, count + 1)
        ok[d] = False
        if ok.any() and (n == 1 or (T[d, second] < T[d, j] and n - 1 <= cap[d, second])):
            b = int(rows[ok][np.argmin(T[rows[ok], new_b[ok]])])
            assignment[j] = b
            continue
        # swap j with block i of device o: d gets i, o gets j
        owner = assignment
        lv_d = np.maximum(second, blocks)
        cand = []
        for i in np.flatnonzero((owner != d) & (T[d, lv_d] < T[d, j]) & (n <= cap[d, lv_d])):
            o = int(owner[i])
            rest_o = (owner == o) & (blocks != i)
            lv_o = max(int(blocks[rest_o].max()) if rest_o.any() else -1, j)
            if fits(o, lv_o, int(count[o])):
                cand.append((T[d, lv_d[i]], int(i)))
        if not cand:
            return None
        i = min(cand)[1]
        assignment[i], assignment[j] = d, assignment[i]
    return None


def _p1_value(T: FloatArray, cover: Cover) -> float:
    used = cover.used
    return float(T[used, cover.level[used]].max())


def p1_solution(instance: Instance, cover: Cover, **kwargs: Any) -> Solution:
    """P1' bandwidth for a cover: ``B/L`` per carried block, ``B_k = |A_k| B / L``."""
    bandwidth = cover.count * instance.equal_bandwidth()
    return Solution(cover_assignment(cover, instance.num_blocks), bandwidth, **kwargs)


#: Greedy variants tried, in order, when the first greedy fails outside the exact setting.
VARIANTS = (("pool", "latency"), ("pool", "loss"), ("open", "slots"), ("open", "loss"))


def _greedy_cover(
    eligible: NDArray[np.bool_],
    cap: IntArray,
    *,
    pool_first: bool | str = True,
    prefer: str = "slots",
    T: FloatArray | None = None,
) -> Cover | None:
    """Deepest block first: a pool slot if any, else open the eligible unused device with
    the most slots (ties: eligible at the fewest shallower depths). ``None`` if stuck.

    Variants tried outside the exact setting: ``pool_first="open"`` opens a device whenever
    one is eligible and uses the pool only otherwise; ``prefer="loss"`` opens the device that
    loses the fewest slots against its best shallower eligible depth (ties: most slots);
    ``prefer="latency"`` the one with the least ``T`` (ties: most slots). The latency rule
    makes the same choices at every threshold where they are eligible, so its success is
    monotone in the threshold and the binary search finds its least threshold."""
    pool_first = pool_first in (True, "pool")
    K, L = eligible.shape
    flexible = np.cumsum(eligible, axis=1) - eligible  # eligible depths shallower than l
    if prefer == "loss":
        slots_at = np.where(eligible, cap, 0)
        best_before = np.zeros_like(slots_at)  # most slots at an eligible depth < l
        best_before[:, 1:] = np.maximum.accumulate(slots_at, axis=1)[:, :-1]
    level = np.full(K, -1, dtype=np.intp)
    count = np.zeros(K, dtype=np.intp)
    free = np.ones(K, dtype=bool)
    pool: list[list[int]] = []
    for j in range(L - 1, -1, -1):
        cand = np.flatnonzero(eligible[:, j] & free)
        if pool and (pool_first or cand.size == 0):
            slot = pool[-1]
            count[slot[0]] += 1
            slot[1] -= 1
            if slot[1] == 0:
                pool.pop()
            continue
        if cand.size == 0:
            return None
        slots = cap[cand, j]
        if prefer == "loss":
            loss = best_before[cand, j] - slots
            top = cand[loss == loss.min()]
            k = int(top[np.argmax(cap[top, j])])
        elif prefer == "latency":
            assert T is not None
            top = cand[T[cand, j] == T[cand, j].min()]
            k = int(top[np.argmax(cap[top, j])])
        else:
            top = cand[slots == slots.max()]
            k = int(top[np.argmin(flexible[top, j])])
        free[k] = False
        level[k], count[k] = j, 1
        if cap[k, j] > 1:
            pool.append([k, int(cap[k, j]) - 1])
    return Cover(level, count)


# -- P2' ---------------------------------------------------------------------------------


def solve_jbba_multiblock(
    instance: Instance,
    *,
    max_newton: int = 64,
    max_moves: int = 4,
    min_gain: float = 1e-7,
    **_: Any,
) -> Solution | None:
    """Scheme ``jbba`` with multi-block devices: problem P2' (module docstring), not exact.

    At most ``max_newton`` greedy steps, then at most ``max_moves * L`` local-search moves,
    stopping after a move that gains less than ``min_gain`` (relative)."""
    start = solve_ba_multiblock(instance)
    if start is None:
        return None
    K = instance.num_devices
    covers = [cover_of(start.assignment, K)]
    if K >= instance.num_blocks:
        single = solve_jbba(instance)
        if single is not None:
            covers.append(cover_of(single.assignment, K))
    roots = [cover_deadline(instance, c) for c in covers]
    i = int(np.argmin(roots))
    cover, deadline = covers[i], roots[i]
    cap = capacities(instance)
    B = instance.bandwidth
    steps = 0
    for _ in range(max_newton):  # Newton–Dinkelbach steps with the greedy
        steps += 1
        found = _min_bandwidth_cover(instance, cap, deadline)
        if found is None or found[1] >= B * (1 - 1e-12):
            break
        new_deadline = cover_deadline(instance, found[0])
        if not new_deadline < deadline:
            break
        cover, deadline = found[0], new_deadline
    for _ in range(max_moves * instance.num_blocks):  # local search
        steps += 1
        found = _improving_move(instance, cap, cover, deadline)
        if found is None:
            break
        new_deadline = cover_deadline(instance, found[0])
        if not new_deadline < deadline:
            break
        cover, gain, deadline = found[0], deadline - new_deadline, new_deadline
        if gain < min_gain * deadline:
            break
    return p2_solution(instance, cover, deadline, iterations=steps, extra={"exact": False})


def cover_deadline(instance: Instance, cover: Cover) -> float:
    """Least round latency of a cover under the best bandwidth split: the root of
    ``Σ_k n_k S / (r_k (T - J[k, l_k])) = B``."""
    used = cover.used
    return equalized_deadline(
        instance.J[used, cover.level[used]],
        instance.spectral_efficiency[used] / cover.count[used],
        instance.block_bits,
        instance.bandwidth,
    )


def p2_solution(instance: Instance, cover: Cover, deadline: float, **kwargs: Any) -> Solution:
    """The bandwidth that makes every device of the cover finish at ``deadline``."""
    used = cover.used
    bandwidth = np.zeros(instance.num_devices)
    bandwidth[used] = equalizing_bandwidth(
        instance.J[used, cover.level[used]],
        instance.spectral_efficiency[used] / cover.count[used],
        instance.block_bits,
        instance.bandwidth,
        deadline,
    )
    return Solution(cover_assignment(cover, instance.num_blocks), bandwidth, **kwargs)


def per_block_bandwidth(instance: Instance, cap: IntArray, deadline: float) -> FloatArray:
    """``w[k, l] = S / (r_k (T - J[k, l]))``: bandwidth per block of device ``k`` at level
    ``l`` to finish by ``T``; ``inf`` where it cannot (``J >= T`` or no slot)."""
    slack = deadline - instance.J
    with np.errstate(divide="ignore", invalid="ignore"):
        w = instance.block_bits / (instance.spectral_efficiency[:, None] * slack)
    return np.where((slack > 0) & (cap > 0), w, np.inf)


def _min_bandwidth_cover(
    instance: Instance, cap: IntArray, deadline: float
) -> tuple[Cover, float] | None:
    """A cover needing little total bandwidth to meet ``deadline`` (greedy, two rules; the
    cheaper that succeeds), and that total; ``None`` if neither finds one."""
    w = per_block_bandwidth(instance, cap, deadline)
    best = None
    for pool_first in (False, True):
        found = _greedy_bandwidth(w, cap, pool_first)
        if found is not None and (best is None or found[1] < best[1]):
            best = found
    return best


def _greedy_bandwidth(w: FloatArray, cap: IntArray, pool_first: bool) -> tuple[Cover, float] | None:
    K, L = w.shape
    level = np.full(K, -1, dtype=np.intp)
    count = np.zeros(K, dtype=np.intp)
    free_w = w.copy()  # rows of opened devices become inf
    pool: list[tuple[float, int]] = []  # (per-block cost, device) with slots left
    left = np.zeros(K, dtype=np.intp)
    total = 0.0
    for j in range(L - 1, -1, -1):
        k_new = int(np.argmin(free_w[:, j]))
        new_cost = free_w[k_new, j]
        pool_cost = pool[0][0] if pool else np.inf
        use_pool = bool(pool) and (pool_first or pool_cost <= new_cost)
        if use_pool:
            cost, k = pool[0]
            count[k] += 1
            left[k] -= 1
            if left[k] == 0:
                heapq.heappop(pool)
        elif np.isfinite(new_cost):
            k, cost = k_new, float(new_cost)
            free_w[k] = np.inf
            level[k], count[k] = j, 1
            left[k] = cap[k, j] - 1
            if left[k] > 0:
                heapq.heappush(pool, (cost, k))
        else:
            return None
        total += cost
    return Cover(level, count), total


def _improving_move(
    instance: Instance, cap: IntArray, cover: Cover, deadline: float
) -> tuple[Cover, float] | None:
    """The move that lowers the cover's total bandwidth at ``deadline`` the most, if any
    lowers it: then the moved cover's root is below ``deadline``. Moves: one block to
    another device (used or not), or two blocks of different devices swapped; if neither
    helps, the best eviction of a whole device (:func:`_eviction`). Returns the new cover
    and its total."""
    K, L = instance.J.shape
    w = per_block_bandwidth(instance, cap, deadline)
    assignment = cover_assignment(cover, L)
    level, count = cover
    rows = np.arange(K)
    demand = np.zeros(K)
    used = cover.used
    demand[used] = count[used] * w[used, level[used]]
    second = np.full(K, -1, dtype=np.intp)  # each device's second-deepest block
    for j in range(L):
        if j != level[assignment[j]]:
            second[assignment[j]] = max(second[assignment[j]], j)
    blocks = np.arange(L)
    # level each block's device keeps without that block
    without = np.where(blocks == level[assignment], second[assignment], level[assignment])
    dev = assignment
    n = count[dev]

    def need(k: Any, lv: Any, nk: Any) -> Any:  # bandwidth of device k at (level, count)
        with np.errstate(invalid="ignore"):  # 0 * inf where a device would carry nothing
            return np.where(nk <= cap[k, lv], nk * w[k, lv], np.inf)

    # move block j (rows) to device b (columns)
    left = np.where(n == 1, 0.0, need(dev, np.maximum(without, 0), n - 1))
    new_level = np.maximum(level[None, :], blocks[:, None])
    move = (left - demand[dev])[:, None] + need(rows[None, :], new_level, count + 1) - demand
    move[blocks, dev] = np.inf
    # swap blocks j (rows) and i (columns) of different devices
    level_j = np.maximum(without[:, None], blocks[None, :])  # j's device, holding i
    swap = need(dev[:, None], level_j, n[:, None]) + need(dev[None, :], level_j.T, n[None, :])
    swap -= demand[dev][:, None] + demand[dev][None, :]
    swap[dev[:, None] == dev[None, :]] = np.inf
    best_delta, best = -1e-12 * instance.bandwidth, None
    j, b = np.unravel_index(int(np.argmin(move)), move.shape)
    if move[j, b] < best_delta:
        best_delta, best = float(move[j, b]), (int(j), int(b), -1)
    j, i = np.unravel_index(int(np.argmin(swap)), swap.shape)
    if swap[j, i] < best_delta:
        best_delta, best = float(swap[j, i]), (int(j), int(dev[i]), int(i))
    if best is None:
        return _eviction(cap, w, assignment, level, count, demand, -1e-12 * instance.bandwidth)
    j, b, i = best
    moved = assignment.copy()
    moved[j] = b
    if i >= 0:
        moved[i] = assignment[j]
    return cover_of(moved, K), float(demand.sum() + best_delta)


def _eviction(
    cap: IntArray,
    w: FloatArray,
    assignment: IntArray,
    level: IntArray,
    count: IntArray,
    demand: FloatArray,
    threshold: float,
) -> tuple[Cover, float] | None:
    """The best *eviction*: every block of one device moves, deepest first, to the device
    where it adds the least bandwidth; returned if it lowers the total below ``threshold``
    (a chain of moves that single moves and swaps cannot climb to one by one)."""
    K = w.shape[0]
    rows = np.arange(K)
    best_delta, best = threshold, None
    for d in np.flatnonzero(count):
        lv, cnt, dem = level.copy(), count.copy(), demand.copy()
        lv[d], cnt[d], dem[d] = -1, 0, 0.0
        moved = assignment.copy()
        for j in np.flatnonzero(assignment == d)[::-1]:
            new_level = np.maximum(lv, j)
            with np.errstate(invalid="ignore"):
                add = np.where(
                    cnt + 1 <= cap[rows, new_level], (cnt + 1) * w[rows, new_level], np.inf
                )
            add -= dem
            add[d] = np.inf
            b = int(np.argmin(add))
            if not np.isfinite(add[b]):
                break
            moved[j], lv[b], cnt[b], dem[b] = b, new_level[b], cnt[b] + 1, dem[b] + add[b]
        else:
            delta = float(dem.sum() - demand.sum())
            if delta < best_delta:
                best_delta, best = delta, moved
    if best is None:
        return None
    return cover_of(best, K), float(demand.sum() + best_delta)


def multiblock_infeasibility(instance: Instance) -> str:
    """Why no multi-block allocation exists (called once one is known not to)."""
    cap = capacities(instance)
    none = np.flatnonzero(cap.max(axis=0) == 0)
    if none.size:
        l = int(none[-1])
        return (
            f"no device can hold the block of depth {l + 1} "
            f"(memory >= {instance.block_memory[l]:.4g})"
        )
    return (
        f"the {instance.num_blocks} blocks do not fit on {instance.num_devices} devices with "
        f"at most {instance.max_blocks_per_device} each and extra_block_memory = "
        f"{instance.extra_block_memory:g}"
    )
