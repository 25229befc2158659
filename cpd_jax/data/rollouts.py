"""Teacher rollouts: collect, store on disk, load back.

On-disk format (one pair of files per task, `<dir>/<task>.npz` + `<dir>/<task>.json`):

  npz  obs        float32[N, T, 39]  observation at each step
       actions    float32[N, T, 4]   teacher action MEAN at that observation (the label)
       rewards    float32[N, T]      reward of the step taken from it
       success    bool[N, T]         metaworld info["success"] after the step
       lengths    int32[N]           steps in each episode (row n is valid for t < lengths[n];
                                     episode boundaries are the rows)
       variations int32[N]           task variation (0..49) each episode started from
  json {"format": "cpd_jax.rollouts/v1", "task": ..., "task_id": ..., plus collection
        metadata: backend, teacher kind, noise, seed}

Meta-World episodes never terminate early, so T = 500 and lengths are all 500 in
practice; the loader and samplers still honour `lengths`.
"""

import dataclasses
import json
import os
import pathlib

import numpy as np

from cpd_jax.envs import MAX_EPISODE_STEPS, BatchedEnv, task_id, validate_tasks

FORMAT = "cpd_jax.rollouts/v1"
_ARRAYS = ("obs", "actions", "rewards", "success", "lengths", "variations")


@dataclasses.dataclass
class Trajectories:
    """N episodes of one task (see the module docstring for shapes)."""

    task: str
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    lengths: np.ndarray
    variations: np.ndarray

    @property
    def num_episodes(self) -> int:
        return self.obs.shape[0]

    @property
    def task_id(self) -> int:
        return task_id(self.task)

    def episode_success(self) -> np.ndarray:
        """bool[N]: success at any step of each episode (the Meta-World+ protocol)."""
        steps = np.arange(self.success.shape[1])[None] < self.lengths[:, None]
        return np.any(self.success & steps, axis=1)

    def select(self, index) -> "Trajectories":
        """The episodes at `index` (int array or slice)."""
        return dataclasses.replace(self, **{k: getattr(self, k)[index] for k in _ARRAYS})


def concatenate(parts: list[Trajectories]) -> Trajectories:
    """The episodes of several `Trajectories` of one task, in order."""
    if len({p.task for p in parts}) != 1:
        raise ValueError(f"cannot concatenate trajectories of {sorted({p.task for p in parts})}")
    return dataclasses.replace(parts[0], **{k: np.concatenate([getattr(p, k) for p in parts])
                                            for k in _ARRAYS})


def collect(env: BatchedEnv, teacher, variations, *, noise_std: float = 0.0,
            seed: int = 0, num_steps: int = MAX_EPISODE_STEPS) -> Trajectories:
    """Runs `teacher` in `env` (all B envs on the teacher's task) for one episode each.

    variations: int[B] task variation per env. noise_std: std of Gaussian noise added
    to the executed action (not to the stored label) so the data covers the states a
    slightly imperfect student visits (DART-style); 0 executes the teacher exactly.
    """
    if set(env.tasks) != {teacher.task}:
        raise ValueError(f"teacher for {teacher.task} cannot drive envs of {set(env.tasks)}")
    rng = np.random.default_rng(seed)
    b = len(env.tasks)
    obs_t = env.reset(np.asarray(variations))
    buf = {"obs": [], "actions": [], "rewards": [], "success": []}
    for _ in range(num_steps):
        mean = teacher.action_mean(obs_t)
        executed = mean + noise_std * rng.standard_normal(mean.shape).astype(np.float32)
        tr = env.step(np.clip(executed, -1.0, 1.0))
        for k, v in (("obs", obs_t), ("actions", mean), ("rewards", tr.reward),
                     ("success", tr.success)):
            buf[k].append(v)
        obs_t = tr.obs
    arrays = {k: np.stack(v, axis=1) for k, v in buf.items()}
    return Trajectories(task=teacher.task, lengths=np.full(b, num_steps, np.int32),
                        variations=np.asarray(variations, np.int32), **arrays)


def save(directory, traj: Trajectories, metadata: dict | None = None) -> pathlib.Path:
    """Writes `<directory>/<task>.npz` and `.json` atomically; returns the npz path."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{traj.task}.npz"
    tmp = directory / f".{traj.task}.tmp{os.getpid()}.npz"
    np.savez(tmp, **{k: getattr(traj, k) for k in _ARRAYS})
    meta = {"format": FORMAT, "task": traj.task, "task_id": traj.task_id,
            "num_episodes": traj.num_episodes, **(metadata or {})}
    (directory / f"{traj.task}.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path)  # the npz appears last: its presence means the pair is whole
    return path


def load(directory, task: str) -> Trajectories:
    """Loads what `save` wrote for `task`; names the missing file or format mismatch."""
    validate_tasks([task])
    directory = pathlib.Path(directory)
    path, meta_path = directory / f"{task}.npz", directory / f"{task}.json"
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"no rollouts for {task} in {directory} (expected "
                                f"{path.name} and {meta_path.name})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("task") != task:
        raise ValueError(f"{meta_path} is not {FORMAT} rollouts of {task}: {meta}")
    with np.load(path) as f:
        return Trajectories(task=task, **{k: f[k] for k in _ARRAYS})


def exists(directory, task: str) -> bool:
    directory = pathlib.Path(directory)
    return (directory / f"{task}.npz").exists() and (directory / f"{task}.json").exists()
