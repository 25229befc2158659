"""Data-parallel distillation with `jax.sharding`: batch split over a 1-D 'data' mesh.

Mesh and sharding helpers only; this module imports nothing else of cpd_jax, so the
distillation step can use it without a cycle. `distillation.make_train_step(...,
mesh=make_mesh())` is the data-parallel step: the sampled batch is constrained to be
sharded along its leading (batch) axis over the mesh (`constrain_batch`), and the jit pins
state and window source replicated. XLA (GSPMD) then runs the forward/backward pass of each
batch shard on its device and all-reduces the gradients; the update is computed
identically on every device, so params and optimizer state stay replicated. With the
same key the result equals the single-device step up to float summation order (tested on
4 forced host devices).

The window source (all distillation data) is replicated: `sample_batch` draws episodes
uniformly from all of it, which a source sharded by episode would turn into a cross-device
gather. Fine at the paper's scale (~65k steps x 39 floats per task); shard the source by
episode if it ever stops fitting on one device.

Multi-host: `maybe_initialize_distributed(config)` brings up `jax.distributed` (CPU
processes talk over gloo); the mesh then spans every process's devices. Every process
runs the same program on the same (replicated) data; what differs is only who writes
(`is_main_process`), which episodes each evaluates (`process_share` + `gather_json`) and
that arrays leave the training step as host-local values (`host_local`). Processes meet
at `barrier`s and exchange results over the coordination service, which waits as long
as it is told; a gloo collective gives up after ~30 s of skew between processes.
Jobs whose processes share no array (teachers) skip `jax.distributed`: `process_identity`
says which process this is and `process_share` gives it its part of the work.
"""

import itertools
import json
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None, local_only: bool = False) -> Mesh:
    """1-D mesh with axis 'data' over `devices` (default: all devices; `local_only`: this
    process's devices only)."""
    if devices is None:
        devices = jax.local_devices() if local_only else jax.devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over 'data', other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Puts every leaf of `tree` on every device of `mesh`. On several processes every
    process passes the same whole value (a replicated array's local data is all of it)
    and gets one global array spanning all processes' devices."""
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def local_value(tree):
    """numpy values of a tree of replicated (possibly multi-process) arrays, read from
    this process's own copy; leaves that are not jax arrays are left as they are."""
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def host_local(tree):
    """`tree` with every array this process can use alone, on one device: each jax array
    that spans several devices (a data-parallel step's replicated output), and on
    several processes every jax array, becomes the numpy value of this process's copy.
    Evaluation and expert growth then need no collective, and orbax can save the tree:
    it writes numpy leaves once (process 0), refuses single-device arrays of a
    multi-process run, and with jax 0.6 fails on multi-device ones."""
    several = jax.process_count() > 1

    def leaf(x):
        if isinstance(x, jax.Array) and (several or len(x.sharding.device_set) > 1):
            return np.asarray(x.addressable_data(0))
        return x

    return jax.tree_util.tree_map(leaf, tree)


def is_main_process() -> bool:
    """Whether this process writes the run's files (results, plots, reports, shared
    data): process 0 of a multi-host run, the only process otherwise."""
    return jax.process_index() == 0


def _coordination_client():
    # jax's coordination-service client (barriers, key-value store, both with timeouts);
    # jax exposes it only here. None on a single process.
    from jax._src import distributed
    return distributed.global_state.client


# Barrier and key-value names must be unique for the life of the cluster; every process
# makes the same calls in the same order, so a per-process counter names them alike.
_SYNC_COUNTER = itertools.count()
SYNC_TIMEOUT_S = 4 * 3600  # one process may collect data or evaluate for hours


def barrier(name: str, timeout_s: float = SYNC_TIMEOUT_S) -> None:
    """Waits until every process has reached this barrier (no-op on one process)."""
    if jax.process_count() == 1:
        return
    _coordination_client().wait_at_barrier(f"cpd_jax/{next(_SYNC_COUNTER)}/{name}",
                                           int(timeout_s * 1000))


def gather_json(name: str, value: Any, timeout_s: float = SYNC_TIMEOUT_S) -> list:
    """[value of process 0, value of process 1, ...]: every process's JSON-able `value`,
    in every process ([value] on one process)."""
    if jax.process_count() == 1:
        return [value]
    client = _coordination_client()
    key = f"cpd_jax/{next(_SYNC_COUNTER)}/{name}"
    client.key_value_set(f"{key}/{jax.process_index()}", json.dumps(value))
    return [json.loads(client.blocking_key_value_get(f"{key}/{i}", int(timeout_s * 1000)))
            for i in range(jax.process_count())]


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the "
                         f"'{DATA_AXIS}' mesh axis; choose a multiple of {n}")


def constrain_batch(tree, mesh: Mesh):
    """Inside jit: ask XLA to keep `tree`'s leading axis split over 'data'."""
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def process_share(items: Sequence, index: int, count: int) -> list:
    """Process `index` of `count`'s share of `items`: every `count`-th item from position
    `index`, so the shares differ in size by at most one and together hold every item
    exactly once."""
    return list(items)[index::count]


def process_identity(parallel_config) -> tuple[int, int]:
    """(this process's index, number of processes) of a job that runs the same command
    on several processes without `jax.distributed` (teachers share no array): from
    `parallel.process_id` / `num_processes` when set, else from SLURM's `srun`
    (SLURM_PROCID, SLURM_NTASKS), else (0, 1)."""
    if parallel_config.num_processes >= 0 or parallel_config.process_id >= 0:
        index, count = int(parallel_config.process_id), int(parallel_config.num_processes)
    else:
        index = int(os.environ.get("SLURM_PROCID", 0))
        count = int(os.environ.get("SLURM_NTASKS", 1))
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is not in [0, {count}): set both "
                         "parallel.process_id and parallel.num_processes")
    return index, count


def distributed_kwargs(parallel_config) -> dict:
    """`jax.distributed.initialize` keyword arguments from the `parallel` block: only the
    fields set, so JAX auto-detects the rest (empty address, negative count or id)."""
    kwargs = {}
    if parallel_config.coordinator_address:
        kwargs["coordinator_address"] = parallel_config.coordinator_address
    for name in ("num_processes", "process_id"):
        if parallel_config[name] >= 0:
            kwargs[name] = int(parallel_config[name])
    return kwargs


_DISTRIBUTED_STARTED = False


def maybe_initialize_distributed(config) -> bool:
    """Calls `jax.distributed.initialize` when `config.parallel.multi_host` is true.

    `config.parallel.coordinator_address` (str "host:port"), `num_processes` (int) and
    `process_id` (int) are passed when set (`distributed_kwargs`; empty/negative = let
    JAX auto-detect, e.g. on SLURM or Cloud TPU). Must run before any other JAX call. Returns True when (already)
    initialised. Safe to call twice.
    """
    global _DISTRIBUTED_STARTED
    if not config.parallel.multi_host:
        return False
    if _DISTRIBUTED_STARTED:
        return True
    # CPU processes need a collectives backend to form one cluster (GPU/TPU ignore it)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**distributed_kwargs(config.parallel))
    _DISTRIBUTED_STARTED = True
    logging.info("jax.distributed up: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    return True


def data_mesh(config):
    """A 1-D 'data' mesh over all devices when there are several (and the config allows
    data parallelism), else None: the same config runs unchanged on 1 or N devices."""
    if not config.parallel.data_parallel or jax.device_count() == 1:
        return None
    return make_mesh()
