"""The one env API every backend provides (reference CPU MuJoCo, MJX), and the
functional env protocol of code that runs entirely inside `jit` (PPO training).

Teachers, rollout collection and evaluation talk to a `BatchedEnv`; they never import
a backend. A backend is chosen by name with `cpd_jax.envs.make_env(backend, tasks)`.

Host-side API (numpy in, numpy out) so scripted teachers and the student can drive
either backend. The MJX backend additionally exposes its pure-function
`reset(key, task_params) -> State` / `step(State, action) -> State` for code that runs
entirely inside `jit` (PPO teachers).

Functional API (brax / playground style): an `Env`
has pure `reset(key) -> EnvState` and `step(EnvState, action) -> EnvState` on one
unbatched env; `bind_task(env, task_params)` specialises it to a task's parameters
(which may be traced, so tasks vmap). `cpd_jax.rl.ppo` trains on it;
`cpd_jax.envs.toy_envs` (a point mass) and `cpd_jax.envs.mjx_adapter` (the MJX port)
implement it.
"""

import dataclasses
from typing import Any, Protocol, Sequence

import flax.struct as struct
import jax
import numpy as np

# ------------------------------------------------------------------------ host API


@dataclasses.dataclass(frozen=True)
class Transition:
    """What one batched env step returns.

    obs: float32[B, 39]; reward: float32[B]; success: bool[B] (Meta-World's
    `info["success"]` of this step); truncated: bool[B] (step count reached 500).
    """

    obs: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    truncated: np.ndarray


class BatchedEnv(Protocol):
    """B environments stepped together; env i runs task `tasks[i]`."""

    tasks: tuple[str, ...]

    def reset(self, variations: Sequence[int]) -> np.ndarray:
        """Resets env i to task variation `variations[i]` of its task (0..49 training
        goals, 50..99 held-out goals; `cpd_jax.envs.variations`). Returns obs
        float32[B, 39]."""

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        """Steps every env with actions float32[B, 4] (clipped to [-1, 1]).

        active: optional bool[B]; a backend may skip the envs where it is False (their
        entries of the returned Transition are then meaningless, and those envs must be
        reset before they are stepped again). The reference backend skips them, which
        is what makes evaluation stop paying for episodes that already succeeded.
        """

    def close(self) -> None:
        """Releases the envs; the env must not be used afterwards (the reference
        backend hands them to later envs of the same tasks, which skips rebuilding)."""


# ------------------------------------------------------------------ functional API


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
