"""The one env API every backend provides (reference CPU MuJoCo, MJX).

Teachers, rollout collection and evaluation talk to a `BatchedEnv`; they never import
a backend. A backend is chosen by name with `cpd_jax.envs.make_env(backend, tasks)`.

Host-side API (numpy in, numpy out) so scripted teachers and the student can drive
either backend. The MJX backend additionally exposes its pure-function
`reset(key, task_params) -> State` / `step(State, action) -> State` for code that runs
entirely inside `jit` (PPO teachers).

The functional API of code that runs entirely inside `jit` is `cpd_jax.envs.functional`.
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
