"""The replay buffer: trajectories kept from earlier stages (host-side numpy).

A `ReplayBuffer` is an immutable bundle of per-trajectory arrays with a common leading
axis N; `add` returns a new buffer, so the stage loop can keep the buffer of every
stage. The buffer is persisted as plain arrays inside the run checkpoint
(`continual/state.py`: saved with the student, rebuilt with `from_arrays`), so a
resumed run reloads exactly what it had.

    obs      float32[N, T, 39]
    actions  float32[N, T, 4]   (teacher action means)
    rewards  float32[N, T]
    success  bool[N, T] or bool[N] (whatever the rollouts store; only the leading axis
             is interpreted here)
    task_ids int32[N]           worker ids (paper order, 0..24)
    stage    int32[N]           the stage whose data the trajectory came from
"""

import dataclasses

import numpy as np

from cpd_jax.data import dpp

FIELDS = ("obs", "actions", "rewards", "success", "task_ids", "stage")


@dataclasses.dataclass(frozen=True)
class ReplayBuffer:
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    task_ids: np.ndarray
    stage: np.ndarray

    def __post_init__(self):
        n = {name: len(getattr(self, name)) for name in FIELDS}
        if len(set(n.values())) != 1:
            raise ValueError(f"fields disagree on the number of trajectories: {n}")

    def __len__(self) -> int:
        return len(self.task_ids)

    @classmethod
    def empty(cls) -> "ReplayBuffer":
        """A buffer with no trajectory (adds adopt the shapes of what is added)."""
        return cls(obs=np.zeros((0, 0, 0), np.float32), actions=np.zeros((0, 0, 0), np.float32),
                   rewards=np.zeros((0, 0), np.float32), success=np.zeros((0,), bool),
                   task_ids=np.zeros((0,), np.int32), stage=np.zeros((0,), np.int32))

    @classmethod
    def from_arrays(cls, obs, actions, rewards, success, task_ids, stage) -> "ReplayBuffer":
        """Copies the arrays in with canonical dtypes; stage may be a scalar."""
        task_ids = np.asarray(task_ids, np.int32)
        return cls(obs=np.asarray(obs, np.float32), actions=np.asarray(actions, np.float32),
                   rewards=np.asarray(rewards, np.float32), success=np.asarray(success, bool),
                   task_ids=task_ids,
                   stage=np.broadcast_to(np.asarray(stage, np.int32), task_ids.shape).copy())

    def take(self, indices) -> "ReplayBuffer":
        """The trajectories at `indices` (int[M] or bool[N])."""
        return ReplayBuffer(**{f: getattr(self, f)[indices] for f in FIELDS})

    def add(self, other: "ReplayBuffer") -> "ReplayBuffer":
        """This buffer followed by `other`."""
        if len(self) == 0:
            return other
        if len(other) == 0:
            return self
        return ReplayBuffer(**{f: np.concatenate([getattr(self, f), getattr(other, f)])
                               for f in FIELDS})

    def tasks(self) -> np.ndarray:
        """Sorted distinct task ids in the buffer."""
        return np.unique(self.task_ids)

    def for_tasks(self, task_ids) -> "ReplayBuffer":
        return self.take(np.isin(self.task_ids, np.asarray(task_ids)))


def select_stage(obs, actions, rewards, success, task_ids, stage: int,
                 fraction: float = dpp.DEFAULT_FRACTION, method: str = "dpp", key=None,
                 slice_len: int = dpp.DEFAULT_SLICE_LEN, per_task: bool = True) -> ReplayBuffer:
    """The replay buffer entries a stage contributes: `dpp.select_replay` over its
    trajectories (arrays as in the module doc, leading axis N)."""
    idx = dpp.select_replay(obs, task_ids, fraction, method, key, slice_len, per_task)
    pick = lambda a: np.asarray(a)[idx]  # index first: copy only what is kept
    return ReplayBuffer.from_arrays(pick(obs), pick(actions), pick(rewards), pick(success),
                                    pick(task_ids), stage)


GOAL = slice(36, 39)  # the goal position in a Meta-World v3 observation


def goal_spread(buffer: ReplayBuffer, goals_of) -> dict:
    """{task id: how far from the centre of the task's goals its replayed episodes lie}:
    the mean distance of the replayed episodes' goals to the centroid of all the task's
    teacher-episode goals, divided by the same mean over all those episodes (1 = as
    spread as the data; > 1 = the selection favours the edges of the goal space).

    goals_of(task id) -> float32[E, 3]: the goals of all the task's teacher episodes.
    """
    out = {}
    for task in buffer.tasks():
        goals = goals_of(int(task))
        centroid = goals.mean(axis=0)
        typical = np.linalg.norm(goals - centroid, axis=1).mean()
        chosen = buffer.for_tasks([task]).obs[:, 0, GOAL]
        out[int(task)] = float(np.linalg.norm(chosen - centroid, axis=1).mean() / typical)
    return out
