"""The training loop: multi-device DEFT (Algorithm 1) and its centralized PEFT baseline.

One DEFT round ``n`` (Algorithm 1)::

    states  = clock.instance(n)                  # memory, channel, compute factor of K devices
    alloc   = solve(states, scheme)              # block l -> device k (and bandwidth)
    for l, k in enumerate(alloc.assignment):     # every scheduled device, independently:
        only block l's LoRA (+ head) require grad  #   backward truncated at block l
        for m in 1..M: loss(batch_m of shard k).backward()   # gradients accumulated
        upload g(phi_l) / M and g(head) / M
    server: g(head) = mean over the L devices; Adam step on every block, eq. (6)
    clock  += alloc.latency                      # the scheme's round latency (eqs. 7-8)

*Fewer devices than blocks* (issue 13, not in the paper). With ``scenario.layers_per_block
= g`` a block is ``g`` consecutive layers
(:func:`~loladeft.training.blocks.lora_parameters_by_depth`). With
``scenario.max_blocks_per_device > 1`` the scheme may give one device several blocks ``A_k``;
that device makes one truncated backward pass to its deepest block with every carried block's
LoRA (and the head) requiring a gradient, which yields all of them on the way
(:func:`device_gradients`), and uploads each carried block's gradient and one head gradient.
The head gradient is averaged over the *devices* that delivered, each block still takes its
own gradient (eq. 6). With one block per device this is the round above, bit for bit.

All devices start the round from the same parameters ``phi^(n-1)`` (they "fetch the latest
model"), so simulating them one after the other is exact. The server's optimizer is the same
AdamW, learning-rate schedule and hyperparameters as the centralized baseline, with one
parameter group per block (eq. 6 per block; Adam is element-wise, so this is the same update
as one optimizer over all blocks). The accumulated gradient is the *mean* over the ``M``
minibatches, so a DEFT block gradient and a centralized gradient over ``M x batch`` samples are
estimates of the same quantity; with one shared minibatch and ``M = 1`` they are equal (test 1).

The centralized baseline is ordinary LoRA fine-tuning with PEFT: one full backward pass per
step on a batch of ``M x batch`` samples from the whole training set, the same number of
optimizer steps as DEFT rounds.

*Randomness.* Every random draw is a pure function of the seed and its position (round,
device, local iteration): device states (:mod:`loladeft.training.clock`), the data partition
and each shard's per-epoch order (:class:`~loladeft.training.data.BatchStream`), and dropout
(``torch.manual_seed`` per device computation). A resumed run therefore continues
bit-identically from its checkpoint, which holds the LoRA and head weights, the optimizer and
schedule state, the stream counters, the torch RNG state, the round and the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loladeft.allocation.result import AllocationResult
from loladeft.config import Config, build
from loladeft.exceptions import InputError, LoladeftError, RunError

#: Key of the centralized baseline's batch stream (devices use 0..K-1).
_CENTRAL_KEY = 1 << 20
#: Key mixed into the dropout seeds.
_DROPOUT = 0xD40


def check_finite(n: int, where: str, loss: float, grads: Sequence[Any]) -> None:
    """Raise :class:`RunError` (one line) unless the loss and every gradient of round
    ``n`` are finite; ``where`` names the computation (a device and block, or the step)."""
    import torch

    if not math.isfinite(loss):
        raise RunError(
            f"train: round {n}: non-finite loss ({loss}) {where}; the run stops here "
            "(the files written so far and the last checkpoint are kept)"
        )
    for g in grads:
        if not bool(torch.isfinite(g).all()):
            raise RunError(
                f"train: round {n}: non-finite gradient {where}; the run stops here "
                "(the files written so far and the last checkpoint are kept)"
            )


# ------------------------------------------------------------------------ gradient helpers
def _autocast(precision: str) -> Any:
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def device_gradient(
    model: Any,
    block: Sequence[Any],
    head: Sequence[Any],
    batches: Sequence[dict[str, Any]],
    precision: str = "fp32",
    seed: int | None = None,
) -> tuple[list[Any], list[Any], float]:
    """One device's work in a round: the gradient of one block (and of the head).

    :func:`device_gradients` with the one block ``block``.

    Parameters
    ----------
    model
        The PEFT model, holding the latest parameters.
    block
        LoRA parameters of the scheduled block
        (:func:`~loladeft.training.blocks.lora_parameters_by_depth`).
    head
        Head parameters (their gradient is uploaded too).
    batches
        The ``M`` local minibatches, from the device's own shard.
    precision
        ``"fp32"`` or ``"bf16"`` (autocast of the forward pass).
    seed
        Seeds dropout, so the computation is reproducible wherever it runs.

    Returns
    -------
    block_grads, head_grads, loss
        Gradients averaged over the ``M`` local iterations, and the mean loss.

    Notes
    -----
    Only ``block`` and ``head`` require a gradient while the device computes, so autograd
    keeps no graph below the block and the backward pass stops there (Algorithm 1).
    """
    grads, head_grads, loss = device_gradients(model, [block], head, batches, precision, seed)
    return grads[0], head_grads, loss


def device_gradients(
    model: Any,
    blocks: Sequence[Sequence[Any]],
    head: Sequence[Any],
    batches: Sequence[dict[str, Any]],
    precision: str = "fp32",
    seed: int | None = None,
) -> tuple[list[list[Any]], list[Any], float]:
    """A multi-block device's work in a round: the gradients of every block it carries (and
    of the head) from one truncated backward pass per minibatch (issue 13).

    Parameters
    ----------
    model
        The PEFT model, holding the latest parameters.
    blocks
        LoRA parameters of each carried block (any order).
    head, batches, precision, seed
        As in :func:`device_gradient`.

    Returns
    -------
    block_grads, head_grads, loss
        One list of gradients per block of ``blocks`` (same order) and the head's, averaged
        over the ``M`` local iterations, and the mean loss.

    Notes
    -----
    Every carried block's parameters and the head's require a gradient, no other: autograd
    keeps no graph below the deepest carried block, so the pass stops there, and the
    gradient of each block is the one a single-block pass to that block computes (the
    forward pass, dropout included, is the same; ``requires_grad`` only decides where the
    backward pass stops).
    """
    import torch

    from loladeft.training.blocks import train_only

    params = [*(p for block in blocks for p in block), *head]
    train_only(model, params)
    for p in params:
        p.grad = None
    if seed is not None:
        torch.manual_seed(seed)
    total = 0.0
    m = len(batches)
    for batch in batches:
        with _autocast(precision):
            loss = model(**batch).loss
        (loss / m).backward()
        total += float(loss.detach())
    block_grads = [[p.grad.detach().clone() for p in block] for block in blocks]
    head_grads = [p.grad.detach().clone() for p in head]
    for p in params:
        p.grad = None
        p.requires_grad_(False)
    return block_grads, head_grads, total / m


def full_gradient(
    model: Any,
    params: Sequence[Any],
    batch: dict[str, Any],
    precision: str = "fp32",
    seed: int | None = None,
) -> tuple[list[Any], float]:
    """Centralized gradient of ``params`` on one batch (one full backward pass)."""
    import torch

    from loladeft.training.blocks import train_only

    train_only(model, params)
    for p in params:
        p.grad = None
    if seed is not None:
        torch.manual_seed(seed)
    with _autocast(precision):
        loss = model(**batch).loss
    loss.backward()
    grads = [p.grad.detach().clone() for p in params]
    for p in params:
        p.grad = None
    return grads, float(loss.detach())


def make_optimizer(
    blocks: Sequence[Sequence[Any]], head: Sequence[Any], cfg: Config
) -> tuple[Any, Any]:
    """AdamW with one parameter group per block (depth order) and one for the head, and the
    linear warm-up / linear decay schedule over ``cfg.train.rounds`` steps."""
    import torch

    groups = [{"params": list(b), "name": f"block{i + 1}"} for i, b in enumerate(blocks)]
    groups.append({"params": list(head), "name": "head"})
    opt = torch.optim.AdamW(
        groups,
        lr=cfg.train.lr,
        betas=cfg.train.betas,
        eps=cfg.train.eps,
        weight_decay=cfg.train.weight_decay,
    )
    warmup = (
        max(1, round(cfg.train.warmup_ratio * cfg.train.rounds))
        if cfg.train.warmup_ratio > 0
        else 0
    )

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (cfg.train.rounds - step) / max(1, cfg.train.rounds - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def apply_update(
    optimizer: Any, scheduler: Any, params: Sequence[Any], grads: Sequence[Any]
) -> None:
    """Server update, eq. (6): set the aggregated gradients and take one optimizer step."""
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()
    scheduler.step()
    for p in params:
        p.grad = None


# ------------------------------------------------------------------------ the run
@dataclass
class RoundLog:
    """What one round leaves in ``metrics.csv`` (one row per clock scheme)."""

    round: int
    train_loss: float
    latency: dict[str, float]
    sim_time: dict[str, float]
    wall_s: float
    feasible: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    #: The Flower runtime's wall clock of the round (``predicted_latency_s``,
    #: ``measured_latency_s``, ``overhead_s``); empty in process.
    wallclock: dict[str, float] = field(default_factory=dict)


@dataclass
class DeviceUpdate:
    """What one scheduled device uploads in a round: the gradient of each block it carries
    and its gradient of the head, averaged over the ``M`` local iterations, and its mean
    training loss.

    ``block_grads[i]`` holds the LoRA gradients of the block at depth ``i + 1`` (one key in
    the paper's model; one per carried block with multi-block devices).
    """

    block_grads: dict[int, list[Any]]
    head_grads: list[Any]
    loss: float

    @property
    def depths(self) -> list[int]:
        """Depths (1-based, ascending) of the blocks carried."""
        return sorted(i + 1 for i in self.block_grads)


@dataclass
class RoundWork:
    """The devices' work of one round as the server received it.

    ``updates[i]`` is the update of the device that computed the block at depth ``i + 1``
    (holding ``block_grads[i]``), or ``None`` when no device delivered it (the block is
    skipped this round: its parameters are not stepped). A device carrying several blocks
    appears, as one object, at each of its blocks' positions. ``latency`` is the driver
    scheme's round latency as realised (a runtime that reassigns blocks after faults
    reports a longer one than the plan's).
    """

    updates: list[DeviceUpdate | None]
    latency: float

    def devices(self) -> list[DeviceUpdate]:
        """The distinct updates received (one per device that delivered), in depth order of
        their shallowest block."""
        return list({id(u): u for u in self.updates if u is not None}.values())


class Trainer:
    """A DEFT or centralized fine-tuning run (see the module docstring).

    Parameters
    ----------
    cfg
        The run's settings.
    log
        Called with a one-line message for notable events (optional).
    """

    def __init__(self, cfg: Config, log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.log = log or (lambda _msg: None)
        self.round = 0
        self.sim_time = {s: 0.0 for s in cfg.train.clock_schemes}
        self.history: list[RoundLog] = []

    # -- setup --------------------------------------------------------------------------
    def setup(self, *, dev: bool = True) -> Trainer:
        """Load data, model, profile and scenario; validate everything before any work.

        ``dev=False`` skips encoding the dev set (a device that never evaluates).

        Raises
        ------
        LoladeftError
            Bad task, data folder or file, model, profile, or ``K < L``.
        """
        import torch

        from loladeft.training.blocks import head_parameters, lora_parameters_by_depth
        from loladeft.training.clock import Clock, ModelCounts, block_costs
        from loladeft.training.data import BatchStream, encode, load_task, partition_iid

        cfg = self.cfg
        self.data = load_task(cfg.train.task, cfg.train.data_dir)
        task = self.data.task
        # the profile and K >= L are checked before the (slow) model load
        profile = None if cfg.train.centralized else run_profile(cfg)
        self.model, self.tokenizer = build_model(cfg, task.num_labels)
        self.blocks = lora_parameters_by_depth(self.model, cfg.scenario.layers_per_block)
        self.head = head_parameters(self.model)
        self.params = [p for b in self.blocks for p in b] + list(self.head)
        self.num_blocks = len(self.blocks)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.train_data = encode(self.data.train, self.tokenizer, cfg.train.max_length)
        dev = self.data.dev if dev else ()
        if cfg.train.max_eval_samples is not None:
            from loladeft.training.data import Split

            n = cfg.train.max_eval_samples
            dev = tuple(
                Split(
                    s.text_a[:n], None if s.text_b is None else s.text_b[:n], s.labels[:n], s.source
                )
                for s in dev
            )
        self.dev_data = [encode(s, self.tokenizer, cfg.train.max_length) for s in dev]
        self.pad_id = self.tokenizer.pad_token_id or 0
        M = cfg.scenario.local_iterations
        if cfg.train.centralized:
            rows = np.arange(len(self.train_data))
            self.streams = [BatchStream(rows, M * cfg.train.batch, cfg.train.seed, _CENTRAL_KEY)]
            self.clock = None
        else:
            shards = partition_iid(len(self.train_data), cfg.scenario.num_devices, cfg.train.seed)
            self.streams = [
                BatchStream(s, cfg.train.batch, cfg.train.seed, k) for k, s in enumerate(shards)
            ]
            lora_per_block = sum(p.numel() for p in self.blocks[0])
            counts = ModelCounts(self.num_blocks, lora_per_block, sum(p.numel() for p in self.head))
            costs = block_costs(profile, counts, cfg.train.batch, cfg.scenario.layers_per_block)
            self.clock = Clock(cfg.scenario.scenario(costs, grouped=True), cfg.train.seed)
        self.optimizer, self.scheduler = make_optimizer(self.blocks, self.head, cfg)
        self.precision = resolve_precision(cfg.train.precision)
        self.torch_threads = torch.get_num_threads()
        return self

    # -- one round ----------------------------------------------------------------------
    def _batch(self, stream: int) -> dict[str, Any]:
        from loladeft.training.data import collate

        return collate(self.train_data, self.streams[stream].next(), self.pad_id)

    def step(self) -> RoundLog:
        """Run round ``self.round + 1`` and return its log."""
        cfg = self.cfg
        n = self.round + 1
        t0 = time.perf_counter()
        self.model.train()
        if cfg.train.centralized:
            grads, loss = full_gradient(
                self.model,
                self.params,
                self._batch(0),
                self.precision,
                seed=_seed(cfg.train.seed, _DROPOUT, n),
            )
            check_finite(n, "in the centralized step", loss, grads)
            apply_update(self.optimizer, self.scheduler, self.params, grads)
            log = RoundLog(n, loss, {}, {}, 0.0)
        else:
            log = self._deft_round(n)
        self.round = n
        log.wall_s = time.perf_counter() - t0
        self.history.append(log)
        return log

    def device_states(self, n: int) -> Any:
        """The scheduling instance of round ``n``: every device's state and channel.

        In process, the clock draws them; the Flower runtime queries its nodes instead.
        """
        assert self.clock is not None
        return self.clock.instance(n)

    def device_update(self, n: int, depth_index: int | Sequence[int], device: int) -> DeviceUpdate:
        """Device ``device``'s work in round ``n``: the gradient of the block at depth
        ``depth_index + 1`` (or of each block of a list of depth indices, from one truncated
        backward pass, :func:`device_gradients`) over ``M`` minibatches of its own shard
        (Algorithm 1)."""
        indices = sorted({int(i) for i in np.atleast_1d(depth_index)})
        batches = [self._batch(device) for _ in range(self.cfg.scenario.local_iterations)]
        g_blocks, g_head, loss = device_gradients(
            self.model,
            [self.blocks[i] for i in indices],
            self.head,
            batches,
            self.precision,
            seed=_seed(self.cfg.train.seed, _DROPOUT, n, device),
        )
        return DeviceUpdate(dict(zip(indices, g_blocks, strict=True)), g_head, loss)

    def run_devices(self, n: int, instance: Any, allocation: AllocationResult) -> RoundWork:
        """Every scheduled device's update (in process: one after the other, all from the same
        parameters, which is exact). The Flower runtime sends them to its nodes instead."""
        assert allocation.assignment is not None
        updates: list[DeviceUpdate | None] = [None] * len(allocation.assignment)
        for device, indices in carried_blocks(allocation.assignment).items():
            update = self.device_update(n, indices, device)
            for i in indices:
                updates[i] = update
        return RoundWork(updates, float(allocation.latency))

    def _deft_round(self, n: int) -> RoundLog:
        cfg = self.cfg
        assert self.clock is not None
        inst = self.device_states(n)
        results = {
            s: self.clock.schedule(n, s, inst)
            for s in dict.fromkeys((cfg.train.scheme, *cfg.train.clock_schemes))
        }
        driver = results[cfg.train.scheme]
        skipped = RoundLog(
            n,
            math.nan,
            {s: math.nan for s in cfg.train.clock_schemes},
            dict(self.sim_time),
            0.0,
            feasible=False,
        )
        if not driver.feasible:
            # every scheme is memory-aware: no allocation exists this round; nothing trains
            self.log(f"round {n}: infeasible ({driver.reason}); skipped")
            return skipped
        work = self.run_devices(n, inst, driver)
        received = work.devices()
        for update in received:
            depths = update.depths
            check_finite(
                n,
                f"from the device of the block at depth {depths[0]}"
                if len(depths) == 1
                else f"from the device of the blocks at depths {', '.join(map(str, depths))}",
                update.loss,
                [*(g for d in depths for g in update.block_grads[d - 1]), *update.head_grads],
            )
        if not received:
            self.log(f"round {n}: no device delivered its block; skipped")
            return skipped
        # eq. (6): each block's own gradient; the head's averaged over the devices that
        # delivered (all scheduled devices unless a runtime lost some)
        grads: list[Any] = []
        for depth_index, update in enumerate(work.updates):
            if update is None:
                grads.extend([None] * len(self.blocks[depth_index]))
            else:
                grads.extend(update.block_grads[depth_index])
        head_sum = received[0].head_grads
        for u in received[1:]:
            head_sum = [a + b for a, b in zip(head_sum, u.head_grads, strict=True)]
        grads.extend(g / len(received) for g in head_sum)
        apply_update(self.optimizer, self.scheduler, self.params, grads)
        latency = {s: float(results[s].latency) for s in cfg.train.clock_schemes}
        if cfg.train.scheme in latency:
            latency[cfg.train.scheme] = work.latency
        for s in cfg.train.clock_schemes:
            self.sim_time[s] += latency[s]
        return RoundLog(
            n, float(np.mean([u.loss for u in received])), latency, dict(self.sim_time), 0.0
        )

    @property
    def skipped_rounds(self) -> list[int]:
        """Rounds in which nothing was stepped (no allocation existed, or no device
        delivered its block); a run where every round was skipped trained nothing."""
        return [h.round for h in self.history if h.round > 0 and not h.feasible]

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Dev-set metrics (:func:`loladeft.training.metrics.task_metrics`) of the model now."""
        import torch

        from loladeft.training.data import collate
        from loladeft.training.metrics import task_metrics

        task = self.data.task
        self.model.eval()
        out: dict[str, float] = {}
        for i, data in enumerate(self.dev_data):
            order = np.argsort([len(x) for x in data.input_ids], kind="stable")
            preds = np.empty(len(data), dtype=np.float64 if task.is_regression else np.int64)
            with torch.no_grad():
                for start in range(0, len(order), 64):
                    rows = order[start : start + 64]
                    batch = collate(data, rows, self.pad_id)
                    batch.pop("labels")
                    with _autocast(self.precision):
                        logits = self.model(**batch).logits.float()
                    preds[rows] = (
                        logits[:, 0] if task.is_regression else logits.argmax(-1)
                    ).numpy()
            metrics = task_metrics(task.name, preds, data.labels)
            suffix = "" if i == 0 else "_mm"
            out.update({f"{k}{suffix}": v for k, v in metrics.items()})
        self.model.train()
        return out

    # -- checkpoints --------------------------------------------------------------------
    def weights(self) -> dict[str, Any]:
        """Copies of the trainable (LoRA and head) parameters by name."""
        from loladeft.training.blocks import trainable_names

        names = set(trainable_names(self.model))
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if n in names}

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Overwrite trainable parameters from :meth:`weights`' mapping."""
        import torch

        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, w in weights.items():
                named[n].copy_(w)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically."""
        import torch

        return {
            "format": 1,
            "config": self.cfg.run_dict(),
            "round": self.round,
            "sim_time": dict(self.sim_time),
            "weights": self.weights(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "streams": [s.consumed for s in self.streams],
            "torch_rng": torch.get_rng_state(),
            "history": [vars(h) for h in self.history],
        }

    def save(self, path: Path) -> None:
        """Write the checkpoint (JSON and safetensors, :mod:`loladeft.training.checkpoint`)
        atomically: a kill mid-write leaves the previous one."""
        from loladeft.training import checkpoint

        checkpoint.write(path, self.state())

    def load(self, path: Path) -> None:
        """Restore a checkpoint written by :meth:`save` for the same configuration; nothing
        is unpickled, and every value is checked against this run before it is used.

        Raises
        ------
        InputError
            Unreadable, tampered or malformed checkpoint, or one written for different
            settings (one line).
        """
        import dataclasses

        import torch

        from loladeft.training import checkpoint

        fields = {f.name: str(f.type) for f in dataclasses.fields(RoundLog)}
        state = checkpoint.read(path, self.state(), self.params, fields)
        try:  # settings added since the checkpoint was written take their defaults
            saved = build(state.get("config", {})).run_dict()
        except LoladeftError as exc:
            raise InputError(f"resume: {path}: {exc}") from None
        now = self.cfg.run_dict()
        diff = sorted(
            f"{table}.{k}"
            for table in now
            for k in set(saved[table]) | set(now[table])
            if saved[table].get(k) != now[table].get(k)
        )
        if diff:
            raise InputError(
                f"resume: {path} was written with different settings ({', '.join(diff)}); "
                "use the same options or another --out"
            )
        self.set_weights(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for s, consumed in zip(self.streams, state["streams"], strict=True):
            s.consumed = consumed
        torch.set_rng_state(state["torch_rng"])
        self.round = state["round"]
        self.sim_time = dict(state["sim_time"])
        self.history = [RoundLog(**h) for h in state["history"]]


def build_model(cfg: Config, num_labels: int) -> tuple[Any, Any]:
    """The run's model with its LoRA adapters (the registry's one builder,
    :func:`loladeft.models.build`, which the profiler uses too) and its tokenizer."""
    from loladeft import models

    spec = models.resolve(cfg.train.model, num_labels=num_labels, weights=True)
    tokenizer = models.load_tokenizer(spec)
    model = models.build(spec, cfg.lora, seed=cfg.train.seed, pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


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


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence mixing)."""
    return int(
        np.random.SeedSequence([int(p) for p in parts])
        .generate_state(2, np.uint32)
        .astype(np.uint64)
        .dot([1 << 31, 1])
        % (1 << 63)
    )


