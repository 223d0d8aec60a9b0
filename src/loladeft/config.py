"""Every setting of loladeft, with its one default, its bounds and its meaning.

One :class:`Config` holds everything a command needs, in tables that mirror the layers:

``[scenario]``  the edge system of Sec. VI-A (devices, channel, bandwidth, profile), shared by
                ``simulate``, ``train``, ``flower`` and the testbed;
``[lora]``      the LoRA adapters (PEFT ``LoraConfig``);
``[train]``     one fine-tuning run (Algorithm 1): task, scheme, optimiser, data, model;
``[runtime]``   how the Flower server talks to its nodes and how a federation is launched;
``[testbed]``   the emulated edge of ``loladeft testbed`` (CPU, memory and link limits);
the top level   the main job, ``loladeft simulate``: the Monte-Carlo sweep of Figs. 5, 6, 8,
                with its ``[sweeps]`` (the x values of each figure).

A configuration file (TOML) may hold any of these tables; each command reads the ones it
needs, and every key of every table is checked, so a typo is an error, never a silent
default. ``configs/paper.toml`` shows every key. The precedence is: defaults (here) <
command defaults (:data:`COMMAND_DEFAULTS`) < a scenario preset (:data:`PRESETS`, named by
``preset = "NAME"`` at the top level of the file or ``--preset``) < the file (``--config``)
< command-line flags.

>>> from loladeft.config import load_config
>>> cfg = load_config(None, {"train.task": "mrpc", "train.lr": 1e-3})
>>> cfg.train.lr, cfg.scenario.num_devices, cfg.lora.r
(0.001, 20, 8)

Errors (:class:`InputError`) are one line naming the key: ``train.lr: must be > 0, got -1``.

The Flower app reads the same settings as flat typed run-config entries (``train.lr =
0.0005``), so ``flwr run --run-config 'train.lr=1e-3'`` overrides one of them
(:func:`to_flat`, :func:`from_flat`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loladeft.allocation.registry import SCHEMES
from loladeft.exceptions import InputError
from loladeft.system.reference import DEFAULT_REFERENCE, REFERENCE_DEVICES

__all__ = [
    "CENTRALIZED",
    "COMMAND_DEFAULTS",
    "PRESETS",
    "Config",
    "LoraSettings",
    "RuntimeSettings",
    "ScenarioSettings",
    "SweepValues",
    "TestbedSettings",
    "TrainSettings",
    "dump_toml",
    "from_flat",
    "load_config",
    "preset_values",
    "to_flat",
]

#: The paper's model, whose profile the latency experiments use (Sec. VI-A).
PAPER_PROFILE = "roberta-base"
#: The scheme name of the centralized PEFT baseline (not a scheduling scheme).
CENTRALIZED = "centralized"

SchemeName = Literal[tuple(SCHEMES)]  # type: ignore[valid-type]
TrainScheme = Literal[(*SCHEMES, CENTRALIZED)]  # type: ignore[valid-type]
Experiment = Literal["fig5", "fig6", "fig8"]
Precision = Literal["auto", "fp32", "bf16"]
SnrConvention = Literal["transmit", "received"]
SplitRule = Literal["active", "all"]
Upload = Literal["block", "block+head"]
Statistic = Literal["median", "mean"]
DeviceModel = Literal["scenario", "measured"]
ReferenceName = Literal[tuple(REFERENCE_DEVICES)]  # type: ignore[valid-type]


# Strict scalars: a TOML string "3" or a boolean is not a number, 1.5 is not a count.
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Bool = Annotated[bool, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _pair(low_bound: float, *, open_low: bool = False) -> Any:
    """Validator of a ``[low, high]`` range with ``low_bound <= low <= high``."""

    def check(value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if lo < low_bound or (open_low and lo == low_bound) or hi < lo:
            op = "<" if open_low else "<="
            raise ValueError(f"must satisfy {low_bound:g} {op} low <= high, got [{lo:g}, {hi:g}]")
        return value

    return check


class ScenarioSettings(_Table):
    """``[scenario]``: the simulated edge system (paper Sec. VI-A; see
    :class:`loladeft.system.scenario.Scenario` for the model behind each value)."""

    profile: Name | None = Field(
        None,
        description="Per-depth FLOPs and memory b(l): builtin profile name or JSON path; "
        f"default: the trained model's builtin profile ({PAPER_PROFILE} for simulate).",
    )
    num_devices: Int = Field(20, ge=1, description="K devices (Sec. VI-A-3: 20).")
    snr_db: Float = Field(
        10.0, ge=-300, le=3000, description="SNR in dB, read by snr_convention (paper: 10)."
    )
    snr_convention: SnrConvention = Field(
        "transmit",
        description="transmit: received SNR = SNR x path loss x |h|^2 (the paper's words); "
        "received: the mean received SNR.",
    )
    path_loss: Float = Field(1e-3, gt=0, description="Path loss (paper: 1e-3).")
    bandwidth_mhz: Float = Field(100.0, gt=0, description="Uplink bandwidth B in MHz (paper: 100).")
    local_iterations: Int = Field(1, ge=1, description="M local iterations per round (eq. 3).")
    compute_factor: tuple[Float, Float] = Field(
        (0.5, 1.0), description="f_k ~ U(low, high) against the reference device (paper: 0.5, 1)."
    )
    memory_gb: tuple[Float, Float] = Field(
        (1.0, 6.0), description="Available memory ~ U[low, high] GB (paper: 1, 6)."
    )
    reference_device: ReferenceName = Field(
        DEFAULT_REFERENCE, description="Device with f_k = 1 that turns FLOPs into seconds."
    )
    fixed_compute: Bool = Field(
        False, description="Draw f_k once per point instead of every round."
    )
    # Fewer devices than blocks (issue 13, not in the paper; read by train and flower).
    layers_per_block: Int = Field(
        1,
        ge=1,
        description="Consecutive layers per LoRA block (must divide the model's layers); "
        "1: the paper's one block per layer.",
    )
    max_blocks_per_device: Int = Field(
        1,
        ge=1,
        description="Most blocks one device computes in a round (one truncated backward to "
        "its deepest); 1: the paper's model, K >= L.",
    )
    extra_block_memory_gb: Float = Field(
        0.0,
        ge=0,
        description="Memory, GB, each block a device carries beyond its deepest adds "
        "(the instance's extra_block_memory).",
    )
    compute_scale: Float = Field(
        1.0,
        gt=0,
        le=1e6,
        description="Factor on every d(l): the unstated sequence length, batch and sustained "
        "FLOP/s of the reference device (e.g. seq 512 on 4.5e13 FLOP/s: 0.0616).",
    )
    equal_split: SplitRule = Field(
        "active",
        description="Equal bandwidth of ba (P1): active = B/L over the L scheduled devices "
        "(the paper's P1); all = B/K (contradicts P1 and Sec. VI-A-3).",
    )
    benchmark_split: SplitRule = Field(
        "active",
        description="Equal bandwidth of comm-aware, comp-aware, random: active = B/L; "
        "all = B/K (the paper does not state it).",
    )
    upload: Upload = Field(
        "block",
        description="Training clock's S: what a scheduled device uploads, its LoRA block "
        "(the paper's S) or block+head (its head gradient too).",
    )
    device_model: DeviceModel = Field(
        "scenario",
        description="Where a Flower run's instance comes from: scenario (f_k and memory drawn, "
        "J from the FLOP profile) or measured (J and memory self-profiled by each node, "
        "uplink rates estimated from its transfers).",
    )
    profile_repeats: Int = Field(
        3, ge=1, le=50, description="Timed repeats per depth of a node's self-profile (median)."
    )

    _compute = field_validator("compute_factor")(_pair(0.0, open_low=True))
    _memory = field_validator("memory_gb")(_pair(0.0))

    @property
    def bandwidth_hz(self) -> float:
        """``B`` in Hz."""
        return self.bandwidth_mhz * 1e6

    @property
    def extra_block_memory(self) -> float:
        """The instance's ``extra_block_memory`` in bytes (the unit of ``b(l)``; GB = 1e9)."""
        return self.extra_block_memory_gb * 1e9

    def scenario(self, costs: Any, *, grouped: bool = False, **changes: Any) -> Any:
        """The :class:`~loladeft.system.scenario.Scenario` of these settings over the block
        costs ``costs`` (``changes`` override single parameters, e.g. a sweep's x value).

        ``costs`` are the profile's, one entry per layer; with ``layers_per_block > 1`` they
        are grouped here (:func:`loladeft.system.grouping.group_block_costs`: ``d`` and ``b``
        of the group's deepest layer, ``S`` summed). ``grouped=True``: ``costs`` are per
        block already (the training clock, which counts ``S`` on the grouped model,
        :func:`loladeft.training.clock.block_costs`). With ``upload = "block+head"``, ``S``
        counts the costs' ``head_bits`` too."""
        from loladeft.system.scenario import InvalidScenarioError, Scenario

        g = self.layers_per_block
        if g > 1 and not grouped:
            from loladeft.system.grouping import group_block_costs

            if costs.num_blocks % g:
                raise InvalidScenarioError(
                    "layers_per_block", f"{g} does not divide the {costs.num_blocks} layers"
                )
            costs = group_block_costs(costs, costs.num_blocks // g)
        if self.upload == "block+head" and getattr(costs, "head_bits", 0.0):
            costs = costs.with_head()
        params = dict(
            num_devices=self.num_devices,
            snr_db=self.snr_db,
            bandwidth_hz=self.bandwidth_hz,
            path_loss=self.path_loss,
            snr_convention=self.snr_convention,
            local_iterations=self.local_iterations,
            compute_factor=self.compute_factor,
            memory_gb=self.memory_gb,
            reference=self.reference_device,
            fixed_compute=self.fixed_compute,
            max_blocks_per_device=self.max_blocks_per_device,
            extra_block_memory=self.extra_block_memory,
            compute_scale=self.compute_scale,
            equal_split=self.equal_split,
            benchmark_split=self.benchmark_split,
        )
        return Scenario(costs, **{**params, **changes})


class LoraSettings(_Table):
    """``[lora]``: the adapters (PEFT ``LoraConfig``; paper: rank 8 on query and value)."""

    r: Int = Field(8, ge=1, description="LoRA rank.")
    alpha: Float = Field(16.0, gt=0, description="Scaling numerator (update x alpha / r).")
    dropout: Float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    targets: tuple[Name, ...] = Field(
        ("query", "value"), min_length=1, description="Module names that get adapters."
    )


class TrainSettings(_Table):
    """``[train]``: one fine-tuning run (Algorithm 1), stored in ``manifest.json``."""

    task: Name | None = Field(
        None, description="GLUE task: cola, sst2, mrpc, stsb, rte, qnli, qqp, mnli."
    )
    scheme: TrainScheme = Field(
        "jbba", description="Scheduling scheme, or 'centralized' for the PEFT baseline."
    )
    rounds: Int = Field(100, ge=1, description="Communication rounds N (= optimizer steps).")
    batch: Int = Field(32, ge=1, description="Per-device batch of one local iteration.")
    lr: Float = Field(5e-4, gt=0, description="AdamW peak learning rate.")
    weight_decay: Float = Field(0.01, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: Float = Field(0.06, ge=0, lt=1, description="Linear warm-up share of N.")
    betas: tuple[Float, Float] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1).")
    eps: Float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_length: Int = Field(128, ge=8, description="Token limit per example.")
    model: Name = Field("minilm", description="'minilm' (offline), a HF folder or hub id.")
    data_dir: Name | None = Field(
        None, description="GLUE TSV folder; none: download with Hugging Face datasets."
    )
    eval_every: Int = Field(10, ge=1, description="Evaluate every this many rounds.")
    checkpoint_every: Int = Field(
        0, ge=0, description="Checkpoint every this many rounds; 0: at each evaluation."
    )
    seed: Int = Field(0, ge=0, description="Seed of everything random in the run.")
    shared_schemes: tuple[SchemeName, ...] = Field(
        (),
        description="Shared-trajectory mode: schemes whose clocks replay this one run "
        "(data routed by scheme).",
    )
    precision: Precision = Field(
        "auto", description="auto (bf16 where the CPU has native bf16), fp32 or bf16."
    )
    max_eval_samples: Int | None = Field(
        None, ge=1, description="Evaluate on the first this many dev examples; none: all."
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"must be two numbers in [0, 1), got {list(value)}")
        return value

    @field_validator("task")
    @classmethod
    def _task(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from loladeft.exceptions import InputError
        from loladeft.training.data import get_task  # numpy only

        try:
            return get_task(value).name
        except InputError as exc:
            raise ValueError(str(exc).removeprefix("task: ")) from None

    @property
    def centralized(self) -> bool:
        """Whether this is the centralized PEFT baseline."""
        return self.scheme == CENTRALIZED

    @property
    def mode(self) -> str:
        """``centralized``, ``separate`` (one run per scheme) or ``shared-trajectory``."""
        if self.centralized:
            return "centralized"
        return "shared-trajectory" if self.shared_schemes else "separate"

    @property
    def clock_schemes(self) -> tuple[str, ...]:
        """Schemes whose clock the run records."""
        if self.centralized:
            return ()
        return self.shared_schemes or (self.scheme,)


class RuntimeSettings(_Table):
    """``[runtime]``: the Flower server's timing and fault handling, and how ``loladeft
    flower`` launches a federation."""

    round_timeout: Float = Field(
        120.0, gt=0, description="Wall seconds a node has to return its gradient."
    )
    query_timeout: Float = Field(
        30.0, gt=0, description="Wall seconds the nodes have to report their state."
    )
    node_wait: Float = Field(120.0, gt=0, description="Wall seconds to wait for K nodes.")
    poll_interval: Float = Field(0.01, gt=0, description="Seconds between two reply pulls.")
    max_grad_norm: Float = Field(
        1e4, gt=0, description="Replies with a larger gradient norm are rejected."
    )
    straggler_prob: Float = Field(
        0.0, ge=0, lt=1, description="Probability a scheduled device misses the deadline."
    )
    deadline_factor: Float = Field(
        2.0, gt=1, description="Virtual deadline as a multiple of the planned round latency."
    )
    insecure: Bool = Field(False, description="Launch without TLS and SuperNode authentication.")
    warm: Bool = Field(
        True, description="Nodes run their tasks in a warm executor (model kept in memory)."
    )
    cpus_per_node: Float = Field(1.0, gt=0, description="CPU cores Ray reserves per virtual node.")
    timeout: Float = Field(3600.0, gt=0, description="Wall seconds allowed for a whole run.")
    link_alpha: Float = Field(
        0.5,
        gt=0,
        le=1,
        description="Weight of the newest reading in the uplink estimates (measured devices).",
    )
    probe_bytes: Int = Field(
        1_000_000,
        ge=65_536,
        le=64_000_000,
        description="Bytes of the link probe each node sends at join (measured devices).",
    )


class TestbedSettings(_Table):
    """``[testbed]``: the emulated edge of ``loladeft testbed`` (Linux, root; see
    :mod:`loladeft.testbed`)."""

    cpu_budget: Float = Field(
        1.6,
        gt=0,
        description="Cores the nodes' CPU quotas share, in proportion to their compute "
        "factors (the rest is the server's).",
    )
    base_memory_mb: Float = Field(
        0.0,
        ge=0,
        description="Memory a node needs before any block (process, libraries, model); "
        "0: measured from each node after it has loaded the model.",
    )
    node_poll_s: Float = Field(
        1.0,
        gt=0,
        le=10,
        description="Longest idle poll of a node's SuperNode, s: its polls cross the shaped "
        "uplink, so frequent ones eat a slow link (LOLADEFT_NODE_POLL_S).",
    )
    memory_margin_mb: Float = Field(
        96.0,
        ge=0,
        description="Memory a node gets besides its base and headroom (message buffers, "
        "allocator slack).",
    )
    memory_scale: Float = Field(
        1.0,
        gt=0,
        description="A node's cgroup memory limit is its base plus memory_scale x its drawn "
        "memory mapped onto the model's largest block need (< 1 makes the wall bind "
        "below what the scenario promises the scheduler).",
    )


class SweepValues(_Table):
    """``[sweeps]``: the x values of each latency figure."""

    fig5: tuple[Float, ...] = Field(
        tuple(float(x) for x in range(0, 21, 2)), min_length=1, description="SNR, dB."
    )
    fig6: tuple[Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)], ...] = Field(
        tuple(float(x) for x in range(20, 201, 20)), min_length=1, description="Bandwidth, MHz."
    )
    fig8: tuple[Annotated[int, Field(strict=True, ge=1)], ...] = Field(
        (12, 15, 20, 25, 30, 35, 40, 45, 50), min_length=1, description="Devices K."
    )


