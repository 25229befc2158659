"""Environments: one API (`api.BatchedEnv`), several backends chosen by name; and the
functional env protocol PPO trains on (`functional`: `Env`, `EnvState`, `bind_task`),
with its envs `toy_envs` (a point mass) and `mjx_adapter` (the MJX port)."""

from typing import Callable, Sequence

from cpd_jax.envs.api import BatchedEnv, Transition
from cpd_jax.envs.tasks import (ACTION_DIM, MAX_EPISODE_STEPS, MT10_TASKS, MT25_TASKS,
                                OBS_DIM, UnknownTaskError, task_id, validate_tasks)


def _make_reference(tasks: Sequence[str], **kwargs) -> BatchedEnv:
    from cpd_jax.envs.reference import ReferenceEnv
    return ReferenceEnv(tasks, **kwargs)


def _make_mjx(tasks: Sequence[str], **kwargs) -> BatchedEnv:
    from cpd_jax.envs.mjx import host_env  # imported lazily: compiling MJX is slow
    return host_env.MjxHostEnv(tasks, **kwargs)


BACKENDS: dict[str, Callable[..., BatchedEnv]] = {
    "reference": _make_reference,
    "mjx": _make_mjx,
}


def make_env(backend: str, tasks: Sequence[str], **kwargs) -> BatchedEnv:
    """A `BatchedEnv` of `backend` ("reference" or "mjx") with env i running tasks[i]."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown env backend {backend!r}; choose from {sorted(BACKENDS)}")
    return BACKENDS[backend](validate_tasks(tasks), **kwargs)


__all__ = ["ACTION_DIM", "BACKENDS", "BatchedEnv", "MAX_EPISODE_STEPS", "MT10_TASKS",
           "MT25_TASKS", "OBS_DIM", "Transition", "UnknownTaskError", "make_env",
           "task_id", "validate_tasks"]
