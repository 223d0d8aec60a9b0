r"""Closed-form FLOPs and saved-activation bytes of a truncated LoRA fine-tuning step.

For a transformer of ``L`` identical blocks with LoRA adapters, the on-device step of the
paper (Algorithm 1, Fig. 2) runs the whole forward pass and back-propagates only down to
block ``l``'s LoRA parameters (depth ``l = 1`` is the last block, nearest the output). Only
that block's LoRA matrices require a gradient, so autograd

* runs the *input* gradient of every frozen matmul in the ``l - 1`` blocks above block ``l``
  and in the task head (a frozen matmul ``Y = X W`` costs ``2 m n k`` FLOPs forward and the
  same again for ``dX = dY W^T``; its ``dW`` is never formed),
* runs in block ``l`` only the part of the backward pass between the block's output and its
  LoRA matrices (``dB``, ``dA`` and the gradient that flows from ``B`` into ``A``),
* saves, in the forward pass, only the tensors those gradients need.

**FLOPs.** Counted as matrix multiplications only, ``2 m n k`` per ``(m x k) @ (k x n)``
product (the convention of Kaplan et al. 2020, Sec. 2.1, and of PaLM, Chowdhery et al. 2022,
App. B, whose ``6 N D`` training estimate it reduces to when every weight is trained), which is
exactly what :class:`torch.utils.flop_counter.FlopCounterMode` counts: element-wise work
(softmax, GELU, layer norm, dropout) is left out. For one block with hidden size ``H``,
intermediate size ``I``, key/value width ``H_kv``, ``T = b s`` tokens and LoRA rank ``r`` on
target projections ``(d_in, d_out)``:

.. math::

    F_\text{fwd} = 2T\,(2H^2 + 2 H H_\text{kv} + g H I) + 4 T s H
                   + \sum_\text{targets} 2 T r (d_\text{in} + d_\text{out}),
    \qquad g = 2 \text{ (GELU MLP) or } 3 \text{ (gated MLP)}

and a block above block ``l`` costs ``F_fwd + 4 T s H`` backward (every frozen matmul once for
its input, both operands of the two attention products). The step down to depth ``l`` costs

.. math::

    d(l) = L F_\text{fwd} + F_\text{head} + (l - 1)(F_\text{fwd} + 4TsH)
           + F_\text{head}^\text{bwd} + F_\text{part},

with :math:`F_\text{part}` the partial backward pass of block ``l`` (computed term by term
by :func:`block_backward_flops`). Its slope in ``l`` is about one block's forward pass, so
``d(L)/d(1)`` is a little under 2, the "nearly twice" of the paper's Fig. 4(a).

**Saved activations.** The per-layer term follows the inventory of Korthikanti et al. 2022
(Sec. 4.1, ``s b h (34 + 5 a s / h)`` bytes per layer in fp16), redone for frozen weights:
with ``W`` frozen, a linear layer keeps nothing of its input, so the terms Korthikanti et al.
count for the inputs of the Q/K/V, output and MLP projections disappear, while those of the
non-linear operations stay. For an encoder block (BERT/RoBERTa, post-LN, eager attention,
dropout on, ``p`` bytes per element, ``m`` bytes per dropout-mask element, fp32 layer-norm
statistics) whose input requires a gradient:

.. math::

    A_\text{block} = p\,T(5H + I) + 2 m T H + a b s^2 (2p + m) + 2 \cdot 8 T
                     \quad\text{bytes}

(the copies of Q, K and V kept by the two batched attention products, the two residual-dropout
masks, the softmax output, its dropout mask and the dropped probabilities, the two layer-norm
inputs with their mean and reciprocal standard deviation, and the GELU input). Korthikanti et
al. assume 1-byte masks (``m = 1``, CUDA's fused dropout); PyTorch's CPU dropout keeps a scaled
noise tensor of the input's type (``m = p``), the default here. Block ``l`` itself keeps the same
minus what its frozen input does not need (with LoRA on query and value: the copy of Q), plus
the input ``x`` of its LoRA ``A`` matrices (shared by the targets that read it) and each
``A``'s output (``p T r`` per target). Nothing is kept below block ``l``, so memory grows
linearly in depth, as in the paper's Fig. 4(a):

.. math::

    b_\text{act}(l) = A_\text{head} + (l - 1) A_\text{block} + A_\text{part}.

These counts model PyTorch's autograd with eager attention (``attn_implementation="eager"``)
exactly (torch 2.13, transformers 5.x, peft 0.21), which the tests check against
:func:`torch.autograd.graph.saved_tensors_hooks`; fused attention kernels (SDPA/flash) keep
less. With a half-precision model, peft's fp32 adapters cast their input to fp32 once per
target, so each target keeps its own ``4 T d_in`` copy and a ``4 T r`` output. The decoder
variant (Llama: pre-norm RMSNorm, rotary embeddings, gated SiLU MLP, causal LM head) is counted
term by term in :func:`_decoder_block_bytes`, with the rotary tables once per step.

References
----------
.. [1] V. Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
   Models", arXiv:2205.05198, 2022.
.. [2] J. Kaplan et al., "Scaling Laws for Neural Language Models", arXiv:2001.08361, 2020.
.. [3] A. Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways",
   arXiv:2204.02311, 2022, App. B (model FLOPs utilisation).
.. [4] E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.

This module needs only the standard library; it never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from loladeft.exceptions import LoladeftError
from loladeft.profiling.profile import DTYPE_BYTES, DepthCost, Profile

#: Canonical projection names of one block, and the Hugging Face module names mapped to them.
PROJECTIONS = ("query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out")
ALIASES = {
    "query": "query",
    "q_proj": "query",
    "q": "query",
    "key": "key",
    "k_proj": "key",
    "k": "key",
    "value": "value",
    "v_proj": "value",
    "v": "value",
    "attn_out": "attn_out",
    "o_proj": "attn_out",
    "attention.output.dense": "attn_out",
    "out_proj": "attn_out",
    "ffn_gate": "ffn_gate",
    "gate_proj": "ffn_gate",
    "ffn_in": "ffn_in",
    "up_proj": "ffn_in",
    "intermediate.dense": "ffn_in",
    "ffn_out": "ffn_out",
    "down_proj": "ffn_out",
    "output.dense": "ffn_out",
}
_STAT_BYTES = 4  # layer-norm mean / rstd are kept in float32


class UnknownTargetError(LoladeftError, ValueError):
    """A LoRA target name the analytic model does not know."""


@dataclass(frozen=True)
class TransformerShape:
    """Shape of a BERT/RoBERTa-style encoder or a Llama-style decoder.

    Parameters
    ----------
    hidden, layers, heads, intermediate, vocab
        ``H``, ``L``, attention heads ``a``, MLP width ``I``, vocabulary size ``V``.
    kind
        ``"encoder"`` (post-LN, GELU MLP, classification head on the first token) or
        ``"decoder"`` (pre-norm RMSNorm, gated SiLU MLP, LM head on every token).
    kv_heads
        Key/value heads (grouped-query attention); ``None`` means ``heads``.
    num_labels
        Classes of the encoder's classification head.
    head
        ``"roberta"`` (dropout, dense, tanh, dropout, out_proj), ``"bert"`` (pooler dense,
        tanh, dropout, classifier) or ``"lm"`` (decoder).
    dropout
        Whether dropout is active (train mode with non-zero probabilities).
    max_positions, type_vocab
        Embedding table sizes (for the weight count).
    tied_embeddings
        Whether the LM head shares the input embedding matrix.
    """

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    kind: str = "encoder"
    kv_heads: int | None = None
    num_labels: int = 2
    head: str = "roberta"
    dropout: bool = True
    max_positions: int = 514
    type_vocab: int = 1
    tied_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "intermediate", "vocab", "num_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if self.kind not in ("encoder", "decoder"):
            raise ValueError(f"kind: must be 'encoder' or 'decoder', got {self.kind!r}")
        if self.head not in ("roberta", "bert", "lm"):
            raise ValueError(f"head: must be 'roberta', 'bert' or 'lm', got {self.head!r}")
        if self.hidden % self.heads:
            raise ValueError(f"heads: {self.heads} does not divide hidden {self.hidden}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``H / a``."""
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        """Key/value projection width ``H_kv``."""
        return (self.kv_heads or self.heads) * self.head_dim

    def projection(self, name: str) -> tuple[int, int]:
        """``(d_in, d_out)`` of a canonical projection."""
        h, i, kv = self.hidden, self.intermediate, self.kv_hidden
        dims = {
            "query": (h, h),
            "key": (h, kv),
            "value": (h, kv),
            "attn_out": (h, h),
            "ffn_gate": (h, i),
            "ffn_in": (h, i),
            "ffn_out": (i, h),
        }
        if name == "ffn_gate" and self.kind != "decoder":
            raise UnknownTargetError("lora_targets: an encoder MLP has no gate projection")
        return dims[name]

    @property
    def block_params(self) -> int:
        """Frozen parameters of one block (weights, biases, norms)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_hidden
        if self.kind == "encoder":
            return (h * h + h) * 2 + (h * kv + kv) * 2 + (h * i + i) + (i * h + h) + 4 * h
        return 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h

    @property
    def num_params(self) -> int:
        """Frozen parameters of the whole model with its task head."""
        h = self.hidden
        n = self.layers * self.block_params + self.vocab * h
        if self.kind == "encoder":
            n += self.max_positions * h + self.type_vocab * h + 2 * h  # embeddings + LN
            n += h * h + h + h * self.num_labels + self.num_labels  # head
        else:
            n += h  # final norm
            if not self.tied_embeddings:
                n += h * self.vocab
        return n


#: Shapes of the architectures ``loladeft profile`` knows by name (Hugging Face defaults).
SHAPES: dict[str, TransformerShape] = {
    "roberta-base": TransformerShape(768, 12, 12, 3072, 50265, head="roberta", type_vocab=1),
    "roberta-large": TransformerShape(1024, 24, 16, 4096, 50265, head="roberta", type_vocab=1),
    "bert-base": TransformerShape(
        768, 12, 12, 3072, 30522, head="bert", max_positions=512, type_vocab=2
    ),
    "minilm": TransformerShape(
        384, 6, 12, 1536, 30522, head="bert", max_positions=512, type_vocab=2
    ),
    "llama-7b": TransformerShape(
        4096, 32, 32, 11008, 32000, kind="decoder", head="lm", max_positions=4096
    ),
}


def canonical_targets(targets: Iterable[str]) -> tuple[str, ...]:
    """Map Hugging Face module names (``q_proj``, ``query``...) to canonical projections."""
    out: list[str] = []
    for t in targets:
        try:
            name = ALIASES[t]
        except KeyError:
            known = ", ".join(sorted(ALIASES))
            raise UnknownTargetError(
                f"lora_targets: unknown target {t!r}; use one of {known}"
            ) from None
        if name not in out:
            out.append(name)
    if not out:
        raise UnknownTargetError("lora_targets: at least one target is needed")
    return tuple(out)


@dataclass(frozen=True)
class _Step:
    """Shapes of one step: tokens ``T``, batch ``b``, sequence ``s``, rank ``r``, bytes ``p``."""

    shape: TransformerShape
    batch: int
    seq: int
    r: int
    p: int
    targets: tuple[str, ...] = field(default=())
    mask_bytes: int | None = None
    lora_bytes: int = 4

    @property
    def m(self) -> int:
        """Bytes per dropout-mask element (``p`` for CPU's composite dropout, 1 for CUDA's)."""
        return self.p if self.mask_bytes is None else self.mask_bytes

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def _lora_forward(st: _Step) -> int:
    return sum(2 * st.tokens * st.r * sum(st.shape.projection(t)) for t in st.targets)


def block_forward_flops(
    shape: TransformerShape, batch: int, seq: int, r: int, targets: Iterable[str]
) -> int:
    """Matmul FLOPs of one block's forward pass, LoRA branches included (``F_fwd``)."""
    st = _Step(shape, batch, seq, r, 4, canonical_targets(targets))
    t, h, i, kv = st.tokens, shape.hidden, shape.intermediate, shape.kv_hidden
    g = 3 if shape.kind == "decoder" else 2
    linear = 2 * t * (2 * h * h + 2 * h * kv + g * h * i)
    attention = 4 * t * seq * h
    return linear + attention + _lora_forward(st)


