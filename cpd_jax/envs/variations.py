"""Task variations: the random vectors (object/goal positions) that fix an episode.

Two disjoint sets of goals, one index space per task (0..99):

  0..49    training goals: the 50 `Task`s of `metaworld.MT50(seed=0).train_tasks` for the
           task (the goals Meta-World's MT benchmarks train on, and the protocol of the
           reference table in `shared/reference/`).
  50..99   held-out goals: the goals `metaworld.MT50(seed=1)` draws for the task (the same
           distribution, a separate random stream), then those of seed 2, 3, ... if
           needed, skipping every draw closer than MIN_GOAL_SEPARATION to a training goal
           or to an earlier held-out goal, until there are 50. A goal 0.3 micrometres
           from a training goal is a different draw but the same episode (drawer-open's
           goal varies along one axis, and seed 1 draws such a near-twin), so "held-out"
           is checked by distance, not by identity.

Training data never uses the held-out goals (`cpd_jax.evaluation.protocol` checks it for
every run), so "held-out" is disjoint by construction, with as many held-out goals as
training goals. Building an MT50 takes ~20 s, so the vectors are cached on disk
(`$CPD_JAX_CACHE` or `~/.cache/cpd_jax`).
"""

import functools
import os
import pathlib
import pickle

import numpy as np

from cpd_jax.cache import cache_root
from cpd_jax.envs.tasks import MT25_TASKS, validate_tasks

GOALS_PER_SOURCE = 50  # metaworld's _N_GOALS
TRAIN_SEED = 0  # MT50 seed of the training goals (variations 0..49)
HELDOUT_SEED = 1  # first MT50 seed the held-out goals (variations 50..99) come from
FIRST_HELDOUT = GOALS_PER_SOURCE
NUM_VARIATIONS = 2 * GOALS_PER_SOURCE
# Two goals closer than this (max abs difference of their vectors, metres) are the same
# goal: 0.1 mm, far below any success threshold of Meta-World (>= 5 mm).
MIN_GOAL_SEPARATION = 1e-4
_CACHE_NAME = f"mt50_train{TRAIN_SEED}_heldout{HELDOUT_SEED}_rand_vecs_v2.npz"


def _cache_path() -> pathlib.Path:
    return cache_root() / _CACHE_NAME


def _mt50_rand_vecs(seed: int) -> dict[str, np.ndarray]:
    import metaworld  # heavy import, only on a cache miss

    vecs: dict[str, list[np.ndarray]] = {t: [] for t in MT25_TASKS}
    for task in metaworld.MT50(seed=seed).train_tasks:
        if task.env_name in vecs:
            vecs[task.env_name].append(pickle.loads(task.data)["rand_vec"])
    return {t: np.stack(v).astype(np.float64) for t, v in vecs.items()}


def separated(vec: np.ndarray, others: np.ndarray) -> bool:
    """True if `vec` float[d] is at least MIN_GOAL_SEPARATION from every row of
    `others` float[n, d] (max abs difference)."""
    return len(others) == 0 or float(np.abs(others - vec).max(-1).min()) >= MIN_GOAL_SEPARATION


def _compute_rand_vecs() -> dict[str, np.ndarray]:
    train = _mt50_rand_vecs(TRAIN_SEED)
    heldout = {t: [] for t in MT25_TASKS}
    seed = HELDOUT_SEED
    while any(len(v) < GOALS_PER_SOURCE for v in heldout.values()):
        for t, draws in _mt50_rand_vecs(seed).items():
            for vec in draws:
                if (len(heldout[t]) < GOALS_PER_SOURCE and separated(vec, train[t])
                        and separated(vec, np.asarray(heldout[t]).reshape(-1, len(vec)))):
                    heldout[t].append(vec)
        seed += 1
    return {t: np.concatenate([train[t], np.stack(heldout[t])]) for t in MT25_TASKS}


@functools.lru_cache(maxsize=1)
def all_rand_vecs() -> dict[str, np.ndarray]:
    """{task: float64[100, d_task]} for every MT25 task (d_task is 3 or 6): rows 0..49
    the training goals, rows 50..99 the held-out goals."""
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


def is_heldout(variation: int) -> bool:
    """True for the held-out goals (50..99), False for the training goals (0..49)."""
    return variation >= FIRST_HELDOUT


def train_rand_vecs(task: str) -> np.ndarray:
    """float64[50, d_task]: the training goals of `task` (variations 0..49)."""
    validate_tasks([task])
    return all_rand_vecs()[task][:FIRST_HELDOUT]


def rand_vec(task: str, variation: int) -> np.ndarray:
    """float64[d_task]: the random vector of `variation` (0..99) of `task`."""
    validate_tasks([task])
    if not 0 <= variation < NUM_VARIATIONS:
        raise ValueError(f"variation must be in [0, {NUM_VARIATIONS}) (0..49 training goals, "
                         f"50..99 held-out goals), got {variation}")
    return all_rand_vecs()[task][variation]
