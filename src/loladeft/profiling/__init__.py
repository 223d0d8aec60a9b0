"""Per-block cost profiles of LoRA fine-tuning: ``d(l)`` (FLOPs) and ``b(l)`` (memory).

- :mod:`loladeft.profiling.profile`: the :class:`Profile` value, its JSON file format and
  :func:`load_profile` (builtin names ``"roberta-base"`` and ``"minilm"`` or a path).
- :mod:`loladeft.profiling.analytic`: closed-form FLOPs and saved-activation bytes, cited.
- :mod:`loladeft.profiling.profiler`: the measuring profiler (torch, imported lazily), behind
  ``loladeft profile``.

Importing this package needs only numpy; torch is loaded by the profiler on first use.
"""

from __future__ import annotations

from loladeft.profiling.profile import (
    BUILTIN_PROFILES,
    DTYPE_BYTES,
    DepthCost,
    InvalidProfileError,
    Profile,
    load_profile,
)

__all__ = [
    "BUILTIN_PROFILES",
    "DTYPE_BYTES",
    "DepthCost",
    "InvalidProfileError",
    "Profile",
    "load_profile",
]