#: Schemes of the paper's latency figures, in plotting order (baselines first).
PAPER_SCHEMES = ("comm-aware", "comp-aware", "random", "ba", "jbba-dual", "jbba")
#: Monte-Carlo rounds per point of ``loladeft simulate --quick``.
QUICK_ROUNDS = 100


#: Named scenario presets: values of ``[scenario]`` keys that set the regime of the paper's
#: unstated choices (README, "Regimes"; each one documented in ``configs/presets/``). A
#: preset sits above the defaults and below the file's and the flags' explicit values.
PRESETS: dict[str, dict[str, Any]] = {
    # the paper's words read literally: transmit SNR 10 dB x path loss 1e-3, B/L (today's
    # default: every output of loladeft without a preset is this one's)
    "paper-literal": {},
    # text-consistent: the paper's 10 dB read as the mean received SNR, B/L as P1 says, and
    # the compute scale fitted to the paper's ratios by `loladeft calibrate --preset
    # calibrated` (seed 2024): per-iteration compute ~9x below the default
    "calibrated": {
        "snr_convention": "received",
        "snr_db": 10.0,
        "compute_scale": 0.113,
    },
    # text-consistent too: as calibrated, but the benchmarks (whose bandwidth the paper does
    # not state) split B over all K devices; compute scale fitted the same way
    "benchmarks-bk": {
        "snr_convention": "received",
        "snr_db": 10.0,
        "compute_scale": 0.0211,
        "benchmark_split": "all",
    },
    # CONTRADICTS THE TEXT (P1's SL/(B r_k) and Sec. VI-A-3's "the 12 involved devices
    # equally split the bandwidth budget"): B/K for BA and the benchmarks, the one reading
    # near every paper ratio; compute scale fitted the same way
    "bk-split": {
        "snr_convention": "received",
        "snr_db": 10.0,
        "compute_scale": 0.0637,
        "equal_split": "all",
        "benchmark_split": "all",
    },
}
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]


