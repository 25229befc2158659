"""The functional env API (brax / playground style) of code that runs entirely inside
`jit`: an `Env` has pure `reset(key) -> EnvState` and `step(EnvState, action) ->
EnvState` on one unbatched env; `bind_task(env, task_params)` specialises it to a task's
parameters (which may be traced, so tasks vmap). `cpd_jax.rl.ppo` trains on it;
`cpd_jax.envs.toy_envs` (a point mass) and `cpd_jax.envs.mjx_adapter` (the MJX port)
implement it. `auto_reset` is the one auto-reset of batched envs (PPO's rollout and the
MJX port's `envs.mjx.wrappers.BatchedEnv` both use it).

A module of its own, which `cpd_jax.envs` does not import: it needs jax and flax, and
the host API (`api.py`) is imported by every command before flags are parsed.
"""

from typing import Any, Callable, Protocol, TypeVar

import flax.struct as struct
import jax
import jax.numpy as jnp


@struct.dataclass
class EnvState:
    """One env's state (brax/playground style); batch axes are added by vmap.

    obs: float32[D]; reward: float32[]; done: float32[] (1.0 = terminated);
    info: dict with at least 'success' float32[] (1.0 = task solved at this step);
    pipeline_state: whatever the env needs internally (physics data, goal, ...).
    """

    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    info: dict
    pipeline_state: Any = None


class Env(Protocol):
    """Functional env: pure reset/step on a single (unbatched) env.

    Envs whose dynamics depend on per-task parameters (a goal region, an MJX model
    variant, ...) also provide `with_task(task_params) -> Env`; `task_params` is a
    pytree that may be traced, so tasks can be vmapped.
    """

    observation_size: int
    action_size: int

    def reset(self, key: jax.Array) -> EnvState: ...

    def step(self, state: EnvState, action: jax.Array) -> EnvState: ...


def bind_task(env: Env, task_params: Any) -> Env:
    """The env specialised to `task_params` (None: the env itself)."""
    return env if task_params is None else env.with_task(task_params)


S = TypeVar("S")


def tree_where(cond: jax.Array, a: Any, b: Any) -> Any:
    """Leafwise where(cond, a, b); cond broadcasts against each leaf's leading axes."""
    def sel(x, y):
        c = jnp.reshape(cond, cond.shape + (1,) * (x.ndim - cond.ndim))
        return jnp.where(c, x, y)
    return jax.tree_util.tree_map(sel, a, b)


def auto_reset(done: jax.Array, state: S, fresh: Callable[[S], S]) -> S:
    """Restarts the envs whose episode ended: env i of the batched `state` becomes env i
    of `fresh(state)` where done[i] (bool[B]), and stays as it is elsewhere.

    `fresh(state)` returns a batch of start states (a reset per env, a draw from a
    reset pool, ...; it may keep fields of `state`, e.g. this step's reward). It runs
    only on the steps where some env is done: `lax.cond(any(done), ...)`, cheap when
    episodes end together (Meta-World truncates all at 500 steps); under a vmap the
    cond becomes a select and both branches run. What `fresh` draws and any episode
    statistics are the caller's.
    """
    return jax.lax.cond(jnp.any(done), lambda s: tree_where(done, fresh(s), s),
                        lambda s: s, state)
