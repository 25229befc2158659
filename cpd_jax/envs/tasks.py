"""The MT25 task stream: names, worker ids and validation.

Worker ids follow the paper (``shared/reference/PAPER_RESULTS.md``): ids 0-9 are MT10,
the 5-stage protocol takes them 5 at a time in this order.
"""

from typing import Sequence

from cpd_jax.errors import UserError

MT25_TASKS: tuple[str, ...] = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
    "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3",
    "window-open-v3", "window-close-v3",
    "coffee-pull-v3", "pick-out-of-hole-v3", "disassemble-v3", "pick-place-wall-v3",
    "basketball-v3", "stick-pull-v3", "button-press-wall-v3", "faucet-open-v3",
    "door-lock-v3", "lever-pull-v3", "sweep-into-v3", "faucet-close-v3",
    "coffee-button-v3", "button-press-topdown-wall-v3", "dial-turn-v3",
)
MT10_TASKS: tuple[str, ...] = MT25_TASKS[:10]

OBS_DIM = 39  # hand xyz, gripper, 2 x (obj xyz + quat), previous frame's 18, goal xyz
ACTION_DIM = 4  # mocap dx, dy, dz, gripper effort
MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length


class UnknownTaskError(UserError):
    """A task name that is not one of the 25 MT25 tasks."""


def validate_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """Returns `tasks` as a tuple, or raises naming every unknown task and the valid ones."""
    if isinstance(tasks, str):
        tasks = (tasks,)
    unknown = [t for t in tasks if t not in MT25_TASKS]
    if unknown:
        raise UnknownTaskError(
            f"unknown task(s) {unknown}; valid MT25 tasks are: {', '.join(MT25_TASKS)}")
    return tuple(tasks)


def task_id(task: str) -> int:
    """The paper's worker id (0..24) of an MT25 task."""
    return MT25_TASKS.index(validate_tasks([task])[0])
