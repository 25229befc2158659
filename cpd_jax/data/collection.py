"""Teacher data on disk: where it lives, and collect-or-load of a task's rollouts on the
training goals or on held-out goals (one process, or its share on several).

  <data dir>/<task>.npz|json                 rollouts on the training goals
  <data dir>/heldout_goals/<task>.npz|json   rollouts on held-out goals (held-out MSE)
"""

import pathlib
import time

import jax
from absl import logging

from cpd_jax import parallel, progress
from cpd_jax.data import rollouts
from cpd_jax.envs import make_env
from cpd_jax.envs import variations as variations_lib
from cpd_jax.evaluation import protocol
from cpd_jax.teachers import make_teacher


def data_dir(config, workdir) -> pathlib.Path:
    """Where teacher rollouts live: `config.data.dir`, else `<workdir>/data`."""
    return pathlib.Path(config.data.dir) if config.data.dir else pathlib.Path(workdir) / "data"


def heldout_data_dir(config, workdir) -> pathlib.Path:
    """Teacher rollouts on held-out goals (the student's held-out MSE), beside the data."""
    return data_dir(config, workdir) / "heldout_goals"


def heldout_variations(config) -> list[int]:
    """Goals of the held-out teacher episodes: the first `eval.mse_episodes_per_task` of
    the held-out goals from `eval.first_variation` (never training goals)."""
    first = max(config.eval.first_variation, variations_lib.FIRST_HELDOUT)
    return list(range(first, first + config.eval.mse_episodes_per_task))


def collect_or_load(config, task: str, directory: pathlib.Path,
                    variations: list[int] | None = None) -> rollouts.Trajectories:
    """Teacher rollouts of `task` on `variations` (default: the config's training goals,
    `data.episodes_per_task` episodes): loaded if `directory` has them, else collected
    and saved. Rollouts on disk from other goals are refused, not silently reused."""
    if variations is None:
        variations = protocol.train_variations(config.data, config.data.episodes_per_task)
    if rollouts.exists(directory, task):
        traj = rollouts.load(directory, task)
        if traj.num_episodes >= len(variations):
            traj = traj.select(slice(0, len(variations)))
            protocol.check_data_goals(task, traj.variations, variations)
            logging.info("loaded %d %s episodes from %s", traj.num_episodes, task, directory)
            return traj
    teacher = make_teacher(config.teacher, task)
    chunks, start = [], time.time()
    meter = progress.Progress(f"collecting {task}", len(variations), "episodes")
    for i in range(0, len(variations), config.data.collect_batch):
        chunk = variations[i:i + config.data.collect_batch]
        env = make_env(config.env.backend, [task] * len(chunk))
        try:
            chunks.append(rollouts.collect(env, teacher, chunk, seed=config.seed + i,
                                           noise_std=config.data.collect_noise_std))
        finally:
            env.close()
        meter.update(i + len(chunk))
    traj = rollouts.concatenate(chunks)
    rollouts.save(directory, traj, {"backend": config.env.backend,
                                   "teacher": config.teacher.kind,
                                   "noise_std": config.data.collect_noise_std,
                                   "seed": config.seed})
    logging.info("collected %d %s episodes in %.1fs, teacher success %.2f",
                 traj.num_episodes, task, time.time() - start, traj.episode_success().mean())
    return traj


def collect_or_load_all(config, tasks, directory: pathlib.Path,
                        variations: list[int] | None = None,
                        what: str = "teacher data") -> list[rollouts.Trajectories]:
    """`collect_or_load` of every task in order, with a progress line per task (tasks
    done / total and an ETA: collecting a task's episodes takes minutes).

    On several processes (a shared `directory`): each process loads, or collects and
    saves, its `parallel.process_share` of the tasks, all wait at a barrier, then every
    process loads every task. The shares depend on the task list alone, not on what
    each process saw on disk, so no task is written by two processes. Collection is
    seeded per task and episode: the data is what one process would collect.
    """
    if jax.process_count() > 1:
        for task in parallel.process_share(tasks, jax.process_index(), jax.process_count()):
            collect_or_load(config, task, directory, variations)
        parallel.barrier(f"collected {what}")
    meter = progress.Progress(what, len(tasks), "tasks")
    out = []
    for task in tasks:
        out.append(collect_or_load(config, task, directory, variations))
        meter.update(len(out), f"{task}: {out[-1].num_episodes} episodes")
    return out