def _head_forward(st: _Step) -> int:
    h = st.shape.hidden
    if st.shape.head == "lm":
        return 2 * st.tokens * h * st.shape.vocab
    return 2 * st.batch * h * h + 2 * st.batch * h * st.shape.num_labels


def block_backward_flops(
    shape: TransformerShape,
    batch: int,
    seq: int,
    r: int,
    targets: Iterable[str],
    *,
    input_grad: bool,
    trainable: bool,
) -> int:
    """Matmul FLOPs of one block's backward pass.

    Parameters
    ----------
    input_grad
        Whether the block's input needs a gradient (blocks above block ``l``: True; block
        ``l`` itself: False, autograd stops there).
    trainable
        Whether this block's LoRA matrices need their gradient (block ``l``: True).
    """
    st = _Step(shape, batch, seq, r, 4, canonical_targets(targets))
    t, h = st.tokens, shape.hidden
    rg = _requires_grad(shape, st.targets if trainable else (), input_grad)
    flops = 0
    for name in PROJECTIONS:
        if name == "ffn_gate" and shape.kind != "decoder":
            continue
        d_in, d_out = shape.projection(name)
        inp = rg["in:" + name]
        if rg[name] and inp:  # frozen base weight: dX = dY W^T
            flops += 2 * t * d_in * d_out
        if name in st.targets and rg[name]:
            if trainable:  # dB, dA, and the gradient flowing from B into A
                flops += 2 * t * r * d_out * 2 + 2 * t * d_in * r
            elif inp:
                flops += 2 * t * r * d_out
            if inp:
                flops += 2 * t * d_in * r
    per_product = 2 * t * seq * h
    flops += per_product * (rg["query"] + rg["key"])  # scores = Q K^T
    flops += per_product * (rg["probs"] + rg["value"])  # context = P V
    return flops


