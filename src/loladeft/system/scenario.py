"""The Monte-Carlo scenario of the paper's latency experiments (Sec. VI-A).

A :class:`Scenario` fixes everything that does not change between rounds: ``K`` devices,
the ``L`` blocks of a model profile, the channel statistics and the bandwidth. Each round
draws afresh, independently for every device ``k``:

* the relative computation factor ``f_k ~ U(0.5, 1)`` (eq. 3);
* the available memory ``b̂_k ~ U[1, 6]`` GB (constraint C3);
* the Rayleigh-fading channel power ``|h_k|^2 ~ Exp(1)`` (mean 1), so that the uplink
  spectral efficiency (eq. 4) is ``r_k = log2(1 + γ_k)`` with the received SNR ``γ_k``
  given by the SNR convention below.

Per-block costs come from the profile (:mod:`loladeft.profiling.profile`):

* ``d(l) = FLOPs(l) / F_ref``, the run time of one step that back-propagates down to block
  ``l`` on the reference device (:mod:`loladeft.system.reference`, ``f_k = 1``), so that
  ``J[k, l] = M d(l) / f_k`` (eq. 3);
* ``b(l) = weight_bytes(l) + activation_bytes(l) + block_param_bytes(l) +
  optimizer_bytes(l)``: the frozen weights, the activations kept for the truncated backward
  pass, the block's LoRA parameters with their gradient, and optimizer state where the
  profile says the device holds it (``optimizer_bytes``, 0 when absent: in the paper the
  server keeps the optimizer statistics);
* ``S = block_bits``, the bits uploaded per block (24,576 LoRA parameters x 32 bits =
  786,432 bits for RoBERTa-base with rank 8 on query and value).

SNR convention
--------------
The paper states "a constant transmit SNR of 10 dB" and "a path loss of 1e-3". Read
literally (``snr_convention="transmit"``, the default), ``snr = p_k / N0`` and the received
SNR is ``γ_k = snr · pathloss · |h_k|^2``; at 10 dB the mean received SNR is 0.01 and the mean
spectral efficiency about 0.014 bit/s/Hz, so uploading 786,432 bits over ``B/L`` = 8.3 MHz
takes seconds, the same order as the computation of one local iteration on the reference
device. Under ``snr_convention="received"`` the SNR is the mean *received* SNR,
``γ_k = snr · |h_k|^2`` (path loss ignored); at 10 dB ``r_k`` is about 2.9 bit/s/Hz and the
upload takes tens of milliseconds, so the round latency barely moves with the SNR or the
bandwidth.

Figs. 5 and 6 of the paper show the round latency falling strongly as the transmit SNR and
the bandwidth grow, with computation still mattering (depth-aware allocation gains ~40%
over the channel-only baseline). Only the transmit reading reproduces that qualitative
behaviour, so it is the default; the received reading is kept so that a reader can check
the other regime. No parameter was tuned to match the paper's percentages.

Other modelling choices
-----------------------
* ``f_k`` is redrawn every round (``fixed_compute=False``), so the Monte-Carlo mean averages
  over device populations instead of depending on one draw of ``K`` devices; pass
  ``fixed_compute=True`` to draw the factors once per sampled batch of rounds.
* GB means 10^9 bytes.
* ``M`` (``local_iterations``) is not stated in the paper; the default is 1.

Compute scale and equal-split rule
----------------------------------
Two more choices the paper leaves open set the regime (README, "Regimes"):

* ``compute_scale`` multiplies every ``d(l)``: a continuous stand-in for the unstated
  sequence length, batch and sustained FLOP/s behind "the Snapdragon 8 Gen 3 anchors the
  standard local computation capability" (e.g. sequence 512 instead of the profile's 128 on a
  4.5e13 FLOP/s reference is ``4 x 6.935e11 / 4.5e13 = 0.0616``). Default 1: the profile on
  the named reference device.
* ``equal_split`` and ``benchmark_split``: how the equal-bandwidth schemes split ``B``.
  ``"active"`` gives each of the ``L`` scheduled devices ``B/L``, problem P1's
  ``SL/(B r_k)`` term and Sec. VI-A-3's "the 12 involved devices equally split the
  bandwidth budget"; ``"all"`` gives each ``B/K`` as if every one of the ``K`` devices held a
  share (the ``K - L`` unscheduled shares stay unused), which contradicts that text for BA
  and is consistent with it for the benchmarks, whose bandwidth the paper does not state.
  ``equal_split`` applies to the block-allocation schemes of P1 (``ba`` and its exact
  variants), ``benchmark_split`` to the benchmarks of Sec. VI-A-4 (:data:`BENCHMARK_SCHEMES`);
  the joint schemes of P2 always share the whole ``B``. A rule is applied by handing the
  scheme the instance of :meth:`Rounds.instance` with ``split``: its budget is ``B`` under
  ``"active"`` and ``B L / K`` under ``"all"``, so that its equal share ``budget / L`` is
  ``B/K`` and every P1 solver optimises, and every result reports, exactly that split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from loladeft.exceptions import FieldError
from loladeft.system.instance import MULTIBLOCK_DEFAULTS, Instance
from loladeft.system.latency import compute_latency, spectral_efficiency
from loladeft.system.reference import DEFAULT_REFERENCE, ReferenceDevice, get_reference

GB = 1e9
SNR_CONVENTIONS = ("transmit", "received")
#: Equal-split rules: ``B/L`` over the active devices, or ``B/K`` over all devices.
SPLIT_RULES = ("active", "all")
#: The paper's benchmark schemes (Sec. VI-A-4) and the random allocation, whose equal
#: bandwidth follows ``benchmark_split``.
BENCHMARK_SCHEMES = frozenset({"comm-aware", "comp-aware", "random"})
#: Largest |mean received SNR| in dB a scenario accepts (10^300 is far from overflowing).
MAX_SNR_DB = 3000.0


class InvalidScenarioError(FieldError):
    """A scenario parameter (``"bandwidth_hz"``...) or the profile behind it
    (``"profile.depths"``...) is malformed."""


class DepthLike(Protocol):
    """One depth of a profile (see :mod:`loladeft.profiling.profile`)."""

    depth: int
    flops: float
    activation_bytes: float
    weight_bytes: float
    block_param_bytes: float


class ProfileLike(Protocol):
    """What the scenario reads from a profile."""

    model: str
    block_bits: float
    depths: Sequence[Any]


@dataclass(frozen=True, eq=False)
class BlockCosts:
    """Per-block costs in depth order, derived from a profile.

    Attributes
    ----------
    model
        Model name from the profile.
    flops
        Length-``L`` FLOPs of one step back-propagating down to block ``l``.
    block_memory
        Length-``L`` ``b(l)`` in bytes.
    block_bits
        ``S``, bits uploaded per block.
    head_bits
        Bits of the classification head's gradient, which a device of a training run may
        upload with its block (``scenario.upload = "block+head"``, :meth:`with_head`); 0 for
        the simulator's profiles.
    """

    model: str
    flops: NDArray[np.float64]
    block_memory: NDArray[np.float64]
    block_bits: float
    head_bits: float = 0.0

    def with_head(self) -> BlockCosts:
        """These costs with ``S`` counting the head's gradient too (``S + head_bits``)."""
        return replace(self, block_bits=self.block_bits + self.head_bits, head_bits=0.0)

    @property
    def num_blocks(self) -> int:
        """``L``."""
        return self.flops.size

    @classmethod
    def from_profile(cls, profile: ProfileLike) -> BlockCosts:
        """Read and validate the per-depth costs of a profile object.

        Raises
        ------
        InvalidScenarioError
            Missing fields, depths not numbered 1..L, or non-finite / negative costs.
        """
        depths = getattr(profile, "depths", None)
        if not isinstance(depths, Sequence) or isinstance(depths, (str, bytes)) or not depths:
            raise InvalidScenarioError("profile.depths", "must be a non-empty list")
        rows = []
        for i, entry in enumerate(depths):
            row = {}
            for name in ("depth", "flops", "activation_bytes", "weight_bytes", "block_param_bytes"):
                value = entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)
                if isinstance(value, bool) or not isinstance(
                    value, (int, float, np.integer, np.floating)
                ):
                    raise InvalidScenarioError(
                        f"profile.depths[{i}].{name}", "missing or not a number"
                    )
                if not math.isfinite(value) or value < 0:
                    raise InvalidScenarioError(
                        f"profile.depths[{i}].{name}", f"must be finite and >= 0, got {value!r}"
                    )
                row[name] = float(value)
            if row["depth"] != i + 1:
                raise InvalidScenarioError(
                    f"profile.depths[{i}].depth", f"must be {i + 1} (depths 1..L in order)"
                )
            extra = (
                entry.get("optimizer_bytes")
                if isinstance(entry, dict)
                else getattr(entry, "optimizer_bytes", None)
            )
            if extra is None:
                extra = 0.0
            if (
                isinstance(extra, bool)
                or not isinstance(extra, (int, float, np.integer, np.floating))
                or not math.isfinite(extra)
                or extra < 0
            ):
                raise InvalidScenarioError(
                    f"profile.depths[{i}].optimizer_bytes", f"must be a number >= 0, got {extra!r}"
                )
            row["optimizer_bytes"] = float(extra)
            rows.append(row)
        flops = np.array([r["flops"] for r in rows])
        if (flops <= 0).any():
            raise InvalidScenarioError("profile.depths", "flops must be > 0 at every depth")
        memory = np.array(
            [
                r["weight_bytes"]
                + r["activation_bytes"]
                + r["block_param_bytes"]
                + r["optimizer_bytes"]
                for r in rows
            ]
        )
        bits = getattr(profile, "block_bits", None)
        if (
            isinstance(bits, bool)
            or not isinstance(bits, (int, float))
            or not (math.isfinite(bits) and bits > 0)
        ):
            raise InvalidScenarioError("profile.block_bits", f"must be a number > 0, got {bits!r}")
        flops.flags.writeable = False
        memory.flags.writeable = False
        return cls(str(getattr(profile, "model", "?")), flops, memory, float(bits))