def carried_blocks(assignment: Sequence[int]) -> dict[int, list[int]]:
    """``device -> depth indices of the blocks it carries`` (ascending) from an allocation's
    ``assignment`` (block -> device), devices in depth order of their shallowest block."""
    out: dict[int, list[int]] = {}
    for depth_index, device in enumerate(assignment):
        out.setdefault(int(device), []).append(depth_index)
    return out


def run_profile(cfg: Config) -> Any:
    """The profile of a DEFT run (``--profile`` or the model's builtin), checked against
    its ``K`` devices: ``L`` blocks of ``layers_per_block`` layers, at most
    ``max_blocks_per_device`` of them on one device.

    Raises
    ------
    LoladeftError
        No usable profile, ``layers_per_block`` not dividing the layers, ``K`` devices
        too few for the ``L`` blocks (``K * max_blocks_per_device < L``), or, with
        ``max_blocks_per_device > 1``, a clock scheme that cannot schedule multi-block
        devices.
    """
    from loladeft.allocation.multiblock import MULTIBLOCK_SCHEMES
    from loladeft.exceptions import InputError
    from loladeft.profiling.profile import load_profile
    from loladeft.system.scenario import InvalidScenarioError, too_few_devices

    sc = cfg.scenario
    if sc.max_blocks_per_device > 1:
        for key, names in (
            ("train.scheme", (cfg.train.scheme,)),
            ("train.shared_schemes", cfg.train.shared_schemes),
        ):
            other = next((s for s in names if s not in MULTIBLOCK_SCHEMES), None)
            if other is not None:
                raise InputError(
                    f"{key}: {other} cannot schedule multi-block devices "
                    f"(scenario.max_blocks_per_device = {sc.max_blocks_per_device}); use "
                    f"{', '.join(MULTIBLOCK_SCHEMES)}"
                )
    profile = load_profile(sc.profile or default_profile(cfg.train.model))
    layers = profile.num_blocks
    if layers % sc.layers_per_block:
        raise InvalidScenarioError(
            "layers_per_block", f"{sc.layers_per_block} does not divide the model's {layers} layers"
        )
    L = layers // sc.layers_per_block
    if sc.num_devices * sc.max_blocks_per_device < L:
        raise InvalidScenarioError(
            "num_devices", too_few_devices(sc.num_devices, L, sc.max_blocks_per_device)
        )
    return profile


def default_profile(model: str) -> str:
    """Builtin profile of a model name (:func:`loladeft.models.builtin_profile`), or an
    error asking for ``--profile``."""
    from loladeft.exceptions import InputError
    from loladeft.models import builtin_profile

    name = builtin_profile(model)
    if name is not None:
        return name
    raise InputError(
        f"profile: no builtin profile for model {model!r}; measure one with "
        f"'loladeft profile --model {model} --out P.json' and pass --profile P.json"
    )
