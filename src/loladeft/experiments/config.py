"""Configuration of ``loladeft simulate``: defaults, TOML file, validation.

Every parameter has a default reproducing the paper's setting (Sec. VI-A); a TOML file
(``configs/paper.toml`` shows every key) overrides the defaults, and command-line flags
override the file. Unknown keys are errors, so a typo never silently falls back to a
default.

TOML layout::

    seed = 2024                 # master seed; each point's seed derives from it
    rounds = 1000               # Monte-Carlo rounds per point
    experiments = ["fig5", "fig6", "fig8"]
    schemes = ["comm-aware", "comp-aware", "random", "ba", "jbba-dual", "jbba"]
    out = "results"
    workers = 2                 # processes across points

    [scenario]                  # the default point (paper: 10 dB, 100 MHz, 20 devices)
    profile = "roberta-base"    # builtin profile name or path to a profile JSON
    num_devices = 20
    snr_db = 10.0
    snr_convention = "transmit"
    path_loss = 1e-3
    bandwidth_mhz = 100.0
    local_iterations = 1
    compute_factor = [0.5, 1.0]
    memory_gb = [1.0, 6.0]
    reference_device = "snapdragon-8-gen-3"
    fixed_compute = false

    [sweeps]                    # the x values of each experiment
    fig5 = [0, 2, 4, ...]       # snr_db
    fig6 = [20, 40, ...]        # bandwidth_mhz
    fig8 = [12, 15, 20, ...]    # num_devices
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from loladeft.exceptions import LoladeftError

#: Schemes of the paper's latency figures, in plotting order (baselines first).
DEFAULT_SCHEMES = ("comm-aware", "comp-aware", "random", "ba", "jbba-dual", "jbba")

#: x values of each experiment (paper Figs. 5, 6 and 8).
DEFAULT_SWEEPS: dict[str, tuple[float, ...]] = {
    "fig5": tuple(float(x) for x in range(0, 21, 2)),  # transmit SNR, dB
    "fig6": tuple(float(x) for x in range(20, 201, 20)),  # uplink bandwidth, MHz
    "fig8": (12, 15, 20, 25, 30, 35, 40, 45, 50),  # number of devices
}

QUICK_ROUNDS = 100


class ConfigError(LoladeftError, ValueError):
    """A configuration value is invalid; the message names the key."""


@dataclass(frozen=True)
class ScenarioConfig:
    """The ``[scenario]`` table: the default point of every sweep (paper Sec. VI-A)."""

    profile: str = "roberta-base"
    num_devices: int = 20
    snr_db: float = 10.0
    snr_convention: str = "transmit"
    path_loss: float = 1e-3
    bandwidth_mhz: float = 100.0
    local_iterations: int = 1
    compute_factor: tuple[float, float] = (0.5, 1.0)
    memory_gb: tuple[float, float] = (1.0, 6.0)
    reference_device: str = "snapdragon-8-gen-3"
    fixed_compute: bool = False


@dataclass(frozen=True)
class SimulationConfig:
    """Everything ``loladeft simulate`` needs; see the module docstring for the keys."""

    seed: int = 2024
    rounds: int = 1000
    experiments: tuple[str, ...] = ("fig5", "fig6", "fig8")
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    out: str = "results"
    workers: int = 2
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    sweeps: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_SWEEPS))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the manifest)."""
        data = asdict(self)
        data["experiments"] = list(self.experiments)
        data["schemes"] = list(self.schemes)
        data["sweeps"] = {k: list(v) for k, v in self.sweeps.items()}
        data["scenario"]["compute_factor"] = list(self.scenario.compute_factor)
        data["scenario"]["memory_gb"] = list(self.scenario.memory_gb)
        return data

    def with_overrides(self, **overrides: Any) -> SimulationConfig:
        """Apply command-line overrides (``None`` means "not given"); validates."""
        top = {k: v for k, v in overrides.items() if v is not None and k != "num_devices"}
        cfg = replace(self, **top)
        if overrides.get("num_devices") is not None:
            cfg = replace(cfg, scenario=replace(cfg.scenario, num_devices=overrides["num_devices"]))
        return validate(cfg)


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    return value


