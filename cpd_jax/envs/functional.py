"""The functional env API (brax / playground style) of code that runs entirely inside
`jit`: an `Env` has pure `reset(key) -> EnvState` and `step(EnvState, action) ->
EnvState` on one unbatched env; `bind_task(env, task_params)` specialises it to a task's
parameters (which may be traced, so tasks vmap). `cpd_jax.rl.ppo` trains on it;
`cpd_jax.envs.toy_envs` (a point mass) and `cpd_jax.envs.mjx_adapter` (the MJX port)
implement it.

A module of its own, which `cpd_jax.envs` does not import: it needs jax and flax, and
the host API (`api.py`) is imported by every command before flags are parsed.
"""

from typing import Any, Protocol

import flax.struct as struct
import jax


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
