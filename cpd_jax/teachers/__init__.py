"""Teachers give the action mean for a batch of observations of one task.

Every teacher has `task` and `action_mean(obs float32[B, 39]) -> float32[B, 4]`.
`make_teacher(config.teacher, task)` picks the kind by config, so PPO teachers replace
scripted ones by one field.
"""

from typing import Protocol

import numpy as np


class Teacher(Protocol):
    task: str

    def action_mean(self, obs: np.ndarray) -> np.ndarray:
        ...


def make_teacher(teacher_config, task: str) -> Teacher:
    """`teacher_config.kind`: "scripted" (metaworld.policies) or "ppo" (a trained
    checkpoint under `teacher_config.checkpoint_dir`)."""
    kind = teacher_config.kind
    if kind == "scripted":
        from cpd_jax.teachers.scripted import ScriptedTeacher
        return ScriptedTeacher(task)
    if kind == "ppo":
        from cpd_jax.teachers.ppo_teacher import PPOTeacher  # no PPO training code
        return PPOTeacher.load(teacher_config.checkpoint_dir, task)
    raise ValueError(f"unknown teacher kind {kind!r}; choose 'scripted' or 'ppo'")