def _requires_grad(shape: TransformerShape, trainable: tuple[str, ...], x: bool) -> dict[str, bool]:
    """Which intermediate tensors of a block require grad (the tensor *after* each op)."""
    rg: dict[str, bool] = {}
    for name in ("query", "key", "value"):
        rg["in:" + name] = x
        rg[name] = x or name in trainable
    rg["probs"] = rg["query"] or rg["key"]
    rg["ctx"] = rg["probs"] or rg["value"]
    rg["in:attn_out"] = rg["ctx"]
    rg["attn_out"] = rg["ctx"] or "attn_out" in trainable
    rg["h1"] = rg["attn_out"] or x  # residual stream after attention
    for name in ("ffn_gate", "ffn_in"):
        rg["in:" + name] = rg["h1"]
        rg[name] = rg["h1"] or name in trainable
    rg["act"] = rg["ffn_in"] or (shape.kind == "decoder" and rg["ffn_gate"])
    rg["in:ffn_out"] = rg["act"]
    rg["ffn_out"] = rg["act"] or "ffn_out" in trainable
    rg["out"] = rg["ffn_out"] or rg["h1"]
    return rg


def block_activation_bytes(
    shape: TransformerShape,
    batch: int,
    seq: int,
    r: int,
    targets: Iterable[str],
    dtype_bytes: int,
    *,
    input_grad: bool,
    trainable: bool,
    mask_bytes: int | None = None,
) -> int:
    """Bytes autograd keeps for one block's backward pass (see the module docstring).

    Counts, for eager attention: the LoRA inputs (shared by all targets that read the same
    tensor) and ``A`` outputs of trainable adapters; the copies of Q/K and V kept by the two
    attention products; the softmax output, dropout mask and dropped probabilities; the
    residual-dropout masks; the norm inputs and statistics; the MLP activation's input(s).
    """
    st = _Step(shape, batch, seq, r, dtype_bytes, canonical_targets(targets), mask_bytes)
    t, h, i, p, s, a = st.tokens, shape.hidden, shape.intermediate, dtype_bytes, seq, shape.heads
    train = st.targets if trainable else ()
    rg = _requires_grad(shape, train, input_grad)
    drop = shape.dropout
    total = 0
    # LoRA: A keeps its input (deduplicated: q/k/v read the same tensor), B keeps A's output.
    lora_inputs = {
        "query": "x",
        "key": "x",
        "value": "x",
        "attn_out": "ctx",
        "ffn_gate": "h1",
        "ffn_in": "h1",
        "ffn_out": "act",
    }
    width = {"x": h, "ctx": h, "h1": h, "act": i}
    # fp32 adapters on a half-precision model (peft's default) cast their input to fp32 per
    # target: one fp32 copy each, nothing shared
    q = st.lora_bytes
    seen: set[str] = set()
    for name in train:
        src = lora_inputs[name]
        if src not in seen or q != p:
            seen.add(src)
            total += q * t * width[src]
        total += q * t * r
    if shape.kind == "decoder":
        return total + _decoder_block_bytes(st, rg)
    # attention products (bmm keeps copies of its operands)
    total += p * t * h * (rg["query"] + rg["key"])  # K for dQ, Q for dK
    if rg["probs"]:
        total += p * a * batch * s * s  # softmax output
        if drop:
            total += st.m * a * batch * s * s  # dropout mask
    total += p * t * h * rg["probs"]  # V for dP
    if rg["value"] and (drop or not rg["probs"]):
        total += p * a * batch * s * s  # dropped probabilities for dV (else the softmax output)
    # attention output: residual dropout mask, LayerNorm input + statistics
    if rg["attn_out"]:
        total += st.m * t * h * drop  # residual-dropout mask
    if rg["h1"]:
        total += p * t * h + 2 * _STAT_BYTES * t
    if rg["ffn_in"]:
        total += p * t * i  # GELU input
    if rg["ffn_out"]:
        total += st.m * t * h * drop  # residual-dropout mask
    if rg["out"]:
        total += p * t * h + 2 * _STAT_BYTES * t
    return total


