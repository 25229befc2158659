"""The stage's task encoder (contrastive task context, paper §4.3): the windows it
embeds, its continual training, and the embedding function the student's input uses."""

import jax
import numpy as np

from cpd_jax.data.rollouts import Trajectories
from cpd_jax.envs import MT25_TASKS
from cpd_jax.student import task_embedding


def _shifted(x):
    """x[:, t-1] at step t (zeros at t=0): what the agent has seen before acting at t."""
    return np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def encoder_windows(config, trajectories: list[Trajectories]):
    """(Windows of (o_t, a_{t-1}, r_{t-1}) over the student's window length, task id of
    each window int[N]): the history the student's context sees at evaluation, where a_t
    is not known yet."""
    windows, ids = [], []
    for traj in trajectories:
        w, _ = task_embedding.make_windows(traj.obs, _shifted(traj.actions),
                                           _shifted(traj.rewards), config.student.seq_len,
                                           length=traj.lengths)
        windows.append(w)
        ids.append(np.full(len(w.valid), traj.task_id))
    return task_embedding.Windows(*(np.concatenate(f) for f in zip(*windows))), np.concatenate(ids)


def train_encoder(config, trajectories: list[Trajectories], key, previous=None,
                  old_tasks=()) -> tuple[dict, dict]:
    """Task encoder (InfoNCE, §4.3) for a stage: fresh at stage 1; later, warm-started
    from `previous` with old tasks' windows (replay) anchored at their previous z.

    Returns (encoder params, {old task name: mean 1 - cos(z_after, z_before) over its
    windows}), the drift of old tasks' embeddings over this stage.
    """
    windows, ids = encoder_windows(config, trajectories)
    enc_config = task_embedding.TaskEncoderConfig.from_config(config.task_encoder)
    old = np.isin(ids, [MT25_TASKS.index(t) for t in old_tasks])
    if previous is None or not old.any():
        return task_embedding.train_task_encoder(key, windows, ids, enc_config,
                                                 init=previous), {}
    old_windows = task_embedding.Windows(*(f[old] for f in windows))
    z_before = jax.jit(task_embedding.embed)(previous, *old_windows)
    encoder = task_embedding.train_task_encoder(key, windows, ids, enc_config, init=previous,
                                                anchor=(old_windows, z_before))
    z_after = jax.jit(task_embedding.embed)(encoder, *old_windows)
    distance = np.asarray(task_embedding.cosine_distance(z_after, z_before))
    return encoder, {MT25_TASKS[int(t)]: float(distance[ids[old] == t].mean())
                     for t in np.unique(ids[old])}


def embed_fn_for(encoder):
    """History -> z float32[B, Z] with the encoder's params (None without an encoder)."""
    if encoder is None:
        return None
    return lambda h: task_embedding.embed(encoder, h.obs, h.prev_actions, h.prev_rewards,
                                          h.valid)
