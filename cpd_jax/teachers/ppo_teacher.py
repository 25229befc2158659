"""A trained PPO teacher on disk, and loading it for rollout collection.

Layout of one teacher, `<teachers dir>/<task>/` (the runner writes `<workdir>/teachers/`):
* `policy/`: the policy params and the observation normaliser (`checkpointing.save_tree`);
* `metadata.json`: task, obs/action sizes, the `ppo` config it was trained with (which
  rebuilds the network), env steps and success.

Loading imports only the network, the normaliser and the checkpointer, never the PPO
training code: collecting data from a teacher needs none of it.
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
from cpd_jax.teachers import networks
from cpd_jax.teachers.normalizer import RunningStats, normalize_obs

TEACHERS_DIR = "teachers"
POLICY_DIR = "policy"
METADATA_FILE = "metadata.json"


def save_teacher(task_dir: str, policy_params, obs_stats: RunningStats, metadata: dict) -> None:
    """Writes one teacher: `policy_params` (of `networks.make_policy`), `obs_stats` and
    `metadata` (JSON; must hold task, obs_size, action_size and ppo_config)."""
    os.makedirs(task_dir, exist_ok=True)
    payload = {"policy": policy_params,
               "obs_stats": {"mean": obs_stats.mean, "var": obs_stats.var,
                             "count": obs_stats.count}}
    checkpointing.save_tree(os.path.join(task_dir, POLICY_DIR),
                            jax.tree_util.tree_map(np.asarray, payload))
    with open(os.path.join(task_dir, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=1)


def teacher_dir(directory: str, task: str) -> str:
    """`task`'s teacher dir under a runner workdir (`teachers/<task>/`) or a teachers dir."""
    in_workdir = os.path.join(directory, TEACHERS_DIR, task)
    return in_workdir if os.path.isdir(in_workdir) else os.path.join(directory, task)


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
