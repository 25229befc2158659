"""`MjxHostEnv`: the host-side `BatchedEnv` protocol (numpy in/out) over MJX.

Envs are grouped by task; each group is one jitted, vmapped reset/step of that task's
`SawyerEnv` (no auto-reset: the protocol resets explicitly, like `ReferenceEnv`).
Compiled functions are cached per (task, group size) for the whole process.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.envs import variations as variations_lib
from cpd_jax.envs.api import Transition
from cpd_jax.envs.mjx import sawyer
from cpd_jax.envs.tasks import MAX_EPISODE_STEPS, OBS_DIM, validate_tasks


@functools.lru_cache(maxsize=None)
def get_env(task: str) -> sawyer.SawyerEnv:
    """One SawyerEnv per task per process (building it runs the metaworld reset once)."""
    return sawyer.SawyerEnv(task)


@functools.lru_cache(maxsize=None)
def batched_fns(task: str):
    """(reset(keys[B], rand_vecs[B, d]), step(states, actions[B, 4])), jitted + vmapped."""
    env = get_env(task)
    return jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))


class MjxHostEnv:
    """`cpd_jax.envs.api.BatchedEnv` on MJX; env i runs tasks[i]."""

    def __init__(self, tasks: Sequence[str], seed: int = 0):
        self.tasks = validate_tasks(tasks)
        self._groups: dict[str, np.ndarray] = {}
        for i, t in enumerate(self.tasks):
            self._groups.setdefault(t, [])
            self._groups[t].append(i)
        self._groups = {t: np.asarray(ix) for t, ix in self._groups.items()}
        self._states: dict = {}
        self._key = jax.random.PRNGKey(seed)
        self._steps = np.zeros(len(self.tasks), np.int64)

    @property
    def states(self) -> dict:
        """{task: batched sawyer.State} (tests read physics from it)."""
        return self._states

    def reset(self, variations: Sequence[int]) -> np.ndarray:
        if len(variations) != len(self.tasks):
            raise ValueError(f"need {len(self.tasks)} variations, got {len(variations)}")
        obs = np.empty((len(self.tasks), OBS_DIM), np.float32)
        for task, ix in self._groups.items():
            reset_fn, _ = batched_fns(task)
            rvs = np.stack([variations_lib.rand_vec(task, int(variations[i])) for i in ix])
            self._key, sub = jax.random.split(self._key)
            st = reset_fn(jax.random.split(sub, len(ix)), jnp.asarray(rvs, jnp.float32))
            self._states[task] = st
            obs[ix] = np.asarray(st.obs)
        self._steps[:] = 0
        return obs

    def close(self) -> None:
        self._states = {}

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        del active  # a batched MJX step costs the same with or without the finished envs
        if not self._states:
            raise RuntimeError("call reset() first")
        if np.any(self._steps >= MAX_EPISODE_STEPS):
            raise RuntimeError(f"an env is past {MAX_EPISODE_STEPS} steps: call reset() first")
        actions = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        n = len(self.tasks)
        obs = np.empty((n, OBS_DIM), np.float32)
        reward = np.empty(n, np.float32)
        success = np.empty(n, bool)
        for task, ix in self._groups.items():
            _, step_fn = batched_fns(task)
            st = step_fn(self._states[task], jnp.asarray(actions[ix]))
            self._states[task] = st
            obs[ix], reward[ix] = np.asarray(st.obs), np.asarray(st.reward)
            success[ix] = np.asarray(st.info["success"]) > 0
        self._steps += 1
        return Transition(obs=obs, reward=reward, success=success,
                          truncated=self._steps >= MAX_EPISODE_STEPS)
