"""The simulated edge clock of a fine-tuning run: per-round device states and schedules.

Every round ``n`` draws the devices' state afresh from the scenario model of Sec. VI-A
(:class:`loladeft.system.scenario.Scenario`: compute factors, memory ``U[1, 6]`` GB, Rayleigh
fading) with a generator seeded by ``(seed, n)`` only. The states of round ``n`` are therefore
the same in every run with the same seed, whatever the scheme, the mode or a resume: runs of
different schemes are compared on common random numbers, and the shared-trajectory mode can
replay one training run on every scheme's clock.

Per-block costs come from the profile of the model being trained
(:func:`loladeft.profiling.profile.load_profile`), adjusted to the run:

* ``d(l)``: the profile's FLOPs scaled by ``batch / profile.batch`` (matmul FLOPs are linear
  in the batch), on the reference device;
* ``b(l)``: weights + activations (scaled the same way) + the block's LoRA parameters and
  gradients, plus the classification head's parameters and gradient;
* ``S``: what a scheduled device uploads, set by ``scenario.upload``:

  - ``"block"`` (default, the paper's S: "24576 tunable parameters within one block, each
    characterized by 32 bits", Sec. VI-A-1): the LoRA gradient of its block, 32 bits per
    parameter, counted on the model actually trained;
  - ``"block+head"``: that plus its gradient of the classification head (the head sits above
    every block, so every device's backward pass reaches it at no extra cost). For
    RoBERTa-base the head has ~25x the parameters of one LoRA block, so this makes the
    uploads ~26x longer.

  The training itself is the same under both (the server averages the ``L`` head gradients
  it receives); the setting decides what the clock charges for. Before this setting the clock
  always counted the head: the default changed to the paper's S. The upload size is the same
  for every block, as the paper's model assumes.

*Fewer devices than blocks* (issue 13, not in the paper):

* grouped layers (``scenario.layers_per_block = g``): a block is ``g`` consecutive layers, and
  the profile's per-layer costs are grouped by :mod:`loladeft.system.grouping`'s rule,
  ``d(G) = d(hi)`` and ``b(G) = b(hi)`` with ``hi`` the group's deepest layer; ``S`` is counted
  on the grouped model (the group's LoRA parameters, plus the head under ``block+head``);
* multi-block devices (``scenario.max_blocks_per_device``, ``extra_block_memory_gb``): the
  instances carry both settings, so the schedulers place several blocks on one device and
  price it with eq. (7'), ``J[k, max A_k] + |A_k| S / (r_k B_k)``. Under ``block+head`` a
  device uploads one head gradient however many blocks it carries, so eq. (7') (the issue's
  contract) overstates its upload by ``(|A_k| - 1)`` head gradients: a conservative clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from loladeft.allocation.registry import get_scheme, solve
from loladeft.allocation.result import AllocationResult
from loladeft.exceptions import InputError
from loladeft.system.scenario import BlockCosts, Rounds, Scenario

#: Key mixed into the round seed of the device-state draws.
_STATES = 0x5CE7
#: Key mixed into the seed of randomised schemes.
_SCHEME = 0x5C4E


@dataclass(frozen=True)
class ModelCounts:
    """Sizes counted on the model being trained."""

    num_blocks: int
    lora_params_per_block: int
    head_params: int
    bits_per_param: int = 32

    @property
    def block_bits(self) -> float:
        """The paper's ``S``: one block's LoRA gradient, in bits."""
        return float(self.lora_params_per_block * self.bits_per_param)

    @property
    def head_bits(self) -> float:
        """The head's gradient, in bits (added to ``S`` under ``upload = "block+head"``)."""
        return float(self.head_params * self.bits_per_param)


