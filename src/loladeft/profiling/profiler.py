"""Measure ``d(l)`` and ``b(l)`` of a Hugging Face transformer fine-tuned with LoRA.

For every depth ``l = 1..L`` (``l = 1`` is the last block, nearest the output) the profiler
runs one training step that back-propagates only down to block ``l``'s LoRA matrices (the
on-device computation of the paper's Algorithm 1 and Fig. 2) and records

* ``flops``: forward + truncated backward, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention kernels; formulas
  for the CPU flash-attention kernels, which torch 2.13 does not count, are supplied here);
* ``activation_bytes``: the tensors autograd saves for the backward pass, captured with
  :func:`torch.autograd.graph.saved_tensors_hooks`, deduplicated by storage, parameters and
  buffers excluded;
* ``weight_bytes`` (the frozen model), ``block_param_bytes`` (the block's LoRA parameters and
  their gradients), ``optimizer_bytes`` (0: in DEFT the server keeps Adam's moments);
* ``host_seconds``: the median wall time of the step on this host, unless ``timing=False``;
* the analytic values of :mod:`loladeft.profiling.analytic` beside the measured ones.

*Truncated backward.* Every parameter is frozen except block ``l``'s LoRA matrices, so autograd
builds no graph below block ``l`` and ``loss.backward()`` stops there by construction; the
tests check that the gradient equals the one of a full backward pass and that no other
parameter receives one.

*Models.* Every model comes from the registry :mod:`loladeft.models` and is built by its one
PEFT builder (:func:`loladeft.models.build`), the function the training engine and the Flower
nodes use, so the profiled model is the trained one. ``"minilm"`` is the offline default; a
registry name with an architecture (``roberta-base``, ``llama-7b``, ``tiny-bert``...) is built
from its configuration alone (random weights when timed); any local Hugging Face folder or hub
id (online) works. Without timing, every model and the batch live on the ``meta`` device, so
a 7B model's FLOPs and activation bytes cost no memory for its weights or its batch; FLOPs
and saved bytes depend only on shapes, so meta and real tensors give the same counts.

torch, transformers and peft are imported when a function here is first called.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loladeft.exceptions import InputError
from loladeft.models import TORCH_DTYPES, ModelSpec
from loladeft.profiling import analytic
from loladeft.profiling.profile import DTYPE_BYTES, DepthCost, Profile

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "make_batch",
    "measure_depth",
    "profile_model",
]


# ---------------------------------------------------------------------------- FLOP formulas
def _cpu_flash_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for the CPU flash-attention kernels that torch 2.13 does not count.

    ``scaled_dot_product_attention`` on CPU dispatches (eval mode, or no dropout) to
    ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward, for which
    :mod:`torch.utils.flop_counter` has no entry, so their matmuls would count as zero. They
    do the same products as the CUDA flash kernel, so its formulas apply: ``4 b a s^2 d``
    forward, and backward the recomputed scores plus four products (``10 b a s^2 d``).
    """
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    table: dict[Any, Callable[..., int]] = {}
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)

    def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    def sdpa_cpu_backward(
        grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
    ) -> int:
        return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    if fwd is not None and fwd not in fc.flop_registry:
        table[fwd] = sdpa_cpu
    if bwd is not None and bwd not in fc.flop_registry:
        table[bwd] = sdpa_cpu_backward
    return table


