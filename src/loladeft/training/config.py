"""Settings of one fine-tuning run, validated up front so bad input fails before any work."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from loladeft.exceptions import LoladeftError

#: The scheme name of the centralized PEFT baseline (not a scheduling scheme).
CENTRALIZED = "centralized"
PRECISIONS = ("auto", "fp32", "bf16")


class ConfigError(LoladeftError, ValueError):
    """A run setting is out of range; the message names it."""


def resolve_precision(precision: str) -> str:
    """``fp32`` or ``bf16``: ``auto`` becomes bf16 where the CPU has native bf16 arithmetic."""
    if precision != "auto":
        return precision
    import torch

    cpu = torch.cpu
    native = any(
        getattr(cpu, name, lambda: False)()
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return "bf16" if native else "fp32"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run (stored in ``manifest.json`` and the checkpoint).

    Attributes
    ----------
    task
        GLUE task (``mrpc``, ``rte``...).
    scheme
        Scheduling scheme of the DEFT run (``jbba``, ``ba``, ``comm-aware``...; see
        ``loladeft solve --help``), or ``"centralized"`` for the PEFT baseline.
    rounds
        Communication rounds ``N`` (= optimizer steps, also for the centralized baseline).
    num_devices
        ``K`` devices holding i.i.d. shards of the training set (paper: 20).
    batch
        Per-device batch size of one local iteration. The centralized baseline uses
        ``local_iterations * batch`` per step, the same number of samples per update.
    local_iterations
        ``M`` local iterations per round (gradients accumulated, eq. 3).
    lr, weight_decay, warmup_ratio, betas, eps
        AdamW and its linear warm-up / linear decay schedule, the same for every run.
    lora_r, lora_alpha, lora_dropout, lora_targets
        PEFT LoRA settings (paper: rank 8 on query and value).
    max_length
        Token limit per example (dynamic padding to the longest example of each batch).
    model
        ``minilm`` (offline default), a Hugging Face folder, or a hub id.
    profile
        Profile giving ``d(l)``, ``b(l)`` for the clock: builtin name or JSON path; ``None``
        picks the builtin profile of the model (``minilm``, ``roberta-base``).
    data_dir
        GLUE TSV folder (offline), or ``None`` for Hugging Face ``datasets`` (online).
    eval_every
        Evaluate on the dev set every this many rounds (and at rounds 0 and ``N``).
    checkpoint_every
        Write the checkpoint every this many rounds (and at the end); 0: with evaluations.
    seed
        One seed for the model initialisation, the data partition and order, dropout and the
        device states of every round.
    snr_db, bandwidth_hz, snr_convention
        Channel settings of the scenario (paper: 10 dB, 100 MHz, transmit SNR).
    shared_schemes
        Shared-trajectory mode when non-empty: one training run (its data routed by
        ``scheme``'s allocation) replayed on the clock of each listed scheme over the same
        per-round device states.
    precision
        ``fp32``, ``bf16`` (CPU autocast of the forward and backward pass; LoRA weights,
        gradients and Adam stay fp32), or ``auto``: bf16 where the CPU has native bf16
        arithmetic (AVX512-BF16 or AMX), else fp32 (:func:`resolve_precision`). bf16 ran a
        MiniLM DEFT round 1.6x faster than fp32 on the development host
        (``benchmarks/bench_training.py``).
    max_eval_samples
        Evaluate on the first this many dev examples (``None``: all).
    """

    task: str
    scheme: str = "jbba"
    rounds: int = 100
    num_devices: int = 20
    batch: int = 32
    local_iterations: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("query", "value")
    max_length: int = 128
    model: str = "minilm"
    profile: str | None = None
    data_dir: str | None = None
    eval_every: int = 10
    checkpoint_every: int = 0
    seed: int = 0
    snr_db: float = 10.0
    bandwidth_hz: float = 100e6
    snr_convention: str = "transmit"
    shared_schemes: tuple[str, ...] = field(default_factory=tuple)
    precision: str = "auto"
    max_eval_samples: int | None = None

    def __post_init__(self) -> None:
        from loladeft.allocation.registry import get_scheme
        from loladeft.training.data import get_task

        set_ = object.__setattr__
        set_(self, "task", get_task(self.task).name)
        if self.scheme != CENTRALIZED:
            get_scheme(self.scheme)
        set_(self, "shared_schemes", tuple(self.shared_schemes))
        for s in self.shared_schemes:
            get_scheme(s)
        if self.shared_schemes and self.scheme == CENTRALIZED:
            raise ConfigError("shared-schemes: the centralized baseline has no schedule")
        for name, low in (
            ("rounds", 1),
            ("num_devices", 1),
            ("batch", 1),
            ("local_iterations", 1),
            ("lora_r", 1),
            ("max_length", 8),
            ("eval_every", 1),
            ("checkpoint_every", 0),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}: must be an integer >= {low}, got {value!r}")
        for name in ("lr", "lora_alpha", "eps", "bandwidth_hz"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name}: must be a number > 0, got {value!r}")
        for name in ("weight_decay", "warmup_ratio", "lora_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name}: must be in [0, 1), got {value!r}")
        set_(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas: must be two numbers in [0, 1), got {self.betas!r}")
        set_(self, "lora_targets", tuple(self.lora_targets))
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ConfigError("lora_targets: give at least one module name")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.max_eval_samples is not None and (
            not isinstance(self.max_eval_samples, int) or self.max_eval_samples < 1
        ):
            raise ConfigError(f"max_eval_samples: must be >= 1, got {self.max_eval_samples!r}")

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["lora_targets"] = list(self.lora_targets)
        out["shared_schemes"] = list(self.shared_schemes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"config: unknown setting(s) {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("betas", "lora_targets", "shared_schemes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
