"""Scripted teachers: `metaworld.policies`' hand-written experts as action-mean teachers.

They reach ~0.98 mean success on MT25 and cost nothing to "train", which makes them
the honest fast teacher for testing distillation on a CPU.
"""

import numpy as np

from cpd_jax.envs.tasks import validate_tasks


class ScriptedTeacher:
    """Teacher for one task: `action_mean(obs float32[B, 39]) -> float32[B, 4]` in [-1, 1].

    The scripted policies are deterministic, so the "mean" is their action, clipped to
    the action box exactly as the env clips what it executes.
    """

    def __init__(self, task: str):
        from metaworld.policies import ENV_POLICY_MAP

        (self.task,) = validate_tasks([task])
        self._policy = ENV_POLICY_MAP[task]()

    def action_mean(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float64)
        actions = np.stack([self._policy.get_action(o) for o in obs])
        return np.clip(actions, -1.0, 1.0).astype(np.float32)