def _decoder_block_bytes(st: _Step, rg: dict[str, bool]) -> int:
    """Saved bytes of a Llama-style block (Hugging Face ``LlamaDecoderLayer``, eager attention).

    RMSNorm keeps its float32 input and reciprocal root mean square (``4 T H + 4 T``); the
    attention products keep copies of the rotated Q/K and of V (``p T H`` each); softmax runs in
    float32 and keeps its output (``4 a b s^2``), and ``P V`` keeps the probabilities cast back to
    the model's type (the same tensor in fp32); the gated MLP keeps the SiLU input, the SiLU
    output and the up projection (``p T I`` each). The rotary tables are counted once per step
    by :func:`depth_activation_bytes`. Exact for fp32; bf16/fp16 are modelled the same way.
    """
    t, h, i, p, s, a = (
        st.tokens,
        st.shape.hidden,
        st.shape.intermediate,
        st.p,
        st.seq,
        st.shape.heads,
    )
    b = st.batch
    total = 0
    if rg["in:query"]:
        total += 4 * t * h + 4 * t  # input RMSNorm: fp32 input and rsqrt
    total += p * t * h * (rg["query"] + rg["key"])  # rotated K for dQ, Q for dK
    if rg["probs"]:
        total += 4 * a * b * s * s  # softmax output, kept in fp32
    total += p * t * h * rg["probs"]  # V for dP
    if rg["value"] and (p != 4 or not rg["probs"]):
        total += p * a * b * s * s  # probabilities in the model's type, for dV
    if rg["h1"]:
        total += 4 * t * h + 4 * t  # post-attention RMSNorm
    if rg["ffn_gate"]:
        total += p * t * i  # SiLU input
        total += p * t * i  # up projection, for d(SiLU output)
    if rg["ffn_in"]:
        total += p * t * i  # SiLU output, for d(up)
    return total


