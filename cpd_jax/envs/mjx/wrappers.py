"""Batched env functions: vmap over envs, auto-reset at truncation, episode statistics.

Everything here is pure and runs inside `jit`. Meta-World truncates every episode at
exactly 500 steps, so envs that were reset together are truncated together; the
auto-reset is therefore a batch-level `lax.cond(any(done), ...)` (the reset, one
`mjx.forward` per env, only runs on the steps where some env finished) followed by a
per-env select, instead of computing a reset for every env on every step. That
cond + select is `cpd_jax.envs.functional.auto_reset`, shared with PPO's rollout; what
stays here is what a restart means for this wrapper (fresh rng, the episode statistics
kept, this step's reward/done/truncated kept).

The reset program still has to be compiled into the step, which lengthens its XLA
compile (BUILD_NOTES has the measurement). Passing a start-state pool (`step(..., reset_pool=...)`)
turns the restart into a gather and leaves it out of the compiled program.
"""

import jax
import jax.numpy as jnp

from cpd_jax.envs import functional
from cpd_jax.envs.mjx.sawyer import SawyerEnv, State

# info keys the wrapper maintains (all float32[B] / int32[B]):
#   episode_return / episode_success: running return and success-at-any-step of the
#     current episode; last_return / last_success: those of the last finished episode;
#   episodes: finished episodes so far; final_obs: float32[B, 39] obs of the step that
#     truncated (the returned `obs` is already the next episode's first obs).
_STAT_KEYS = ("episode_return", "episode_success", "last_return", "last_success")


def _with_stats(state: State, stats: dict) -> State:
    return state.replace(info={**state.info, **stats})


class BatchedEnv:
    """B envs of one task. reset(keys[B]) / reset_to(keys[B], rand_vecs[B, d]) /
    step(state, actions float32[B, 4], reset_pool=None); all states are batched `State`s."""

    def __init__(self, env: SawyerEnv, auto_reset: bool = True):
        self.env = env
        self.auto_reset = auto_reset

    def init_stats(self, state: State) -> State:
        """Adds the zeroed episode statistics to a batched `State` fresh from reset."""
        z = jnp.zeros_like(state.reward)
        stats = {k: z for k in _STAT_KEYS}
        stats["episodes"] = jnp.zeros_like(state.step_count)
        stats["final_obs"] = state.obs
        return _with_stats(state, stats)

    def reset(self, keys: jax.Array) -> State:
        """Fresh training variations sampled from the task's reset space."""
        return self.init_stats(jax.vmap(self.env.reset_random)(keys))

    def reset_to(self, keys: jax.Array, rand_vecs: jax.Array) -> State:
        """Given variations rand_vecs float32[B, d] (e.g. the MT50 evaluation ones)."""
        return self.init_stats(jax.vmap(self.env.reset)(keys, rand_vecs))

    def step(self, state: State, actions: jax.Array, reset_pool: State | None = None) -> State:
        """One env step of every env; envs whose episode ended restart in the same call.

        reset_pool: optional State with a leading [P] axis (e.g. `host_reset.
        host_reset_states` or `mjx_adapter.make_reset_pool`). Given one, a restart is a
        gather of a uniformly drawn pool entry instead of `reset_random` (an
        `mjx.forward` per env), which takes the reset program out of the compiled step.
        """
        nxt = jax.vmap(self.env.step)(state, actions)
        ep_ret = state.info["episode_return"] + nxt.reward
        ep_succ = jnp.maximum(state.info["episode_success"], nxt.info["success"])
        done = nxt.done
        stats = {
            "episode_return": jnp.where(done, 0.0, ep_ret),
            "episode_success": jnp.where(done, 0.0, ep_succ),
            "last_return": jnp.where(done, ep_ret, state.info["last_return"]),
            "last_success": jnp.where(done, ep_succ, state.info["last_success"]),
            "episodes": state.info["episodes"] + done.astype(jnp.int32),
            "final_obs": nxt.obs,
        }
        nxt = _with_stats(nxt, stats)
        if not self.auto_reset:
            return nxt

        def fresh_states(s: State) -> State:
            keys = jax.vmap(lambda k: jax.random.split(k, 2))(s.rng)
            fresh = self._fresh_states(keys[:, 0], reset_pool)
            fresh = fresh.replace(rng=keys[:, 1], info={**s.info, **fresh.info})
            # keep this step's reward/done/truncated so the learner sees the truncation
            return fresh.replace(reward=s.reward, done=s.done, truncated=s.truncated)

        return functional.auto_reset(done, nxt, fresh_states)

    def _fresh_states(self, keys: jax.Array, reset_pool: State | None) -> State:
        """Batched start states [B], one per key: new variations, or pool entries."""
        if reset_pool is None:
            return jax.vmap(self.env.reset_random)(keys)
        return jax.vmap(draw_from_pool, in_axes=(0, None))(keys, reset_pool)


def draw_from_pool(key: jax.Array, pool: State) -> State:
    """One uniformly drawn entry of `pool` (a State with a leading [P] axis): a gather,
    so a restart from a pool compiles no reset program."""
    size = jax.tree_util.tree_leaves(pool)[0].shape[0]
    i = jax.random.randint(key, (), 0, size)
    return jax.tree_util.tree_map(lambda x: x[i], pool)


def make_batched(env: SawyerEnv, auto_reset: bool = True) -> BatchedEnv:
    return BatchedEnv(env, auto_reset)
