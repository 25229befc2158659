"""The one env API every backend provides (reference CPU MuJoCo, MJX).

Teachers, rollout collection and evaluation talk to a `BatchedEnv`; they never import
a backend. A backend is chosen by name with `cpd_jax.envs.make_env(backend, tasks)`.

Host-side API (numpy in, numpy out) so scripted teachers and the student can drive
either backend. The MJX backend additionally exposes its pure-function
`reset(key, task_params) -> State` / `step(State, action) -> State` for code that runs
entirely inside `jit` (PPO teachers).
"""

import dataclasses
from typing import Protocol, Sequence

import numpy as np


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
        """Resets env i to task variation `variations[i]` (index into the MT50(seed=0)
        variations of its task, 0..49). Returns obs float32[B, 39]."""

    def step(self, actions: np.ndarray) -> Transition:
        """Steps every env with actions float32[B, 4] (clipped to [-1, 1])."""
