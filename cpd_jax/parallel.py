"""Data-parallel distillation with `jax.sharding`: batch split over a 1-D 'data' mesh.

The train step is `distillation.make_train_step`'s, with two changes: the sampled batch is
constrained to be sharded along its leading (batch) axis over the mesh, and the jit pins
state and window source replicated. XLA (GSPMD) then runs the forward/backward pass of each
batch shard on its device and all-reduces the gradients; the update is computed
identically on every device, so params and optimizer state stay replicated. With the
same key the result equals the single-device step up to float summation order (tested on
4 forced host devices).

The window source (all distillation data) is replicated: `sample_batch` draws episodes
uniformly from all of it, which a source sharded by episode would turn into a cross-device
gather. Fine at the paper's scale (~65k steps x 39 floats per task); shard the source by
episode if it ever stops fitting on one device.

Multi-host: `maybe_initialize_distributed(config)` brings up `jax.distributed`; the mesh
then spans every process's devices. Untested here (one host) -- see BUILD_NOTES.md, appendix E.
"""

from typing import Callable, Optional, Sequence

import jax
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cpd_jax import distillation

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
    """Puts every leaf of `tree` on every device of `mesh` (single-process meshes)."""
    return jax.device_put(tree, replicated_sharding(mesh))


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the {n} devices of the "
                         f"'{DATA_AXIS}' mesh axis; choose a multiple of {n}")


def shard_batch(tree, mesh: Mesh):
    """Splits every leaf's leading axis over the mesh (all leaves: same leading size B,
    B divisible by the number of devices)."""
    sizes = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"batch leaves disagree on the leading (batch) size: {sorted(sizes)}")
    check_batch_divisible(sizes.pop(), mesh)
    return jax.device_put(tree, batch_sharding(mesh))


def constrain_batch(tree, mesh: Mesh):
    """Inside jit: ask XLA to keep `tree`'s leading axis split over 'data'."""
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def make_sharded_train_step(model, tx: optax.GradientTransformation, distill_config,
                            mesh: Mesh, context_kind: str = "none", embed_fn=None,
                            **kwargs) -> Callable:
    """`(state, source) -> (state, metrics)` like `distillation.make_train_step`, data-parallel.

    state (`DistillState`) and source (`WindowSource`) should be `replicate`d onto `mesh`
    (the jit would otherwise copy them every call); outputs come back replicated.
    Extra keyword arguments (obs_norm, penalty_fn, frozen) go to `make_train_step`.
    """
    return distillation.make_train_step(model, tx, distill_config, context_kind, embed_fn,
                                        mesh=mesh, **kwargs)


_DISTRIBUTED_STARTED = False


def maybe_initialize_distributed(config) -> bool:
    """Calls `jax.distributed.initialize` when `config.parallel.multi_host` is true.

    Optional fields (empty/negative = let JAX auto-detect, e.g. on SLURM or Cloud TPU):
    `config.parallel.coordinator_address` (str "host:port"), `num_processes` (int),
    `process_id` (int). Must run before any other JAX call. Returns True when (already)
    initialised. Safe to call twice.
    """
    global _DISTRIBUTED_STARTED
    parallel = config.get("parallel", None) if hasattr(config, "get") else None
    if not parallel or not parallel.get("multi_host", False):
        return False
    if _DISTRIBUTED_STARTED:
        return True
    kwargs = {}
    if parallel.get("coordinator_address", ""):
        kwargs["coordinator_address"] = parallel.coordinator_address
    for name in ("num_processes", "process_id"):
        value = parallel.get(name, -1)
        if value is not None and value >= 0:
            kwargs[name] = int(value)
    jax.distributed.initialize(**kwargs)
    _DISTRIBUTED_STARTED = True
    logging.info("jax.distributed up: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())
    return True
