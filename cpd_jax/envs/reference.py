"""Reference backend: the `metaworld` package on CPU MuJoCo, one env object per slot.

It is the fidelity oracle for the MJX port and the backend that runs anywhere.
"""

import pickle
from typing import Sequence

import numpy as np

from cpd_jax.envs import variations as variations_lib
from cpd_jax.envs.api import Transition
from cpd_jax.envs.tasks import MAX_EPISODE_STEPS, OBS_DIM, validate_tasks


def make_metaworld_env(task: str):
    """A fresh, fully observable (goal in obs) metaworld env for `task`, task not set."""
    from metaworld import env_dict

    validate_tasks([task])
    return env_dict.ALL_V3_ENVIRONMENTS[task]()


def set_variation(env, task: str, variation: int) -> None:
    """Sets `env` to variation `variation` of `task` exactly as metaworld.MT50 would."""
    import metaworld
    from metaworld import env_dict

    kwargs = dict(env_dict.MT50_V3_ARGS_KWARGS[task]["kwargs"])
    kwargs.pop("task_id", None)
    kwargs.update(rand_vec=variations_lib.rand_vec(task, variation),
                  env_cls=env_dict.ALL_V3_ENVIRONMENTS[task], partially_observable=False)
    env.set_task(metaworld.Task(env_name=task, data=pickle.dumps(kwargs)))


# Idle metaworld envs per task. Building one loads and compiles its MuJoCo model (~0.3 s),
# which made building the envs of an evaluation cost more than running it; `reset` sets
# the variation and resets the simulation, so a released env is as good as new. Each env
# holds ~25 MB (its model and data arena), so at most MAX_IDLE_ENVS are kept.
MAX_IDLE_ENVS = 100
_IDLE: dict[str, list] = {}


def _acquire(task: str):
    return _IDLE[task].pop() if _IDLE.get(task) else make_metaworld_env(task)


def _release(task: str, env) -> None:
    if sum(len(v) for v in _IDLE.values()) < MAX_IDLE_ENVS:
        _IDLE.setdefault(task, []).append(env)


class ReferenceEnv:
    """`BatchedEnv` over B `metaworld` envs (see `cpd_jax.envs.api`). `close()` hands the
    envs (up to MAX_IDLE_ENVS) to later `ReferenceEnv`s of the same tasks."""

    def __init__(self, tasks: Sequence[str]):
        self.tasks = validate_tasks(tasks)
        self._envs = [_acquire(t) for t in self.tasks]
        self._steps = np.zeros(len(self.tasks), np.int64)

    def close(self) -> None:
        for task, env in zip(self.tasks, self._envs):
            _release(task, env)
        self._envs = []

    @property
    def metaworld_envs(self) -> list:
        """The underlying metaworld env objects (tests read physics state from them)."""
        return self._envs

    def reset(self, variations: Sequence[int]) -> np.ndarray:
        if len(variations) != len(self.tasks):
            raise ValueError(f"need {len(self.tasks)} variations, got {len(variations)}")
        obs = np.empty((len(self.tasks), OBS_DIM), np.float32)
        for i, (env, task, var) in enumerate(zip(self._envs, self.tasks, variations)):
            set_variation(env, task, int(var))
            obs[i] = env.reset()[0]
        self._steps[:] = 0
        return obs

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        actions = np.clip(np.asarray(actions, np.float64), -1.0, 1.0)
        n = len(self.tasks)
        active = np.ones(n, bool) if active is None else np.asarray(active, bool)
        obs = np.zeros((n, OBS_DIM), np.float32)
        reward = np.zeros(n, np.float32)
        success = np.zeros(n, bool)
        for i in np.flatnonzero(active):
            if self._steps[i] >= MAX_EPISODE_STEPS:
                raise RuntimeError(f"env {i} ({self.tasks[i]}) is past {MAX_EPISODE_STEPS} "
                                   "steps: call reset() first")
            o, r, _, _, info = self._envs[i].step(actions[i])
            obs[i], reward[i], success[i] = o, r, bool(info["success"])
        self._steps += active
        return Transition(obs=obs, reward=reward, success=success,
                          truncated=self._steps >= MAX_EPISODE_STEPS)
