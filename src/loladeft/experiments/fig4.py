"""Figures 4(a) and 4(b) of the paper from a :class:`~loladeft.profiling.profile.Profile`.

* Fig. 4(a): on-device memory ``b(l)`` and computation latency ``d(l)`` against block depth.
* Fig. 4(b): per-device memory of one device fine-tuning everything (weights, all activations,
  all LoRA parameters and gradients, Adam's moments) against a cooperative device that holds
  the deepest block, the shallowest block, or (the mean over depths) a block at random.

``loladeft reproduce fig4`` draws both from the paper model's builtin profile;
``loladeft profile --plot`` from the profile it measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from loladeft.experiments.plotting import pyplot, save
from loladeft.profiling.profile import Profile

_GIB = 2.0**30


def _save(fig: Any, path: Path) -> list[Path]:
    return save(fig, path, tight=True)


def _reference_seconds(profile: Profile) -> tuple[np.ndarray, str]:
    if all(d.reference_seconds is not None for d in profile.depths):
        secs = np.array([d.reference_seconds for d in profile.depths], dtype=float)
        return secs, str(profile.meta.get("reference_device", "reference device"))
    from loladeft.system.reference import DEFAULT_REFERENCE, seconds_for_flops

    return np.asarray(seconds_for_flops(profile.flops)), DEFAULT_REFERENCE


def plot_fig4a(profile: Profile, path: str | Path) -> list[Path]:
    """Memory and computation latency of one step against block depth (Fig. 4(a)).

    Returns the written files (``.png`` and ``.pdf``).
    """
    plt = pyplot()
    depth = np.arange(1, profile.num_blocks + 1)
    secs, ref = _reference_seconds(profile)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    mem = profile.memory_bytes / _GIB
    act = profile.activation_bytes / _GIB
    ax.bar(depth, mem, color="#9ecae1", label="memory b(l): total")
    ax.bar(depth, act, color="#3182bd", label="of which activations")
    ax.set_xlabel("block depth l (1 = last layer, nearest the output)")
    ax.set_ylabel("on-device memory (GiB)")
    ax.set_xticks(depth)
    ax2 = ax.twinx()
    ax2.plot(depth, secs, "o-", color="#d62728", label=f"latency on {ref}")
    if not np.isnan(profile.host_seconds).all():
        ax2.plot(depth, profile.host_seconds, "s--", color="#ff7f0e", label="latency on this host")
    ax2.set_ylabel("computation latency of one step (s)")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title(
        f"{profile.model}, {profile.dtype}, batch {profile.batch}, seq {profile.seq}, "
        f"LoRA r={profile.lora_r} ({profile.source})",
        fontsize=9,
    )
    return _save(fig, Path(path))


def single_device_bytes(profile: Profile) -> dict[str, float]:
    """The single-device memory breakdown, from ``meta["single_device"]`` if present.

    Otherwise an upper-bound estimate: the deepest step's activations, every block's LoRA
    parameters, gradients and two Adam moments.
    """
    single = profile.meta.get("single_device")
    if isinstance(single, dict) and "memory_bytes" in single:
        return {k: float(v) for k, v in single.items() if isinstance(v, (int, float))}
    lora = profile.num_blocks * profile.depths[0].block_param_bytes / 2
    deepest = profile.depths[-1]
    return {
        "weight_bytes": deepest.weight_bytes,
        "activation_bytes": deepest.activation_bytes,
        "lora_param_bytes": lora,
        "lora_grad_bytes": lora,
        "optimizer_bytes": 2 * lora,
        "memory_bytes": deepest.weight_bytes + deepest.activation_bytes + 4 * lora,
    }


def plot_fig4b(profile: Profile, path: str | Path) -> list[Path]:
    """Per-device memory: single-device fine-tuning vs cooperative devices (Fig. 4(b))."""
    plt = pyplot()
    single = single_device_bytes(profile)
    deep, shallow = profile.depths[-1], profile.depths[0]
    bars = {
        "single device\n(all blocks)": [
            single["weight_bytes"],
            single["activation_bytes"],
            single["lora_param_bytes"] + single["lora_grad_bytes"],
            single["optimizer_bytes"],
        ],
        f"cooperative,\ndeepest block (l={deep.depth})": [
            deep.weight_bytes,
            deep.activation_bytes,
            deep.block_param_bytes,
            deep.optimizer_bytes,
        ],
        "cooperative,\nmean over depths": [
            float(np.mean(profile.weight_bytes)),
            float(np.mean(profile.activation_bytes)),
            float(np.mean(profile.block_param_bytes)),
            float(np.mean(profile.optimizer_bytes)),
        ],
        "cooperative,\nshallowest block (l=1)": [
            shallow.weight_bytes,
            shallow.activation_bytes,
            shallow.block_param_bytes,
            shallow.optimizer_bytes,
        ],
    }
    parts = ["weights", "activations", "LoRA params + grads", "Adam moments"]
    colors = ["#bdbdbd", "#3182bd", "#31a354", "#e6550d"]
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for j, (part, color) in enumerate(zip(parts, colors, strict=True)):
        vals = np.array([v[j] for v in bars.values()]) / _GIB
        ax.bar(x, vals, bottom=bottom, color=color, label=part, width=0.6)
        bottom += vals
    for xi, total in zip(x, bottom, strict=True):
        ax.text(xi, total, f"{total:.2f} GiB", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, list(bars), fontsize=8)
    ax.set_ylabel("memory per device (GiB)")
    ax.legend(fontsize=8)
    ax.set_title(
        f"{profile.model}, {profile.dtype}, batch {profile.batch}, seq {profile.seq}",
        fontsize=9,
    )
    return _save(fig, Path(path))
