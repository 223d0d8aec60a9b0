"""A node's side of a DEFT round: report its state, compute its blocks' gradients.

The node is device ``k = partition-id`` of the run (``num-partitions`` must equal the run's
``K``). It computes with the in-process engine's own functions
(:meth:`loladeft.training.engine.Trainer.device_update`): the same model, the same shard
``k`` of the i.i.d. partition, the same minibatch order and dropout seeds, so a Flower run
and an in-process run of the same settings compute the same gradients.

*State between messages.* A deployment SuperNode starts a fresh ClientApp process for every
message, and the simulation runtime reuses one Ray actor for many virtual nodes, so nothing
node-specific may live in memory. The node's only state, the position of its minibatch
stream, comes with every ``train`` message: the server counts the batches each device has
used (``M`` per accepted update), keeps the counts in its checkpoint, and a resumed run
continues every stream where it stopped. The model cache below is keyed by the run settings
only and is overwritten from every message.

*Device state.* ``compute-factor`` and ``memory-gb`` in the node config (``flower-supernode
--node-config``) report a real device's state; without them the node draws its own row of
the scenario model (Sec. VI-A) for the round, as the in-process clock does. With
``scenario.device_model = "measured"`` the node also measures itself when the server asks
(``profile`` in the query): its row of ``J`` and the memory of each depth on its own hardware
(:mod:`loladeft.profiling.selfprofile`, cached per process, node and settings), and its
available memory now; and sends a link probe of the requested size (``probe``) with the
reply. Every reply says how long the node took to handle the message (``handle-seconds``),
so the server can tell the transport's time from the node's
(:mod:`loladeft.runtime.wallclock`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from loladeft.exceptions import FieldError
from loladeft.runtime import protocol

#: One set-up engine per run settings (a process may serve many virtual nodes).
_ENGINES: dict[str, Any] = {}
_CLOCKS: dict[str, Any] = {}
_GB = 1e9


def partition(node_config: Any, cfg: Any) -> int:
    """This node's device index ``k``, checked against the run's ``K``."""
    try:
        k = int(node_config["partition-id"])
        n = int(node_config["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise FieldError("node-config", "needs integer partition-id and num-partitions") from None
    if n != cfg.scenario.num_devices or not 0 <= k < n:
        raise FieldError(
            "node-config",
            f"partition-id {k} of num-partitions {n} does not fit the run's "
            f"K = {cfg.scenario.num_devices} devices",
        )
    return k


def device_state(cfg: Any, node_config: Any, round_index: int) -> tuple[float, float]:
    """``(compute factor, available memory in bytes)`` of this node in a round."""
    k = partition(node_config, cfg)
    given = [key for key in ("compute-factor", "memory-gb") if key in node_config]
    if not given:
        return _state_clock(cfg).device_state(round_index, k)
    if len(given) == 1:
        raise FieldError("node-config", f"{given[0]} given without its pair; give both")
    try:
        f, gb = float(node_config["compute-factor"]), float(node_config["memory-gb"])
    except (TypeError, ValueError):
        raise FieldError("node-config", "compute-factor and memory-gb must be numbers") from None
    if not (math.isfinite(f) and f > 0 and math.isfinite(gb) and gb >= 0):
        raise FieldError(
            "node-config", f"need compute-factor > 0 and memory-gb >= 0, got {f} and {gb}"
        )
    return f, gb * _GB


def _state_clock(cfg: Any) -> Any:
    """A clock for the devices' own draws (which need neither the model nor the channel)."""
    key = protocol.encode_config(cfg)
    if key not in _CLOCKS:
        from loladeft.system.grouping import group_block_costs
        from loladeft.system.scenario import BlockCosts, Scenario
        from loladeft.training.clock import Clock
        from loladeft.training.engine import run_profile

        costs = BlockCosts.from_profile(run_profile(cfg))
        if cfg.scenario.layers_per_block > 1:  # the run's blocks (only L matters here)
            costs = group_block_costs(costs, costs.num_blocks // cfg.scenario.layers_per_block)
        scenario = Scenario(
            costs,
            num_devices=cfg.scenario.num_devices,
            local_iterations=cfg.scenario.local_iterations,
            max_blocks_per_device=cfg.scenario.max_blocks_per_device,
        )
        _CLOCKS.clear()  # one run at a time per process
        _CLOCKS[key] = Clock(scenario, cfg.train.seed)
    return _CLOCKS[key]


def engine(cfg: Any) -> Any:
    """The set-up engine of a run (built once per process and settings)."""
    from loladeft.training.engine import Trainer

    key = protocol.encode_config(cfg)
    if key not in _ENGINES:
        _ENGINES.clear()  # one run at a time per process
        _ENGINES[key] = Trainer(cfg).setup(dev=False)
    return _ENGINES[key]


#: Environment variable naming the ``cgroup.procs`` file this process joins before it computes
#: (set by the testbed, :mod:`loladeft.runtime.testbed_federation`).
CPU_GROUP_ENV = "LOLADEFT_TESTBED_CPU_GROUP"
#: Environment variable naming a folder where self-profiles are kept between processes.
PROFILE_CACHE_ENV = "LOLADEFT_PROFILE_CACHE"
_joined: list[str] = []


def join_cpu_group() -> None:
    """On the testbed, move this process into its device's CPU cgroup (once): the device's
    CPU quota then holds what the device computes."""
    target = os.environ.get(CPU_GROUP_ENV)
    if target and target not in _joined:
        with open(target, "w") as fh:
            fh.write(str(os.getpid()))
        _joined.append(target)


def handle_query(message: Any, context: Any) -> Any:
    """Reply to a ``query``: this node's state in the round (and, when asked, its
    self-profile and a link probe)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    t0 = time.perf_counter()
    join_cpu_group()
    deft = message.content[protocol.DEFT]
    cfg = protocol.decode_config(deft["config"])
    if deft.get("warm"):  # the server's warm-up before round 1: load model and data now
        engine(cfg)
    k = partition(context.node_config, cfg)
    f, memory = device_state(cfg, context.node_config, int(deft["round"]))
    records: dict[str, Any] = {}
    if deft.get("profile") and cfg.scenario.device_model == "measured":
        profile = self_profile(cfg, k)
        records[protocol.PROFILE] = ConfigRecord(
            {
                "seconds": list(profile.seconds),
                "memory-bytes": list(profile.memory_bytes),
                "available-bytes": profile.available_bytes,
                "repeats": profile.repeats,
            }
        )
    probe = int(deft.get("probe", 0) or 0)
    if 0 < probe <= protocol.MAX_PROBE_BYTES:
        import numpy as np
        from flwr.app import ArrayRecord

        records[protocol.PROBE] = ArrayRecord({"zeros": np.zeros(probe, dtype=np.uint8)})
    state = ConfigRecord(
        {
            "partition-id": k,
            "compute-factor": f,
            "memory-bytes": memory,
            "handle-seconds": time.perf_counter() - t0,
        }
    )
    return Message(RecordDict({protocol.STATE: state, **records}), reply_to=message)


def self_profile(cfg: Any, k: int) -> Any:
    """Device ``k``'s self-profile under the run settings ``cfg``: measured once per process,
    node and settings (and, where :data:`PROFILE_CACHE_ENV` names a folder, once per machine:
    the testbed shares its devices' profiles between the runs of its schemes); the available
    memory is read anew."""
    from loladeft.profiling.selfprofile import cached_profile, load_profile, save_profile
    from loladeft.profiling.selfprofile import self_profile as measure

    key = protocol.encode_config(cfg)
    folder = os.environ.get(PROFILE_CACHE_ENV)

    def run() -> Any:
        path = None
        if folder:
            import hashlib

            tag = f"{key}|{k}|{os.environ.get(CPU_GROUP_ENV, '')}|{_cpu_quota()}"
            path = Path(folder) / f"{hashlib.sha256(tag.encode()).hexdigest()[:24]}.json"
            if path.exists():
                return load_profile(path)
        prof = measure(engine(cfg), k, repeats=cfg.scenario.profile_repeats)
        if path is not None:
            save_profile(prof, path)
        return prof

    engine(cfg)
    return cached_profile(key, k, run)


def _cpu_quota() -> str:
    """This process's CPU quota as the cgroup states it ("" if unknown)."""
    target = os.environ.get(CPU_GROUP_ENV)
    if not target:
        return ""
    try:
        return (Path(target).parent / "cpu.cfs_quota_us").read_text().strip()
    except OSError:
        return ""


def carried_depths(deft: Any, num_blocks: int, max_blocks: int) -> list[int]:
    """The depths a ``train`` message asks for (``depths``, or ``[depth]`` from a server
    that sends one block), checked: distinct blocks of the model, ascending, at most
    ``max_blocks`` of them, ``depth`` the deepest."""
    depth = int(deft["depth"])
    depths = [int(d) for d in deft["depths"]] if "depths" in deft else [depth]
    if not depths or len(depths) > max_blocks:
        raise FieldError(
            "depths", f"{len(depths)} blocks, the run allows 1 to {max_blocks} per device"
        )
    if depths != sorted(set(depths)) or not 1 <= depths[0] <= depths[-1] <= num_blocks:
        raise FieldError("depths", f"{depths} are not distinct blocks of this model, ascending")
    if depth != depths[-1]:
        raise FieldError("depth", f"{depth} is not the deepest of {depths}")
    return depths


def handle_train(message: Any, context: Any) -> Any:
    """Reply to a ``train``: the gradients of the scheduled blocks (one truncated backward
    pass to the deepest) and the head's."""
    import torch
    from flwr.app import Message, MetricRecord, RecordDict

    start = time.perf_counter()
    join_cpu_group()
    deft = message.content[protocol.DEFT]
    cfg = protocol.decode_config(deft["config"])
    k = partition(context.node_config, cfg)
    n = int(deft["round"])
    trainer = engine(cfg)
    depths = carried_depths(deft, trainer.num_blocks, cfg.scenario.max_blocks_per_device)
    depth = depths[-1]
    weights = protocol.get(message.content, protocol.WEIGHTS)
    trainer.set_weights({name: torch.from_numpy(a) for name, a in weights.items()})
    trainer.streams[k].consumed = int(deft["stream-position"])
    t0 = time.perf_counter()
    update = trainer.device_update(n, [d - 1 for d in depths], k)
    seconds = time.perf_counter() - t0
    names = gradient_names(trainer, depths)
    tensors = [*(g for d in depths for g in update.block_grads[d - 1]), *update.head_grads]
    grads = dict(zip(names, tensors, strict=True))
    content = RecordDict()
    protocol.put(content, protocol.GRADIENT, grads)
    result = MetricRecord(
        {
            "round": n,
            "depth": depth,
            "partition-id": k,
            "loss": update.loss,
            "seconds": seconds,
            "handle-seconds": time.perf_counter() - start,
        }
    )
    content[protocol.RESULT] = result
    return Message(content, reply_to=message)


def gradient_names(trainer: Any, depths: int | list[int]) -> list[str]:
    """Names of the LoRA parameters of the block(s) at ``depths`` (in that order) and of the
    head's, in the order :func:`handle_train` uploads them."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    carried = [depths] if isinstance(depths, int) else depths
    blocks = [p for d in carried for p in trainer.blocks[d - 1]]
    return [names[id(p)] for p in (*blocks, *trainer.head)]