class Config(_Table):
    """Every setting; the top level is the main job's (``loladeft simulate``)."""

    preset: PresetName | None = Field(
        None,
        description="Scenario preset below the file's and the flags' values: "
        + ", ".join(PRESETS)
        + " (README, Regimes).",
    )

    seed: Int = Field(
        2024, ge=0, description="Master seed of the sweep; each point derives its own."
    )
    rounds: Int = Field(1000, ge=1, description="Monte-Carlo rounds per point.")
    experiments: tuple[Experiment, ...] = Field(
        ("fig5", "fig6", "fig8"), min_length=1, description="Figures to compute."
    )
    schemes: tuple[SchemeName, ...] = Field(
        PAPER_SCHEMES, min_length=1, description="Schemes to compare."
    )
    out: Name = Field("results", description="Output folder of the sweep.")
    workers: Int = Field(2, ge=1, le=64, description="Processes across points.")
    stat: Statistic = Field(
        "median",
        description="What the latency plots draw: median (with the interquartile band) or "
        "mean (with its 95% CI; heavy-tailed points left out).",
    )
    scenario: ScenarioSettings = ScenarioSettings()
    sweeps: SweepValues = SweepValues()
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    testbed: TestbedSettings = TestbedSettings()

    @field_validator("experiments", "schemes")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    def updated(self, overrides: Mapping[str, Any]) -> Config:
        """A validated copy with dotted keys replaced (``{"train.task": "rte"}``)."""
        return build(_merge(self.model_dump(), _nest(overrides)))

    def run_dict(self) -> dict[str, Any]:
        """What determines one fine-tuning run: ``train``, ``lora`` and ``scenario``
        (stored in ``manifest.json`` and compared on ``--resume``)."""
        return self.model_dump(mode="json", include={"train", "lora", "scenario"})