def _rotary_bytes(st: _Step) -> int:
    """The cos and sin tables (``s x d_head`` each), shared by every block of a decoder."""
    return 2 * st.seq * st.shape.head_dim * st.p if st.shape.kind == "decoder" else 0


def _head_activation_bytes(st: _Step) -> int:
    shape, b, p = st.shape, st.batch, st.p
    h = shape.hidden
    if shape.head == "lm":
        # final RMSNorm; fp32 log-softmax output of the loss; int64 labels; total_weight
        return 4 * st.tokens * (h + 1) + 4 * st.tokens * shape.vocab + 8 * st.tokens + 4
    masks = (2 if shape.head == "roberta" else 1) * st.m * b * h * shape.dropout
    # tanh output, log-softmax output, int64 labels, nll's total_weight scalar
    return masks + p * b * h + p * b * shape.num_labels + 8 * b + p


def lora_params_per_block(shape: TransformerShape, r: int, targets: Iterable[str]) -> int:
    """LoRA parameters of one block: ``r (d_in + d_out)`` per target (Hu et al. 2022)."""
    return sum(r * sum(shape.projection(t)) for t in canonical_targets(targets))


def depth_flops(
    shape: TransformerShape, batch: int, seq: int, r: int, targets: Iterable[str]
) -> list[int]:
    """``d(l)`` in FLOPs for ``l = 1..L`` (forward + backward truncated at block ``l``)."""
    targets = canonical_targets(targets)
    st = _Step(shape, batch, seq, r, 4, targets)
    fwd = shape.layers * block_forward_flops(shape, batch, seq, r, targets) + _head_forward(st)
    head_bwd = _head_forward(st)  # input gradient of every frozen head matmul
    upper = block_backward_flops(shape, batch, seq, r, targets, input_grad=True, trainable=False)
    part = block_backward_flops(shape, batch, seq, r, targets, input_grad=False, trainable=True)
    return [fwd + head_bwd + (depth - 1) * upper + part for depth in range(1, shape.layers + 1)]


