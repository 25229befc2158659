"""Task variations: the random vectors (object/goal positions) that fix an episode.

Variation e of task t is the e-th `Task` of `metaworld.MT50(seed=0).train_tasks` for t,
the protocol of the reference table in `shared/reference/`. Building MT50 takes ~20 s,
so the vectors are cached on disk (`$CPD_JAX_CACHE` or `~/.cache/cpd_jax`).
"""

import functools
import os
import pathlib
import pickle

import numpy as np

from cpd_jax.cache import cache_root
from cpd_jax.envs.tasks import MT25_TASKS, validate_tasks

NUM_VARIATIONS = 50  # metaworld's _N_GOALS
_CACHE_NAME = "mt50_seed0_rand_vecs_v1.npz"


def _cache_path() -> pathlib.Path:
    return cache_root() / _CACHE_NAME


def _compute_rand_vecs() -> dict[str, np.ndarray]:
    import metaworld  # heavy import, only on a cache miss

    vecs: dict[str, list[np.ndarray]] = {t: [] for t in MT25_TASKS}
    for task in metaworld.MT50(seed=0).train_tasks:
        if task.env_name in vecs:
            vecs[task.env_name].append(pickle.loads(task.data)["rand_vec"])
    return {t: np.stack(v).astype(np.float64) for t, v in vecs.items()}


@functools.lru_cache(maxsize=1)
def all_rand_vecs() -> dict[str, np.ndarray]:
    """{task: float64[50, d_task]} for every MT25 task (d_task is 3 or 6)."""
    path = _cache_path()
    if path.exists():
        with np.load(path) as f:
            return {t: f[t] for t in MT25_TASKS}
    vecs = _compute_rand_vecs()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **vecs)
    os.replace(tmp, path)  # atomic: concurrent processes never see half a file
    return vecs


def rand_vec(task: str, variation: int) -> np.ndarray:
    """float64[d_task]: the random vector of `variation` (0..49) of `task`."""
    validate_tasks([task])
    if not 0 <= variation < NUM_VARIATIONS:
        raise ValueError(f"variation must be in [0, {NUM_VARIATIONS}), got {variation}")
    return all_rand_vecs()[task][variation]