def flop_counter() -> Any:
    """A silent :class:`~torch.utils.flop_counter.FlopCounterMode` with the CPU formulas."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=_cpu_flash_formulas())


# ---------------------------------------------------------------------------- saved tensors
class SavedTensorMeter:
    """Sum the bytes of tensors autograd saves, deduplicated by storage.

    Use as a context manager around the forward pass. Tensors that share a storage (views)
    count once, by the storage's size; parameters and buffers of ``exclude`` are skipped.
    The packed tensors are kept alive until :meth:`close`, so storage identities stay unique.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {self._key(t) for t in exclude}
        self._storages: dict[int, int] = {}
        self._alive: list[torch.Tensor] = []
        self._hooks: Any = None

    @staticmethod
    def _key(t: torch.Tensor) -> int:
        return t.untyped_storage()._cdata

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = self._key(t)
        if key not in self._excluded and key not in self._storages:
            self._storages[key] = t.untyped_storage().nbytes()
            self._alive.append(t)
        return t

    def __enter__(self) -> SavedTensorMeter:
        from torch.autograd.graph import saved_tensors_hooks

        self._hooks = saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        """Total bytes of the distinct saved storages."""
        return sum(self._storages.values())

    def close(self) -> None:
        """Release the references kept since packing."""
        self._alive.clear()


# ---------------------------------------------------------------------------- the batch
def make_batch(
    spec: ModelSpec, model: Any, batch: int, seq: int, *, meta: bool, seed: int = 0
) -> dict[str, Any]:
    """A random batch (token ids avoid the special ids 0-3; labels per task).

    With ``meta`` the batch has shapes only: nothing of size ``batch x seq`` is allocated.
    """
    import torch

    vocab = spec.config.vocab_size
    maxpos = getattr(spec.config, "max_position_embeddings", None) or getattr(
        spec.config, "n_positions", None
    )
    if maxpos is not None:
        limit = maxpos - (2 if spec.config.model_type in ("roberta", "xlm-roberta") else 0)
        if seq > limit:
            raise InputError(f"seq: {seq} exceeds the model's {limit} positions")
    if meta:
        ids = torch.empty((batch, seq), dtype=torch.long, device="meta")
        labels = ids if spec.causal else torch.empty((batch,), dtype=torch.long, device="meta")
        return {"input_ids": ids, "labels": labels}
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(4, vocab - 1), vocab, (batch, seq), generator=gen)
    if spec.causal:
        labels = ids
    else:
        labels = torch.randint(0, spec.config.num_labels, (batch,), generator=gen)
    return {"input_ids": ids, "labels": labels}


# ---------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class DepthMeasurement:
    """Raw measurement of one depth (see :func:`measure_depth`)."""

    flops: int
    activation_bytes: int
    seconds: list[float]
    peak_bytes: int | None


def _step(model: Any, batch: dict[str, Any]) -> Any:
    out = model(**batch)
    out.loss.backward()
    return out.loss


def measure_depth(
    model: Any,
    lora: list[list[Any]],
    depth: int | None,
    batch: dict[str, Any],
    *,
    repeats: int = 0,
) -> DepthMeasurement:
    """Count and (optionally) time one step that back-propagates down to block ``depth``.

    Only the LoRA parameters of block ``L - depth`` (input-side index) require a gradient, so
    autograd stops there. ``depth=None`` trains every block's LoRA (the single-device step).
    """
    import torch

    n = len(lora)
    params = [p for g in lora for p in g] if depth is None else lora[n - depth]
    for group in lora:
        for p in group:
            p.requires_grad_(False)
            p.grad = None
    for p in params:
        p.requires_grad_(True)
    meter = SavedTensorMeter([*model.parameters(), *model.buffers()])
    counter = flop_counter()
    with counter:
        with meter:
            out = model(**batch)
        out.loss.backward()
    saved = meter.bytes
    meter.close()
    del out
    seconds: list[float] = []
    peak = None
    if repeats > 0:
        cuda = params[0].is_cuda
        if cuda:  # on the CPU the counted pass above is the warm-up
            _zero(params)
            _step(model, batch)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            _zero(params)
            t0 = time.perf_counter()
            _step(model, batch)
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
        if cuda:
            peak = int(torch.cuda.max_memory_allocated())
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return DepthMeasurement(int(counter.get_total_flops()), int(saved), seconds, peak)


def _zero(params: Iterable[Any]) -> None:
    for p in params:
        p.grad = None