def depth_activation_bytes(
    shape: TransformerShape,
    batch: int,
    seq: int,
    r: int,
    targets: Iterable[str],
    dtype_bytes: int,
    *,
    mask_bytes: int | None = None,
) -> list[int]:
    """Saved-activation bytes for ``l = 1..L``.

    ``mask_bytes`` is the size of one dropout-mask element: ``None`` means ``dtype_bytes``,
    what CPU (and meta) dropout keeps (a scaled noise tensor of the input's type); CUDA's
    fused dropout keeps a 1-byte boolean mask.
    """
    targets = canonical_targets(targets)
    st = _Step(shape, batch, seq, r, dtype_bytes, targets, mask_bytes)
    head = _head_activation_bytes(st)
    upper = block_activation_bytes(
        shape,
        batch,
        seq,
        r,
        targets,
        dtype_bytes,
        input_grad=True,
        trainable=False,
        mask_bytes=mask_bytes,
    )
    part = block_activation_bytes(
        shape,
        batch,
        seq,
        r,
        targets,
        dtype_bytes,
        input_grad=False,
        trainable=True,
        mask_bytes=mask_bytes,
    )
    rot = _rotary_bytes(st)
    part_rot = _requires_grad(shape, targets, False)
    rot_first = rot if (part_rot["query"] or part_rot["key"]) else 0
    return [
        head + (depth - 1) * upper + part + (rot if depth > 1 else rot_first)
        for depth in range(1, shape.layers + 1)
    ]