#: Defaults that differ by command (still here, so every default has one place).
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    # a local federation on one machine: fewer nodes and rounds than the paper's 20 x 100
    "flower local": {"scenario.num_devices": 8, "train.rounds": 10, "train.eval_every": 5},
    # the emulated edge: as flower local, measured devices, small batches
    "testbed": {
        "scenario.num_devices": 8,
        "scenario.device_model": "measured",
        "train.rounds": 10,
        "train.eval_every": 5,
        "train.batch": 8,
        "runtime.round_timeout": 90.0,
        "runtime.query_timeout": 20.0,
        "runtime.node_wait": 300.0,
        "runtime.poll_interval": 0.05,
        "runtime.insecure": True,
    },
}


# -- loading ----------------------------------------------------------------------------------


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *tables, leaf = key.split(".")
        node = out
        for t in tables:
            node = node.setdefault(t, {})
            if not isinstance(node, dict):
                raise InputError(f"{key}: {t} is not a table")
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "config"
    index = [p for p in err["loc"] if isinstance(p, int)]
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key"
    msg = msg.removeprefix("Value error, ")
    if kind != "value_error" and "input" in err and not isinstance(err["input"], Mapping):
        where = f" (item {index[0]})" if index else ""
        msg = f"{msg[0].lower()}{msg[1:]}{where}, got {err['input']!r}"
    return f"{key}: {msg}"


