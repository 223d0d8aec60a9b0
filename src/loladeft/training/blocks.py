"""Which trainable parameters belong to which block depth, and truncated back-propagation.

Depth convention (the paper's, and :class:`loladeft.system.instance.Instance`'s columns):
``depth l = 1`` is the **last** transformer layer (nearest the output, cheapest to reach by
back-propagation), ``l = L`` the first. :func:`lora_parameters_by_depth` returns a list whose
index ``i`` holds the LoRA parameters of depth ``l = i + 1``.

The transformer layers are found with :func:`loladeft.models.find_blocks` (the longest
homogeneous ``ModuleList``), the same function the profiler measures with, so the training
engine and the profiler agree on what "block ``l``" is.

*Grouped layers* (issue 13, not in the paper): with ``layers_per_block = g`` a block is ``g``
consecutive layers, block ``l`` holding the layers at depths ``(l - 1) g + 1 .. l g`` (block 1
still ends at the last layer), as :mod:`loladeft.system.grouping` groups a profile.

*Truncated backward.* :func:`train_only` makes exactly one block's LoRA parameters (and the
classification head) require a gradient. Autograd then records no graph below block ``l``:
the layers under it only see tensors that do not require a gradient, so ``loss.backward()``
stops at block ``l`` by construction (Algorithm 1: "terminate gradient propagation after the
scheduled block's gradient is obtained"). A device carrying several blocks makes all of them
require a gradient: one backward pass, stopping at the deepest, yields every one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["head_parameters", "lora_parameters_by_depth", "train_only", "trainable_names"]


def lora_parameters_by_depth(model: Any, layers_per_block: int = 1) -> list[list[Any]]:
    """LoRA parameters of each block, in depth order (index 0 = depth 1 = last layer).

    Parameters
    ----------
    model
        A PEFT model (or any module whose transformer layers hold ``lora_`` parameters).
    layers_per_block
        Consecutive layers per block (module docstring); each block lists its layers'
        parameters in depth order, the shallowest layer first.

    Raises
    ------
    loladeft.models.InputError
        A layer holds no LoRA parameter (LoRA not applied to every layer), or
        ``layers_per_block`` does not divide the number of layers.
    """
    from loladeft.exceptions import InputError
    from loladeft.models import lora_blocks

    layers = lora_blocks(model)[::-1]
    g = layers_per_block
    if g == 1:
        return layers
    if g < 1 or len(layers) % g:
        raise InputError(
            f"scenario.layers_per_block: {g} does not divide the model's {len(layers)} layers"
        )
    return [[p for layer in layers[i : i + g] for p in layer] for i in range(0, len(layers), g)]


def head_parameters(model: Any) -> list[Any]:
    """Trainable parameters of the task head (PEFT's ``modules_to_save`` copy of the
    classifier), i.e. every trainable parameter that is not a LoRA matrix."""
    return [p for n, p in model.named_parameters() if "modules_to_save" in n and "lora_" not in n]


def trainable_names(model: Any) -> list[str]:
    """Names of the LoRA and head parameters (the state a checkpoint keeps)."""
    return [n for n, _ in model.named_parameters() if "lora_" in n or "modules_to_save" in n]


def train_only(model: Any, params: Iterable[Any]) -> None:
    """Make ``params`` the only parameters of ``model`` that require a gradient."""
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