def shape_from_config(spec: ModelSpec) -> analytic.TransformerShape | None:
    """The analytic :class:`~loladeft.profiling.analytic.TransformerShape` of a config, if any."""
    c = spec.config
    try:
        if c.model_type in ("bert", "roberta"):
            return analytic.TransformerShape(
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size,
                c.vocab_size,
                num_labels=c.num_labels,
                head="roberta" if c.model_type == "roberta" else "bert",
                dropout=c.hidden_dropout_prob > 0 and c.attention_probs_dropout_prob > 0,
                max_positions=c.max_position_embeddings,
                type_vocab=c.type_vocab_size,
            )
        if c.model_type == "llama":
            return analytic.TransformerShape(
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size,
                c.vocab_size,
                kind="decoder",
                kv_heads=c.num_key_value_heads,
                head="lm",
                dropout=False,
                max_positions=c.max_position_embeddings,
                tied_embeddings=bool(c.tie_word_embeddings),
            )
    except (AttributeError, ValueError):
        return None
    return None


def profile_model(
    model: str = "minilm",
    *,
    lora_r: int = 8,
    lora_targets: Sequence[str] | None = None,
    lora_alpha: float | None = None,
    batch: int = 32,
    seq: int = 128,
    dtype: str = "fp32",
    timing: bool = True,
    repeats: int = 3,
    attn: str = "eager",
    train: bool = True,
    reference_device: str = "snapdragon-8-gen-3",
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Profile:
    """Measure a :class:`~loladeft.profiling.profile.Profile` (see the module docstring).

    Parameters
    ----------
    model
        ``"minilm"``, a name of :data:`loladeft.models.REGISTRY` (built from its
        architecture, without weights), a local Hugging Face folder or a hub id.
    lora_r, lora_targets, lora_alpha
        LoRA rank, the module names it is applied to in every block (``None``: the model
        family's default, :data:`loladeft.models.LORA_TARGETS`) and its scaling numerator
        (``None``: ``2 r``). LoRA dropout is 0, the setting the analytic formulas model.
    batch, seq
        Batch size and sequence length of one step (> 0).
    dtype
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (weights and activations; LoRA stays fp32).
    timing
        Run real steps and record the median wall time (needs real weights: a
        configuration-only model gets random ones). Without it, counts run on ``meta``.
    repeats
        Timed steps per depth (after the counted step, which serves as the warm-up).
    attn
        ``"eager"`` (default, the attention the analytic formulas model) or ``"sdpa"``.
    train
        Train mode (dropout on, default) or eval mode.
    reference_device
        Name in :data:`loladeft.system.reference.REFERENCE_DEVICES` for ``reference_seconds``.
    device
        ``"cpu"`` or ``"cuda"`` for the timed steps.
    progress
        Called as ``progress(done, total)`` after each depth.

    Raises
    ------
    InputError
        Unknown model, or a LoRA target not in the model.
    InputError
        ``batch``/``seq``/``lora_r`` <= 0, or a dtype this host cannot run.
    """
    _validate(
        lora_r=lora_r, batch=batch, seq=seq, dtype=dtype, attn=attn, repeats=repeats, device=device
    )
    import torch

    from loladeft.system.reference import get_reference, seconds_for_flops

    try:
        ref = get_reference(reference_device)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None
    from loladeft import models
    from loladeft.config import LoraSettings

    spec = models.resolve(model, weights=False)
    targets = spec.default_targets if lora_targets is None else tuple(lora_targets)
    if not targets or not all(targets):
        raise models.InputError("lora.targets: give at least one module name")
    lora_settings = LoraSettings(
        r=lora_r, alpha=lora_alpha or 2.0 * lora_r, dropout=0.0, targets=targets
    )
    meta = not timing
    if timing:
        _check_dtype_runs(dtype, device)
        _check_fits(spec, dtype)
    t0 = time.perf_counter()
    net = models.build(spec, lora_settings, seed=seed, dtype=dtype, meta=meta, attn=attn)
    for p in net.parameters():
        p.requires_grad_(False)
    lora = models.lora_blocks(net)
    if timing and device != "cpu":
        net.to(device)
    net.train(train)
    data = make_batch(spec, net, batch, seq, meta=meta, seed=seed)
    if timing and device != "cpu":
        data = {k: v.to(device) for k, v in data.items()}
    n_blocks = len(lora)
    n_lora = sum(p.numel() for p in lora[0])
    lora_bytes = sum(p.numel() * p.element_size() for p in lora[0])
    lora_bits = 8 * lora_bytes // max(n_lora, 1)
    all_lora = {id(p) for g in lora for p in g}
    # PEFT keeps the pretrained head beside its trained copy; a device holds one of them
    weight_bytes = sum(
        p.numel() * p.element_size()
        for n, p in net.named_parameters()
        if id(p) not in all_lora and ".original_module." not in n
    )
    shape = shape_from_config(spec)
    # CUDA's fused dropout keeps a 1-byte mask; CPU and meta keep a noise tensor of the dtype
    mask_bytes = 1 if (timing and device == "cuda") else None
    ana_flops: list[int] | None = None
    ana_bytes: list[int] | None = None
    if shape is not None:
        try:
            st = shape if train else _no_dropout(shape)
            ana_flops = analytic.depth_flops(st, batch, seq, lora_r, targets)
            ana_bytes = analytic.depth_activation_bytes(
                st, batch, seq, lora_r, targets, DTYPE_BYTES[dtype], mask_bytes=mask_bytes
            )
        except analytic.UnknownTargetError:
            ana_flops = ana_bytes = None
    depths: list[DepthCost] = []
    for depth in range(1, n_blocks + 1):
        m = _guarded(
            spec, meta, measure_depth, net, lora, depth, data, repeats=repeats if timing else 0
        )
        depths.append(
            DepthCost(
                depth=depth,
                flops=float(m.flops),
                activation_bytes=float(m.activation_bytes),
                weight_bytes=float(weight_bytes),
                block_param_bytes=float(2 * lora_bytes),
                host_seconds=statistics.median(m.seconds) if m.seconds else None,
                optimizer_bytes=0.0,
                peak_bytes=None if m.peak_bytes is None else float(m.peak_bytes),
                analytic_flops=None if ana_flops is None else float(ana_flops[depth - 1]),
                analytic_activation_bytes=None
                if ana_bytes is None
                else float(ana_bytes[depth - 1]),
                reference_seconds=float(seconds_for_flops(m.flops, ref)),
            )
        )
        if progress is not None:
            progress(depth, n_blocks)
    full = _guarded(
        spec, meta, measure_depth, net, lora, None, data, repeats=repeats if timing else 0
    )
    elapsed = time.perf_counter() - t0
    single = single_device_memory(
        weight_bytes=weight_bytes,
        activation_bytes=full.activation_bytes,
        lora_bytes=n_blocks * lora_bytes,
    )
    single["flops"] = full.flops
    single["host_seconds"] = statistics.median(full.seconds) if full.seconds else None
    if ana_flops is not None and shape is not None:
        ana_full = analytic.full_step(
            st,
            batch=batch,
            seq=seq,
            lora_r=lora_r,
            lora_targets=targets,
            dtype=dtype,
            mask_bytes=mask_bytes,
        )
        single["analytic_flops"] = ana_full["flops"]
        single["analytic_activation_bytes"] = ana_full["activation_bytes"]
    import platform

    import peft
    import transformers

    return Profile(
        model=spec.name,
        dtype=dtype,
        batch=batch,
        seq=seq,
        lora_r=lora_r,
        lora_targets=targets,
        block_bits=int(n_lora * lora_bits),
        depths=tuple(depths),
        source="measured",
        note=(
            f"Measured by loladeft profile ({'train' if train else 'eval'} mode, {attn} "
            f"attention, {'timed on ' + device if timing else 'counted on the meta device'})"
            "; flops from torch FlopCounterMode, activation_bytes from saved_tensors_hooks "
            "(deduplicated by storage, parameters and buffers excluded)."
        ),
        meta={
            "model_type": spec.config.model_type,
            "weights": "pretrained"
            if spec.path and timing
            else ("random init" if timing else "none (meta device)"),
            "task_head": "causal LM"
            if spec.causal
            else f"sequence classification ({spec.config.num_labels} labels)",
            "lora_params_per_block": int(n_lora),
            "lora_alpha": lora_settings.alpha,
            "attn_implementation": attn,
            "train_mode": train,
            "timed": timing,
            "repeats": repeats if timing else 0,
            "device": device if timing else "meta",
            "reference_device": ref.name,
            "reference_flops_per_second": ref.flops_per_second,
            "host": platform.processor() or platform.machine(),
            "host_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "single_device": single,
            "profile_seconds": round(elapsed, 3),
            "seed": seed,
        },
    )


def _guarded(spec: ModelSpec, meta: bool, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run ``fn``; turn a failure of the model's own forward/backward code into one line."""
    try:
        return fn(*args, **kw)
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
        where = "on the meta device (try without --no-timing)" if meta else "on this host"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"model: {spec.name} could not run a step {where}: {first[:200]}"
        ) from None


def single_device_memory(
    *, weight_bytes: float, activation_bytes: float, lora_bytes: float
) -> dict[str, Any]:
    """Memory of one device fine-tuning alone (the left bar of the paper's Fig. 4(b)).

    Weights, every activation of the full backward pass, every LoRA parameter and its
    gradient, and Adam's two moments per LoRA parameter (the "statistics of gradients").
    """
    return {
        "weight_bytes": float(weight_bytes),
        "activation_bytes": float(activation_bytes),
        "lora_param_bytes": float(lora_bytes),
        "lora_grad_bytes": float(lora_bytes),
        "optimizer_bytes": float(2 * lora_bytes),
        "memory_bytes": float(weight_bytes + activation_bytes + 4 * lora_bytes),
    }


def _no_dropout(shape: analytic.TransformerShape) -> analytic.TransformerShape:
    from dataclasses import replace

    return replace(shape, dropout=False)


def _validate(**kw: Any) -> None:
    for key in ("lora_r", "batch", "seq", "repeats"):
        value = kw[key]
        low = 0 if key == "repeats" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{key}: must be an integer >= {low}, got {value!r}")
    if kw["dtype"] not in DTYPE_BYTES:
        raise InputError(f"dtype: must be one of {', '.join(DTYPE_BYTES)}, got {kw['dtype']!r}")
    if kw["attn"] not in ("eager", "sdpa"):
        raise InputError(f"attn: must be 'eager' or 'sdpa', got {kw['attn']!r}")
    if kw["device"] not in ("cpu", "cuda"):
        raise InputError(f"device: must be 'cpu' or 'cuda', got {kw['device']!r}")


def _check_dtype_runs(dtype: str, device: str) -> None:
    """Raise unless a matmul and its backward run in ``dtype`` on ``device``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda requested but torch sees no GPU")
    torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
    try:
        a = torch.ones(4, 4, dtype=torch_dtype, device=device, requires_grad=True)
        (a @ a).softmax(-1).sum().backward()
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"dtype: {dtype} is not supported on this host's {device} ({exc}); use --no-timing "
            "to count without running"
        ) from None


def _check_fits(spec: ModelSpec, dtype: str) -> None:
    """Refuse to time a model whose weights would not fit in half this host's memory."""
    import os

    c = spec.config
    h = getattr(c, "hidden_size", None) or getattr(c, "n_embd", 0)
    n_layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", 0)
    inter = getattr(c, "intermediate_size", None) or 4 * h
    approx = n_layers * (4 * h * h + 3 * h * inter) + getattr(c, "vocab_size", 0) * h
    need = approx * DTYPE_BYTES[dtype]
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return
    if need > total / 2:
        raise InputError(
            f"model: {spec.name} needs about {need / 2**30:.1f} GiB of weights, more than half "
            f"this host's {total / 2**30:.1f} GiB; use --no-timing to count on the meta device"
        )
