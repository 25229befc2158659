"""A tiny analytic JAX env for tests and CPU smoke runs: a 2-D point mass reaching a goal
(a functional `cpd_jax.envs.functional.Env`; the PPO runner's "point_mass" backend).

obs float32[4] = [position xy, goal - position xy]; action float32[2] in [-1, 1]
moves the point by `max_speed * action`; reward = -|goal - position| (dense, like
Meta-World's reach); success = distance < `success_radius`. No termination: the time
limit is PPO's `episode_length`, as for Meta-World. Tasks differ by where goals are
drawn (`goal_center`), so several tasks vmap through `with_task`.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.envs.functional import EnvState


@dataclasses.dataclass(frozen=True)
class PointMass:
    """Point mass reaching a goal drawn uniformly within `goal_radius` of
    `goal_center`; start drawn uniformly in [-start_range, start_range]^2."""

    goal_center: Any = (0.0, 0.0)  # float32[2]; may be a traced array (task params)
    goal_radius: float = 0.5
    start_range: float = 1.0
    max_speed: float = 0.2
    success_radius: float = 0.1
    observation_size: int = 4
    action_size: int = 2

    def with_task(self, task_params: jax.Array) -> "PointMass":
        """task_params float32[2]: the goal centre of this task."""
        return dataclasses.replace(self, goal_center=task_params)

    def _obs(self, pos, goal):
        return jnp.concatenate([pos, goal - pos]).astype(jnp.float32)

    def reset(self, key: jax.Array) -> EnvState:
        k_pos, k_goal = jax.random.split(key)
        pos = jax.random.uniform(k_pos, (2,), minval=-self.start_range, maxval=self.start_range)
        goal = jnp.asarray(self.goal_center, jnp.float32) + jax.random.uniform(
            k_goal, (2,), minval=-self.goal_radius, maxval=self.goal_radius)
        zero = jnp.zeros((), jnp.float32)
        return EnvState(obs=self._obs(pos, goal), reward=zero, done=zero,
                        info={"success": zero}, pipeline_state=(pos, goal))

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        pos, goal = state.pipeline_state
        pos = pos + self.max_speed * jnp.clip(action, -1.0, 1.0)
        dist = jnp.linalg.norm(goal - pos)
        return EnvState(obs=self._obs(pos, goal), reward=-dist, done=jnp.zeros((), jnp.float32),
                        info={"success": (dist < self.success_radius).astype(jnp.float32)},
                        pipeline_state=(pos, goal))


# Toy "task stream" for runner tests: task name -> goal centre.
TOY_TASKS: dict[str, tuple[float, float]] = {
    "point-mass-center": (0.0, 0.0),
    "point-mass-east": (1.0, 0.0),
    "point-mass-north": (0.0, 1.0),
    "point-mass-west": (-1.0, 0.0),
}


def toy_task_params(tasks) -> np.ndarray:
    """float32[N, 2] goal centres of toy task names."""
    return np.asarray([TOY_TASKS[t] for t in tasks], np.float32)