def build(data: Mapping[str, Any]) -> Config:
    """A validated :class:`Config` from nested tables (missing keys take their defaults).

    Raises
    ------
    InputError
        The first unknown key or invalid value, by its dotted key.
    """
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise InputError(_first_error(exc)) from None
    except RecursionError:
        raise InputError("config: nested too deeply") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file (one-line :class:`InputError` if unreadable)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"config: cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"config: {path} is not valid TOML ({exc})") from None


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    command: str | None = None,
) -> Config:
    """Defaults < ``COMMAND_DEFAULTS[command]`` < the preset < the TOML file at ``path`` <
    ``overrides``.

    ``overrides`` maps dotted keys (``"train.lr"``) to values; ``None`` values mean "not
    given" and are skipped. The preset is ``overrides["preset"]``, else the file's top-level
    ``preset``; its :data:`PRESETS` values apply below the file's and the flags' own.
    """
    data = _nest(COMMAND_DEFAULTS.get(command or "", {}))
    file = read_toml(path) if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = given.get("preset", file.get("preset"))
    if name is not None:
        data = _merge(data, {"scenario": preset_values(name)})
    return build(_merge(_merge(data, file), _nest(given)))


def preset_values(name: Any) -> dict[str, Any]:
    """The ``[scenario]`` values of the preset ``name`` (:class:`InputError` if unknown)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise InputError(f"preset: unknown {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


# -- writing ----------------------------------------------------------------------------------


def dump_toml(cfg: Config, tables: tuple[str, ...] | None = None) -> str:
    """The effective configuration as TOML (``--print-config``); unset optional values
    (``None``) are left out, so the text loads back to the same configuration."""
    import tomli_w

    data = cfg.model_dump(mode="json", exclude_none=True)
    if tables is not None:
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        data = {**(top if "" in tables else {}), **{t: data[t] for t in tables if t in data}}
    return tomli_w.dumps(data)


FlatValue = bool | int | float | str


#: The tables a fine-tuning run (and so the Flower app) reads.
RUN_TABLES = ("scenario", "lora", "train", "runtime")


def to_flat(cfg: Config, tables: tuple[str, ...] = RUN_TABLES) -> dict[str, FlatValue]:
    """Flat typed entries (``"train.lr": 0.0005``) for Flower's run config, whose values
    must be scalars: a list becomes a comma-separated string and ``None`` an empty
    string (:func:`from_flat` reads both back)."""
    out: dict[str, FlatValue] = {}
    for table in tables:
        for key, value in getattr(cfg, table).model_dump(mode="json").items():
            if value is None:
                value = ""
            elif isinstance(value, list):
                value = ",".join(str(v) for v in value)
            out[f"{table}.{key}"] = value
    return out


def from_flat(flat: Mapping[str, Any]) -> Config:
    """Inverse of :func:`to_flat` (unknown keys and bad values are errors)."""
    data: dict[str, Any] = {}
    for key, value in flat.items():
        table, _, leaf = key.partition(".")
        section = Config.model_fields[table].annotation if table in RUN_TABLES else None
        if section is None or leaf not in section.model_fields:
            raise InputError(f"{key}: unknown key")
        field = section.model_fields[leaf]
        if value == "" and field.default is None:
            value = None
        elif isinstance(value, str) and _is_sequence(field.annotation):
            value = _parse_list(value, field.annotation)
        data[key] = value
    return build(_nest(data))


def _is_sequence(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is tuple


def _parse_list(text: str, annotation: Any) -> list[Any]:
    """Items of a comma-separated run-config string, as numbers where the field wants
    numbers (an item that is not one stays a string, for the model to name)."""
    items: list[Any] = [t.strip() for t in text.split(",") if t.strip()]
    element = getattr(annotation.__args__[0], "__origin__", annotation.__args__[0])
    if element in (int, float):
        for i, item in enumerate(items):
            try:
                items[i] = element(item)
            except ValueError:
                pass
    return items