def analytic_profile(
    shape: TransformerShape | str,
    *,
    batch: int = 32,
    seq: int = 128,
    lora_r: int = 8,
    lora_targets: Iterable[str] = ("query", "value"),
    dtype: str = "fp32",
    lora_bits: int = 32,
    model: str | None = None,
) -> Profile:
    """A :class:`~loladeft.profiling.profile.Profile` from the closed-form formulas.

    Parameters
    ----------
    shape
        A :class:`TransformerShape` or a name from :data:`SHAPES`.
    batch, seq, lora_r, lora_targets, dtype
        The step: batch size, sequence length, LoRA rank and targets, weight/activation type.
    lora_bits
        Bits per LoRA parameter (fp32 adapters: 32), for ``block_bits`` and param bytes.
    model
        Name recorded in the profile (default: the shape's name).

    Examples
    --------
    >>> p = analytic_profile("roberta-base")
    >>> p.block_bits == 24576 * 32, round(float(p.flops[-1] / p.flops[0]), 2)
    (True, 1.88)
    """
    name = shape if isinstance(shape, str) else (model or "custom")
    if isinstance(shape, str):
        try:
            shape = SHAPES[shape]
        except KeyError:
            raise UnknownTargetError(
                f"model: no analytic shape named {shape!r}; known: {', '.join(SHAPES)}"
            ) from None
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    for key, value in (("batch", batch), ("seq", seq), ("lora_r", lora_r)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key}: must be a positive integer, got {value!r}")
    targets = tuple(lora_targets)
    canon = canonical_targets(targets)
    p = DTYPE_BYTES[dtype]
    flops = depth_flops(shape, batch, seq, lora_r, canon)
    acts = depth_activation_bytes(shape, batch, seq, lora_r, canon, p)
    n_lora = lora_params_per_block(shape, lora_r, canon)
    weight = shape.num_params * p
    block_param = 2 * n_lora * lora_bits // 8  # parameters + gradients
    depths = tuple(
        DepthCost(
            depth=i + 1,
            flops=float(f),
            activation_bytes=float(b),
            weight_bytes=float(weight),
            block_param_bytes=float(block_param),
            analytic_flops=float(f),
            analytic_activation_bytes=float(b),
        )
        for i, (f, b) in enumerate(zip(flops, acts, strict=True))
    )
    full = full_step(shape, batch=batch, seq=seq, lora_r=lora_r, lora_targets=canon, dtype=dtype)
    all_lora = shape.layers * n_lora * lora_bits // 8
    single = {
        "flops": full["flops"],
        "weight_bytes": weight,
        "activation_bytes": full["activation_bytes"],
        "lora_param_bytes": all_lora,
        "lora_grad_bytes": all_lora,
        "optimizer_bytes": 2 * all_lora,
        "memory_bytes": weight + full["activation_bytes"] + 4 * all_lora,
    }
    return Profile(
        model=model or name,
        dtype=dtype,
        batch=batch,
        seq=seq,
        lora_r=lora_r,
        lora_targets=targets,
        block_bits=n_lora * lora_bits,
        depths=depths,
        source="analytic",
        note=(
            "Closed-form matmul FLOPs and eager-attention saved-activation bytes of "
            "loladeft.profiling.analytic (train mode, dropout on, frozen weights, LoRA only "
            "in the profiled block); not measured."
        ),
        meta={
            "shape": {k: getattr(shape, k) for k in shape.__dataclass_fields__},
            "lora_bits": lora_bits,
            "attn_implementation": "eager",
            "train_mode": True,
            "single_device": single,
        },
    )


def full_step(
    shape: TransformerShape | str,
    *,
    batch: int = 32,
    seq: int = 128,
    lora_r: int = 8,
    lora_targets: Iterable[str] = ("query", "value"),
    dtype: str = "fp32",
    mask_bytes: int | None = None,
) -> dict[str, int]:
    """FLOPs and saved bytes of one *single-device* step that trains every block's LoRA.

    The reference point of the paper's Fig. 4(b): the backward pass runs down to block ``L``
    and every block's adapters get their gradient, so each block above the first also keeps
    its LoRA inputs and ``A`` outputs.

    Returns
    -------
    dict
        ``flops`` and ``activation_bytes``.
    """
    if isinstance(shape, str):
        shape = SHAPES[shape]
    targets = canonical_targets(lora_targets)
    p = DTYPE_BYTES[dtype]
    st = _Step(shape, batch, seq, lora_r, p, targets, mask_bytes)
    n = shape.layers
    fwd = n * block_forward_flops(shape, batch, seq, lora_r, targets) + _head_forward(st)
    bwd = (
        _head_forward(st)
        + (n - 1)
        * block_backward_flops(shape, batch, seq, lora_r, targets, input_grad=True, trainable=True)
        + block_backward_flops(shape, batch, seq, lora_r, targets, input_grad=False, trainable=True)
    )
    kw = {"mask_bytes": mask_bytes, "trainable": True}
    acts = (
        _head_activation_bytes(st)
        + (n - 1)
        * block_activation_bytes(shape, batch, seq, lora_r, targets, p, input_grad=True, **kw)
        + block_activation_bytes(shape, batch, seq, lora_r, targets, p, input_grad=False, **kw)
    )
    if shape.layers > 1 or any(t in ("query", "key") for t in targets):
        acts += _rotary_bytes(st)
    return {"flops": fwd + bwd, "activation_bytes": acts}