def block_costs(
    profile: Any, counts: ModelCounts, batch: int, layers_per_block: int = 1
) -> BlockCosts:
    """The run's :class:`BlockCosts` from a profile (see the module docstring).

    Parameters
    ----------
    profile
        The model's per-layer profile.
    counts
        Sizes counted on the model trained, per block (a group of ``layers_per_block``
        layers).
    batch
        The run's per-device batch.
    layers_per_block
        Consecutive layers per block; the profile's layers are grouped with
        :func:`loladeft.system.grouping.group_depth_costs`.

    Raises
    ------
    InputError
        The profile has a different number of layers than the model.
    """
    base = BlockCosts.from_profile(profile)
    if base.num_blocks != counts.num_blocks * layers_per_block:
        raise InputError(
            f"profile: {base.model} has {base.num_blocks} blocks but the model trained has "
            f"{counts.num_blocks * layers_per_block}; pass the profile of this model "
            "(loladeft profile --model ...)"
        )
    scale = batch / float(profile.batch)
    act = np.array([d.activation_bytes for d in profile.depths]) * scale
    weights = np.array([d.weight_bytes for d in profile.depths])
    lora_bytes = np.array([d.block_param_bytes for d in profile.depths])
    head_bytes = 2 * 4 * counts.head_params  # parameters + gradient, fp32
    memory = weights + act + lora_bytes + head_bytes
    flops = base.flops * scale
    if layers_per_block > 1:
        from loladeft.system.grouping import group_depth_costs

        grouped = group_depth_costs(flops, memory, 0.0, counts.num_blocks)
        flops, memory = grouped.depth_cost, grouped.memory
    flops.flags.writeable = False
    memory.flags.writeable = False
    return BlockCosts(base.model, flops, memory, counts.block_bits, counts.head_bits)


@dataclass(frozen=True, eq=False)
class Clock:
    """Device states and schedules of every round of a run (see the module docstring)."""

    scenario: Scenario
    seed: int

    def rounds(self, round_index: int) -> Rounds:
        """The devices' states of round ``round_index`` (1-based) as one sampled round."""
        rng = np.random.default_rng([self.seed, _STATES, round_index])
        return self.scenario.sample(1, rng)

    def instance(
        self,
        round_index: int,
        compute_factor: Any = None,
        device_memory: Any = None,
    ) -> Any:
        """The scheduling instance of round ``round_index`` (1-based).

        ``compute_factor`` and ``device_memory`` (length ``K``, bytes), when given, replace the
        drawn device states by the ones the devices reported (the Flower runtime); the channel
        stays the one drawn at the server.
        """
        rounds = self.rounds(round_index)
        if compute_factor is not None or device_memory is not None:
            rounds = replace(
                rounds,
                compute_factor=rounds.compute_factor
                if compute_factor is None
                else np.asarray(compute_factor, dtype=float)[None],
                device_memory=rounds.device_memory
                if device_memory is None
                else np.asarray(device_memory, dtype=float)[None],
            )
        return rounds.instance(0)

    def device_state(self, round_index: int, device: int) -> tuple[float, float]:
        """Device ``device``'s own compute factor and available memory (bytes) in round
        ``round_index``: its row of :meth:`rounds`, drawn without the channel."""
        rng = np.random.default_rng([self.seed, _STATES, round_index])
        f, memory = self.scenario.draw_device_states(rng, 1)
        return float(f[0, device]), float(memory[0, device])

    def schedule(self, round_index: int, scheme: str, instance: Any = None) -> AllocationResult:
        """Solve round ``round_index`` with ``scheme`` (randomised schemes seeded per round),
        under the scheme's equal-split rule (:meth:`Scenario.split_for`: ``B/K`` shares
        where the scenario says ``"all"``)."""
        inst = self.instance(round_index) if instance is None else instance
        rule = self.scenario.split_for(scheme, joint=get_scheme(scheme).problem == "P2")
        if rule != "active":
            inst = replace(inst, bandwidth=self.scenario.budget(rule))
        return solve(inst, scheme, seed=np.random.default_rng([self.seed, _SCHEME, round_index]))
