"""A trained PPO teacher on disk, and loading it for rollout collection.

The format of a teacher on disk (`<teachers dir>/<task>/`: `policy/` and
`metadata.json`) and `save_teacher` are in `cpd_jax.rl.ppo.export`, which the PPO runner
writes through.

Loading imports only the network, the normaliser, the format and the checkpointer
(`cpd_jax.rl.ppo.networks`, `.normalizer`, `.export`), never the PPO training code
(`cpd_jax.rl.ppo.train`, `.runner`): collecting data from a teacher needs none of it.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cpd_jax import checkpointing
from cpd_jax.rl.ppo import networks
from cpd_jax.rl.ppo.export import METADATA_FILE, POLICY_DIR, teacher_dir
from cpd_jax.rl.ppo.normalizer import RunningStats, normalize_obs


@dataclasses.dataclass
class PPOTeacher:
    """A trained PPO teacher: deterministic action means for rollout collection."""

    task: str
    metadata: dict
    params: Any
    obs_stats: RunningStats
    _apply: Any = None

    @classmethod
    def load(cls, directory: str, task: str) -> "PPOTeacher":
        """`directory` is a runner workdir (with `teachers/<task>/`) or the teachers dir."""
        task_dir = teacher_dir(directory, task)
        with open(os.path.join(task_dir, METADATA_FILE)) as f:
            meta = json.load(f)
        payload = checkpointing.restore_tree(os.path.join(task_dir, POLICY_DIR))
        s = payload["obs_stats"]
        stats = RunningStats(mean=jnp.asarray(s["mean"]), var=jnp.asarray(s["var"]),
                             count=jnp.asarray(s["count"]))
        return cls(task=task, metadata=meta, params=payload["policy"], obs_stats=stats)

    def __post_init__(self):
        c = ml_collections.ConfigDict(self.metadata["ppo_config"])
        policy = networks.make_policy(c, self.metadata["action_size"])

        def action_mean(params, stats, obs):
            obs_n = normalize_obs(stats, obs, c.obs_clip, c.normalize_observations)
            return jnp.tanh(policy.apply(params, obs_n)[0])

        self._apply = jax.jit(action_mean)

    def action_mean(self, obs: np.ndarray) -> np.ndarray:
        """obs float32[B, D] -> deterministic action tanh(mean) float32[B, A]."""
        return np.asarray(self._apply(self.params, self.obs_stats,
                                      jnp.asarray(obs, jnp.float32)))
