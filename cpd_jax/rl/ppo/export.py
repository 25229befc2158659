"""The on-disk format of a trained PPO policy (a teacher), written by the runner and
read by `cpd_jax.teachers.ppo_teacher.PPOTeacher.load`.

Layout of one teacher, `<teachers dir>/<task>/` (the runner writes `<workdir>/teachers/`):
* `policy/`: the policy params and the observation normaliser (`checkpointing.save_tree`);
* `metadata.json`: task, obs/action sizes, the `ppo` config it was trained with (which
  rebuilds the network), env steps and success.

This module imports only the checkpointer and the normaliser (no training code), so the
loading side may import it.
"""

import json
import os

import jax
import numpy as np

from cpd_jax import checkpointing
from cpd_jax.rl.ppo.normalizer import RunningStats

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
