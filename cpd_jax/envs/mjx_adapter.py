"""Adapter: the MJX Meta-World port (`cpd_jax.envs.mjx`) as a functional env for PPO
(`cpd_jax.envs.functional.Env`).

The port's `SawyerEnv(task)` exposes pure `reset(key, rand_vec) -> State`,
`reset_random(key) -> State` and `step(State, action) -> State`; its State has
`.obs float32[39]`, `.reward float32[]`, `.done bool[]` (500-step truncation) and
`.info['success']`, which is all PPO reads. This module only maps `reset(key)` to a
choice of variation; the port itself is not touched.

One MJX program per task: tasks have different MuJoCo models, so they cannot share a
vmapped step (the runner loops over tasks).

Reset pool. `mjx.forward` inside `reset` costs as much XLA compile time as a quarter of
the step (reach-v3, batch 256, this CPU: reset 39 s vs step 143 s), and the PPO program
holds a reset in the rollout's auto-reset, in evaluation and in `init`. Every
"mt50" reset is one of 50 deterministic states, so they are computed once by their
own small jitted program (`make_reset_pool`) and passed to PPO as the env's task
params (`with_task(pool)`); a reset inside the PPO program is then a gather. For
"random" variations the pool holds `pool_size` fresh variations drawn once.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.envs.tasks import ACTION_DIM, OBS_DIM

VARIATION_MODES = ("mt50", "random")


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity (holds arrays):
class MjxTaskEnv:  # the runner caches compiled functions per env object
    """`cpd_jax.envs.functional.Env` over one MJX Meta-World task.

    variations: "mt50" draws each episode's variation uniformly from the task's 50
    MT50(seed=0) rand_vecs (the training goals rollout collection uses; the held-out
    goals of `cpd_jax.envs.variations` are never drawn);
    "random" samples a fresh variation from the task's reset space.
    """

    sawyer: Any  # cpd_jax.envs.mjx.sawyer.SawyerEnv
    rand_vecs: Any = None  # float32[50, d] for "mt50"
    variations: str = "mt50"
    observation_size: int = OBS_DIM
    action_size: int = ACTION_DIM
    reset_pool: Any = None  # State with a leading [P] axis (`with_task`), or None

    def with_task(self, reset_pool) -> "MjxTaskEnv":
        """This env resetting to a uniformly drawn state of `reset_pool` (State[P])."""
        return dataclasses.replace(self, reset_pool=reset_pool)

    def reset(self, key: jax.Array):
        if self.reset_pool is not None:
            from cpd_jax.envs.mjx.wrappers import draw_from_pool  # lazy, as make_mjx_env
            return draw_from_pool(key, self.reset_pool)
        if self.variations == "random":
            return self.sawyer.reset_random(key)
        k_var, k_reset = jax.random.split(key)
        rv = jnp.asarray(self.rand_vecs)
        return self.sawyer.reset(k_reset, rv[jax.random.randint(k_var, (), 0, rv.shape[0])])

    def step(self, state, action: jax.Array):
        return self.sawyer.step(state, action)


def make_mjx_env(task: str, variations: str = "mt50") -> MjxTaskEnv:
    """Builds the port's env for `task` (host work: model edits, reset cache)."""
    if variations not in VARIATION_MODES:
        raise ValueError(f"variations must be one of {VARIATION_MODES}, got {variations!r}")
    from cpd_jax.envs.mjx import sawyer  # lazy: the port is optional at import time

    rand_vecs = None
    if variations == "mt50":
        from cpd_jax.envs import variations as variations_lib
        rand_vecs = np.asarray(variations_lib.train_rand_vecs(task), np.float32)
    return MjxTaskEnv(sawyer=sawyer.SawyerEnv(task), rand_vecs=rand_vecs, variations=variations)


def make_reset_pool(env: MjxTaskEnv, key: jax.Array, pool_size: int = 1024):
    """The start states PPO resets to, State with a leading [P] axis (host call; one
    small jitted program). "mt50": the task's 50 variations in order (P = 50, exactly
    the states `reset` would produce); "random": `pool_size` fresh variations."""
    keys = jax.random.split(key, pool_size if env.variations == "random" else
                            len(env.rand_vecs))
    if env.variations == "random":
        return jax.jit(jax.vmap(env.sawyer.reset_random))(keys)
    return jax.jit(jax.vmap(env.sawyer.reset))(keys, jnp.asarray(env.rand_vecs))
