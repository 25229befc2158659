"""The MJX adapter against a stand-in with the port's API (the real port's compile is
too slow for the default suite; `benchmarks/ppo_reach.py` runs PPO on it)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.envs import mjx_adapter, toy_envs
from cpd_jax.rl.ppo import train as ppo
from tests.helpers import small_ppo_config


@dataclasses.dataclass(frozen=True)
class FakeSawyer:
    """The port's SawyerEnv API (`reset(key, rand_vec)`, `reset_random(key)`,
    `step(state, action)`) over the point mass; rand_vec = goal xy."""

    base: toy_envs.PointMass = toy_envs.PointMass(goal_radius=0.0)

    def reset(self, key, rand_vec):
        return self.base.with_task(jnp.asarray(rand_vec, jnp.float32)).reset(key)

    def reset_random(self, key):
        return self.reset(key, jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0))

    def step(self, state, action):
        return self.base.step(state, action)


RAND_VECS = np.asarray([[0.5, 0.5], [-0.5, 0.5], [0.0, -0.7]], np.float32)


def test_mt50_mode_draws_goals_from_the_given_variations():
    env = mjx_adapter.MjxTaskEnv(sawyer=FakeSawyer(), rand_vecs=RAND_VECS,
                                 observation_size=4, action_size=2)
    s = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 64))
    goals = np.asarray(s.pipeline_state[1])
    dist = np.min(np.linalg.norm(goals[:, None] - RAND_VECS[None], axis=-1), axis=1)
    assert np.all(dist < 1e-6)
    assert len({tuple(g) for g in goals.round(4)}) == len(RAND_VECS)  # all used


def test_random_mode_and_ppo_update_through_adapter():
    env = mjx_adapter.MjxTaskEnv(sawyer=FakeSawyer(), variations="random",
                                 observation_size=4, action_size=2)
    fns = ppo.make_ppo(small_ppo_config(), env)
    state, m = jax.jit(fns.update)(fns.init(jax.random.PRNGKey(0)))
    assert int(state.env_steps) > 0 and np.isfinite(float(m["pg_loss"]))


def test_reset_pool_holds_each_variation_once_and_resets_draw_from_it():
    env = mjx_adapter.MjxTaskEnv(sawyer=FakeSawyer(), rand_vecs=RAND_VECS,
                                 observation_size=4, action_size=2)
    pool = mjx_adapter.make_reset_pool(env, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(pool.pipeline_state[1]), RAND_VECS)
    bound = env.with_task(pool)
    s = jax.vmap(bound.reset)(jax.random.split(jax.random.PRNGKey(1), 64))
    drawn = {tuple(g) for g in np.asarray(s.pipeline_state[1]).round(4)}
    assert drawn == {tuple(g) for g in RAND_VECS.round(4)}
    random_env = dataclasses.replace(env, variations="random")
    random_pool = mjx_adapter.make_reset_pool(random_env, jax.random.PRNGKey(0), pool_size=7)
    assert np.asarray(random_pool.pipeline_state[1]).shape == (7, 2)


def test_ppo_trains_on_the_pool_as_task_params():
    env = mjx_adapter.MjxTaskEnv(sawyer=FakeSawyer(), rand_vecs=RAND_VECS,
                                 observation_size=4, action_size=2)
    pool = mjx_adapter.make_reset_pool(env, jax.random.PRNGKey(0))
    fns = ppo.make_ppo(small_ppo_config(), env)
    state, m = jax.jit(fns.update)(fns.init(jax.random.PRNGKey(0), pool))
    goals = np.asarray(state.env_state.pipeline_state[1])
    dist = np.min(np.linalg.norm(goals[:, None] - RAND_VECS[None], axis=-1), axis=1)
    assert np.all(dist < 1e-6) and np.isfinite(float(m["pg_loss"]))


def test_bad_variation_mode():
    with pytest.raises(ValueError):
        mjx_adapter.make_mjx_env("reach-v3", variations="nope")


def test_adapter_is_a_cache_key_by_identity():
    """The runner caches compiled functions per env object: an env holding arrays must
    be hashable, and an equal-looking copy (other arrays could differ) a different key."""
    env = mjx_adapter.MjxTaskEnv(sawyer=FakeSawyer(), rand_vecs=RAND_VECS)
    copy = dataclasses.replace(env)
    cache = {env: "compiled for env"}
    assert cache.get(env) == "compiled for env"
    assert cache.get(copy) is None and copy != env