def too_few_devices(K: int, L: int, max_blocks_per_device: int = 1) -> str:
    """Why ``K`` devices cannot hold ``L`` blocks (``K * max_blocks_per_device < L``)."""
    if max_blocks_per_device == 1:
        return f"K = {K} is smaller than the L = {L} blocks of the model"
    return (
        f"K = {K} devices carrying at most max_blocks_per_device = {max_blocks_per_device} "
        f"blocks each hold fewer than the L = {L} blocks of the model"
    )


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidScenarioError(name, f"must be a number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise InvalidScenarioError(
            name, f"must be finite and {'>=' if allow_zero else '>'} 0, got {x:g}"
        )
    return x


def _range(name: str, value: Any, *, lower: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidScenarioError(name, "must be a pair [low, high] of numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < lower or hi < lo:
        raise InvalidScenarioError(
            name, f"must satisfy {lower:g} <= low <= high, got [{lo:g}, {hi:g}]"
        )
    return lo, hi


@dataclass(frozen=True, eq=False)
class Scenario:
    """Static parameters of the simulated system (paper Sec. VI-A).

    Parameters
    ----------
    costs
        Per-block costs (:class:`BlockCosts`, e.g. from :meth:`BlockCosts.from_profile`).
    num_devices
        ``K >= L`` (``K * max_blocks_per_device >= L``), devices taking part in every round
        (paper: 20).
    snr_db
        SNR in dB, read according to ``snr_convention`` (paper: 10 dB transmit SNR).
    bandwidth_hz
        Total uplink bandwidth ``B`` in Hz (paper: 100 MHz).
    path_loss
        Linear path-loss factor applied under the ``"transmit"`` convention (paper: 1e-3).
    snr_convention
        ``"transmit"``: received SNR ``= 10^(snr_db/10) · path_loss · |h|^2``;
        ``"received"``: mean received SNR ``= 10^(snr_db/10)``, i.e. ``10^(snr_db/10) · |h|^2``.
        See the module docstring for why ``"transmit"`` is the default.
    local_iterations
        ``M``, local iterations per round (eq. 3); not stated in the paper, default 1.
    compute_factor
        ``(low, high)`` of the uniform distribution of ``f_k`` (paper: (0.5, 1)).
    memory_gb
        ``(low, high)`` of the uniform distribution of the available memory in GB
        (paper: [1, 6]).
    reference
        Reference device (name or :class:`ReferenceDevice`) converting FLOPs to seconds.
    fixed_compute
        Draw ``f_k`` once per batch of rounds instead of every round.
    max_blocks_per_device
        Most blocks one device may carry per round, the instance's ``max_blocks_per_device``
        (issue 13, not in the paper; default 1: the paper's model). ``K`` devices then hold
        up to ``K * max_blocks_per_device`` blocks, so ``K < L`` is allowed when that is
        ``>= L``.
    extra_block_memory
        Bytes each carried block beyond a device's deepest adds (the instance's
        ``extra_block_memory``; default 0).
    compute_scale
        Factor on every ``d(l)`` (module docstring); default 1.
    equal_split
        ``"active"`` (``B/L``, problem P1, default) or ``"all"`` (``B/K``): the equal share of
        the block-allocation schemes of P1.
    benchmark_split
        The same rule for the benchmark schemes (:data:`BENCHMARK_SCHEMES`).

    Raises
    ------
    InvalidScenarioError
        A parameter is out of range; the message names it.
    """

    costs: BlockCosts
    num_devices: int = 20
    snr_db: float = 10.0
    bandwidth_hz: float = 100e6
    path_loss: float = 1e-3
    snr_convention: str = "transmit"
    local_iterations: int = 1
    compute_factor: tuple[float, float] = (0.5, 1.0)
    memory_gb: tuple[float, float] = (1.0, 6.0)
    reference: str | ReferenceDevice = DEFAULT_REFERENCE
    fixed_compute: bool = False
    max_blocks_per_device: int = 1
    extra_block_memory: float = 0.0
    compute_scale: float = 1.0
    equal_split: str = "active"
    benchmark_split: str = "active"
    block_seconds: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.costs, BlockCosts):
            raise InvalidScenarioError("costs", "must be BlockCosts (see BlockCosts.from_profile)")
        K = self.num_devices
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise InvalidScenarioError("num_devices", f"must be a positive integer, got {K!r}")
        L = self.costs.num_blocks
        m = self.max_blocks_per_device
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InvalidScenarioError(
                "max_blocks_per_device", f"must be a positive integer, got {m!r}"
            )
        if K * m < L:
            raise InvalidScenarioError("num_devices", too_few_devices(K, L, int(m)))
        if (
            isinstance(self.snr_db, bool)
            or not isinstance(self.snr_db, (int, float, np.integer, np.floating))
            or not math.isfinite(self.snr_db)
        ):
            raise InvalidScenarioError("snr_db", f"must be a finite number, got {self.snr_db!r}")
        if self.snr_convention not in SNR_CONVENTIONS:
            raise InvalidScenarioError(
                "snr_convention",
                f"must be one of {', '.join(SNR_CONVENTIONS)}, got {self.snr_convention!r}",
            )
        M = self.local_iterations
        if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
            raise InvalidScenarioError("local_iterations", f"must be a positive integer, got {M!r}")
        try:
            ref = get_reference(self.reference)
        except KeyError as exc:
            raise InvalidScenarioError("reference", str(exc.args[0])) from None
        set_ = object.__setattr__
        set_(self, "num_devices", int(K))
        set_(self, "local_iterations", int(M))
        set_(self, "snr_db", float(self.snr_db))
        set_(self, "bandwidth_hz", _positive("bandwidth_hz", self.bandwidth_hz))
        set_(self, "path_loss", _positive("path_loss", self.path_loss))
        set_(self, "compute_factor", _range("compute_factor", self.compute_factor, lower=0))
        if self.compute_factor[0] <= 0:
            raise InvalidScenarioError("compute_factor", "low must be > 0")
        set_(self, "memory_gb", _range("memory_gb", self.memory_gb, lower=0))
        set_(self, "reference", ref)
        set_(self, "max_blocks_per_device", int(m))
        set_(
            self,
            "extra_block_memory",
            _positive("extra_block_memory", self.extra_block_memory, allow_zero=True),
        )
        set_(self, "compute_scale", _positive("compute_scale", self.compute_scale))
        for name in ("equal_split", "benchmark_split"):
            if getattr(self, name) not in SPLIT_RULES:
                raise InvalidScenarioError(
                    name, f"must be one of {', '.join(SPLIT_RULES)}, got {getattr(self, name)!r}"
                )
        self._check_snr_range()
        seconds = self.costs.flops / ref.flops_per_second
        if self.compute_scale != 1.0:
            seconds = seconds * self.compute_scale
        seconds.flags.writeable = False
        set_(self, "block_seconds", seconds)

    def _check_snr_range(self) -> None:
        """Refuse an SNR whose linear mean received value ``10^(snr_db/10)`` (times the path
        loss under ``"transmit"``) leaves ``[1e-300, 1e300]``: beyond it ``10^(snr_db/10)``
        overflows to ``inf`` (or the rates underflow to 0) and no round could be computed."""
        gain_db = 10 * math.log10(self.path_loss) if self.snr_convention == "transmit" else 0.0
        received_db = self.snr_db + gain_db
        if not -MAX_SNR_DB <= received_db <= MAX_SNR_DB:
            raise InvalidScenarioError(
                "snr_db",
                f"{self.snr_db:g} dB gives a mean received SNR of {received_db:g} dB, outside "
                f"the +-{MAX_SNR_DB:g} dB that a float can hold",
            )

    # -- derived ---------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """``L``."""
        return self.costs.num_blocks

    @property
    def snr_linear(self) -> float:
        """``10^(snr_db / 10)``."""
        return 10.0 ** (self.snr_db / 10.0)

    @property
    def mean_received_snr(self) -> float:
        """Mean received SNR ``E[γ_k]`` under the scenario's convention (linear)."""
        gain = self.path_loss if self.snr_convention == "transmit" else 1.0
        return self.snr_linear * gain

    def split_for(self, scheme: str, *, joint: bool = False) -> str:
        """The equal-split rule of ``scheme`` (``joint``: a scheme of P2, which shares the
        whole ``B`` and so gets ``"active"``, the instance's own budget)."""
        if joint:
            return "active"
        return self.benchmark_split if scheme in BENCHMARK_SCHEMES else self.equal_split

    def budget(self, split: str = "active") -> float:
        """The bandwidth budget handed to a scheme under ``split``: ``B`` (``"active"``) or
        ``B L / K`` (``"all"``, so that the equal share ``budget / L`` is ``B/K``)."""
        if split == "active":
            return self.bandwidth_hz
        if split == "all":
            return self.bandwidth_hz * self.num_blocks / self.num_devices
        raise InvalidScenarioError("split", f"must be one of {', '.join(SPLIT_RULES)}")

    def with_(self, **changes: Any) -> Scenario:
        """A copy with some parameters changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """JSON-ready parameters, for manifests."""
        ref = self.reference
        assert isinstance(ref, ReferenceDevice)
        return {
            "model": self.costs.model,
            "num_blocks": self.num_blocks,
            "num_devices": self.num_devices,
            "snr_db": self.snr_db,
            "snr_convention": self.snr_convention,
            "path_loss": self.path_loss,
            "mean_received_snr": self.mean_received_snr,
            "bandwidth_hz": self.bandwidth_hz,
            "local_iterations": self.local_iterations,
            "compute_factor": list(self.compute_factor),
            "memory_gb": list(self.memory_gb),
            "fixed_compute": self.fixed_compute,
            "compute_scale": self.compute_scale,
            "equal_split": self.equal_split,
            "benchmark_split": self.benchmark_split,
            "reference_device": {
                "name": ref.name,
                "flops_per_second": ref.flops_per_second,
                "source": ref.source,
            },
            "block_bits": self.costs.block_bits,
            "block_flops": self.costs.flops.tolist(),
            "block_seconds": self.block_seconds.tolist(),
            "block_memory_bytes": self.costs.block_memory.tolist(),
        } | {  # the multi-block settings, where they differ from the paper's model
            k: getattr(self, k) for k, v in MULTIBLOCK_DEFAULTS.items() if getattr(self, k) != v
        }

    # -- sampling --------------------------------------------------------------------------

    def draw_device_states(
        self, rng: np.random.Generator, rounds: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The devices' own state of ``rounds`` rounds: ``(R, K)`` compute factors ``f_k`` and
        available memory in bytes, the first two draws of :meth:`sample`.

        A device that knows the seed can draw its own row (the Flower runtime's virtual
        devices do), and gets exactly what :meth:`sample` gives the server.
        """
        R, K = int(rounds), self.num_devices
        lo, hi = self.compute_factor
        if self.fixed_compute:
            f = np.broadcast_to(rng.uniform(lo, hi, size=K), (R, K)).copy()
        else:
            f = rng.uniform(lo, hi, size=(R, K))
        mem_lo, mem_hi = self.memory_gb
        return f, rng.uniform(mem_lo, mem_hi, size=(R, K)) * GB

    def sample(self, rounds: int, rng: np.random.Generator | int | None = None) -> Rounds:
        """Draw ``rounds`` independent rounds at once (vectorised).

        The draws are made in a fixed order (compute factors, memory, fading), each as one
        ``(rounds, K)`` array, so a seed reproduces the rounds bit for bit.
        """
        if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
            raise InvalidScenarioError("rounds", f"must be a positive integer, got {rounds!r}")
        rng = np.random.default_rng(rng)
        R, K = int(rounds), self.num_devices
        f, memory = self.draw_device_states(rng, R)
        fading = rng.exponential(1.0, size=(R, K))
        received = self.mean_received_snr * fading
        r = spectral_efficiency(received)
        # r_k underflows to 0 only for a channel power below ~1e-300: never in practice,
        # but the instance requires r_k > 0.
        np.maximum(r, np.finfo(float).tiny, out=r)
        return Rounds(self, f, memory, fading, r)


@dataclass(frozen=True, eq=False)
class Rounds:
    """A batch of sampled rounds of one :class:`Scenario`.

    Attributes
    ----------
    scenario
        The scenario they were drawn from.
    compute_factor
        ``(R, K)`` ``f_k`` per round.
    device_memory
        ``(R, K)`` available memory in bytes.
    fading
        ``(R, K)`` channel power ``|h_k|^2`` (Exp(1)).
    spectral_efficiency
        ``(R, K)`` ``r_k`` in bit/s/Hz (eq. 4).
    """

    scenario: Scenario
    compute_factor: NDArray[np.float64]
    device_memory: NDArray[np.float64]
    fading: NDArray[np.float64]
    spectral_efficiency: NDArray[np.float64]

    def __len__(self) -> int:
        return self.compute_factor.shape[0]

    def J(self, i: int) -> NDArray[np.float64]:
        """``(K, L)`` computation latencies of round ``i`` (eq. 3)."""
        sc = self.scenario
        return compute_latency(sc.block_seconds, self.compute_factor[i], sc.local_iterations)

    def instance(self, i: int, split: str = "active") -> Instance:
        """Round ``i`` as a scheduling :class:`~loladeft.system.Instance` whose bandwidth is
        the budget of the equal-split rule ``split`` (:meth:`Scenario.budget`; ``"active"``:
        the whole ``B``)."""
        sc = self.scenario
        return Instance(
            J=self.J(i),
            block_memory=sc.costs.block_memory,
            device_memory=self.device_memory[i],
            spectral_efficiency=self.spectral_efficiency[i],
            block_bits=sc.costs.block_bits,
            bandwidth=sc.budget(split),
            max_blocks_per_device=sc.max_blocks_per_device,
            extra_block_memory=sc.extra_block_memory,
        )

    def instances(self) -> list[Instance]:
        """Every round as an instance."""
        return [self.instance(i) for i in range(len(self))]