def _float(key: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(f"{key}: must be finite, got {x}")
    if positive and x <= 0:
        raise ConfigError(f"{key}: must be > 0, got {x:g}")
    return x


def _names(key: str, value: Any, known: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{key}: must be a non-empty list of names")
    out = []
    for name in value:
        if name not in known:
            raise ConfigError(f"{key}: unknown {name!r}; choose from {', '.join(known)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def validate(cfg: SimulationConfig) -> SimulationConfig:
    """Check every value; return a normalised copy.

    Raises
    ------
    ConfigError
        The first invalid value, by key (``rounds: must be >= 1, got 0``).
    """
    from loladeft.allocation.registry import SCHEMES
    from loladeft.system.reference import REFERENCE_DEVICES
    from loladeft.system.scenario import SNR_CONVENTIONS

    sc = cfg.scenario
    scenario = ScenarioConfig(
        profile=_str("scenario.profile", sc.profile),
        num_devices=_int("scenario.num_devices", sc.num_devices, 1),
        snr_db=_float("scenario.snr_db", sc.snr_db),
        snr_convention=_names("scenario.snr_convention", sc.snr_convention, SNR_CONVENTIONS)[0],
        path_loss=_float("scenario.path_loss", sc.path_loss, positive=True),
        bandwidth_mhz=_float("scenario.bandwidth_mhz", sc.bandwidth_mhz, positive=True),
        local_iterations=_int("scenario.local_iterations", sc.local_iterations, 1),
        compute_factor=_pair("scenario.compute_factor", sc.compute_factor, positive=True),
        memory_gb=_pair("scenario.memory_gb", sc.memory_gb, positive=False),
        reference_device=_names(
            "scenario.reference_device", sc.reference_device, list(REFERENCE_DEVICES)
        )[0],
        fixed_compute=_bool("scenario.fixed_compute", sc.fixed_compute),
    )
    experiments = _names("experiments", cfg.experiments, list(DEFAULT_SWEEPS))
    sweeps: dict[str, tuple[float, ...]] = {}
    if not isinstance(cfg.sweeps, dict):
        raise ConfigError("sweeps: must be a table")
    for name, values in cfg.sweeps.items():
        if name not in DEFAULT_SWEEPS:
            raise ConfigError(
                f"sweeps: unknown experiment {name!r}; choose from {', '.join(DEFAULT_SWEEPS)}"
            )
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"sweeps.{name}: must be a non-empty list")
        if name == "fig8":
            sweeps[name] = tuple(_int(f"sweeps.{name}", v, 1) for v in values)
        else:
            sweeps[name] = tuple(
                _float(f"sweeps.{name}", v, positive=(name == "fig6")) for v in values
            )
    for name in DEFAULT_SWEEPS:
        sweeps.setdefault(name, DEFAULT_SWEEPS[name])
    return SimulationConfig(
        seed=_int("seed", cfg.seed, 0),
        rounds=_int("rounds", cfg.rounds, 1),
        experiments=experiments,
        schemes=_names("schemes", cfg.schemes, list(SCHEMES)),
        out=_str("out", cfg.out),
        workers=_int("workers", cfg.workers, 1),
        scenario=scenario,
        sweeps=sweeps,
    )


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a non-empty string, got {value!r}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _pair(key: str, value: Any, *, positive: bool) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{key}: must be a pair [low, high]")
    lo, hi = (_float(key, v) for v in value)
    if lo > hi or lo < 0 or (positive and lo <= 0):
        bound = "0 < low" if positive else "0 <= low"
        raise ConfigError(f"{key}: must satisfy {bound} <= high, got [{lo:g}, {hi:g}]")
    return lo, hi


def load_config(path: str | Path | None) -> SimulationConfig:
    """Defaults, overridden by the TOML file at ``path`` when given; validated.

    Raises
    ------
    ConfigError
        Unreadable or malformed file, unknown key, or invalid value.
    """
    if path is None:
        return validate(SimulationConfig())
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None
    top_keys = {f.name for f in fields(SimulationConfig)}
    unknown = sorted(set(data) - top_keys)
    if unknown:
        raise ConfigError(f"config: unknown key {unknown[0]!r} in {path}")
    scenario_data = data.pop("scenario", {})
    if not isinstance(scenario_data, dict):
        raise ConfigError("scenario: must be a table")
    scenario_keys = {f.name for f in fields(ScenarioConfig)}
    unknown = sorted(set(scenario_data) - scenario_keys)
    if unknown:
        raise ConfigError(f"config: unknown key 'scenario.{unknown[0]}' in {path}")
    sweeps = data.pop("sweeps", {})
    if not isinstance(sweeps, dict):
        raise ConfigError("sweeps: must be a table")
    for key in ("experiments", "schemes"):
        if key in data and isinstance(data[key], list):
            data[key] = tuple(data[key])
    for key in ("compute_factor", "memory_gb"):
        if key in scenario_data and isinstance(scenario_data[key], list):
            scenario_data[key] = tuple(scenario_data[key])
    cfg = SimulationConfig(
        **data,
        scenario=ScenarioConfig(**scenario_data),
        sweeps={**DEFAULT_SWEEPS, **sweeps},
    )
    return validate(cfg)
