"""The continual run's saved state: what a later stage or a resumed run needs.

Two checkpoint streams share a run's `checkpoints/` directory: one step per finished
stage (`RunState`, format `CHECKPOINT_FORMAT`), read by resume and by `--mode=eval`,
and, in a namespace of their own (`PROGRESS_DIR`, `RunCheckpointer.nested`), the
intra-stage checkpoints of the unfinished stage (`StageProgress`), so resume and
`--mode=eval` only ever see finished stages.
"""

import dataclasses

import numpy as np
from absl import logging

from cpd_jax import checkpointing, parallel
from cpd_jax.configs import default as default_config
from cpd_jax.data import replay as replay_lib
from cpd_jax.errors import UserError
from cpd_jax.student import num_experts
from cpd_jax.student.inputs import ObsNorm, obs_norm_from_tree, obs_norm_to_tree

CHECKPOINT_FORMAT = "cpd_jax.continual/v2"
PROGRESS_FORMAT = "cpd_jax.continual.in_stage/v1"
PROGRESS_DIR = "in_stage"
# Config fields that may change between a run and its resumption (they do not change
# what is computed): logging cadence and live-metric sinks (`log.*`, absent from
# checkpoints made before it existed), checkpoint retention and cadence (absent before
# intra-stage checkpoints), where shared data lives.
RESUMABLE_FIELDS = ("distill.log_every", "log", "checkpoint.max_to_keep",
                    "checkpoint.every_steps", "data.dir")


@dataclasses.dataclass
class RunState:
    """Everything a later stage (or a resumed run) needs.

    R: float64[S, T] success of task j after stage i (NaN: not yet seen / not run).
    log: one dict per finished stage (`stage_log`), JSON-ready.
    """

    stages_done: int
    params: dict
    obs_norm: ObsNorm
    replay: replay_lib.ReplayBuffer
    R: np.ndarray
    teacher_success: np.ndarray  # float64[T], NaN until the task's data exists
    encoder: dict | None = None  # task-encoder params (task_context "contrastive")
    log: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StageProgress:
    """An unfinished stage at one of its intra-stage checkpoints.

    stage: 1-based. phase: the phase being trained (`freezing.phases`); phase_steps:
    its steps done (never all of them: `distillation.distill` does not save after a
    phase's last step, so the phase's end-of-phase evaluation always follows a resume).
    state: the `distillation.DistillState` after them; as restored, its raw form (nested
    dicts/lists, `checkpointing.restructure` gives it back its types).
    curve: `train_stage`'s curve so far. phase_mse: the `stage_log` entries of the
    finished phases. encoder, drift: the stage's task encoder and its drift (`train_encoder`;
    None and {} without one). seconds: the stage's wall time so far.
    """

    stage: int
    phase: int
    phase_steps: int
    state: object
    curve: list
    phase_mse: list
    encoder: dict | None = None
    drift: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def save_run(ckpt, run: RunState, config) -> None:
    """Writes the state after `run.stages_done` finished stages as that step of `ckpt`."""
    tree = {"params": run.params, "obs_norm": obs_norm_to_tree(run.obs_norm),
            "R": run.R, "teacher_success": run.teacher_success,
            "replay": {f: getattr(run.replay, f) for f in replay_lib.FIELDS}}
    if run.encoder is not None:
        tree["encoder"] = run.encoder
    # arrays of several devices or processes as numpy (orbax writes those once)
    tree = parallel.host_local(tree)
    meta = {"format": CHECKPOINT_FORMAT, "stages_done": run.stages_done,
            "num_experts": num_experts(run.params), "replay_size": len(run.replay),
            "config": config.to_dict(), "log": run.log}
    ckpt.save(run.stages_done, tree, meta)


def _verify_resumable_config(meta, config, fix: str) -> None:
    """UserError unless `config` resumes the run saved with `meta`: fields other than
    RESUMABLE_FIELDS equal, and a field added to the code since then at its default."""
    checkpointing.verify_config(meta, config.to_dict(), ignore=RESUMABLE_FIELDS,
                                defaults=default_config.get_config().to_dict(),
                                fix=f"rerun with the run's config and --config overrides, "
                                f"or {fix}")


def restore_run(ckpt, config) -> RunState | None:
    """The state after the last finished stage in `ckpt` (None for a new run); UserError
    for a checkpoint of another format or config."""
    if ckpt.latest() is None:
        return None
    meta = ckpt.restore_metadata()
    checkpointing.check_format(meta, CHECKPOINT_FORMAT, str(ckpt.directory),
                               "use a fresh --workdir")
    _verify_resumable_config(meta, config, "use a fresh --workdir")
    tree, meta = ckpt.restore()
    logging.info("resuming after stage %d (%d experts)", meta["stages_done"], meta["num_experts"])
    return RunState(stages_done=meta["stages_done"], params=tree["params"],
                    obs_norm=obs_norm_from_tree(tree["obs_norm"]),
                    # checkpoints written before the checkpointer kept zero-size arrays
                    # left an empty buffer out
                    replay=(replay_lib.ReplayBuffer.from_arrays(**tree["replay"])
                            if "replay" in tree else replay_lib.ReplayBuffer.empty()),
                    R=np.asarray(tree["R"]), teacher_success=np.asarray(tree["teacher_success"]),
                    encoder=tree.get("encoder"), log=meta["log"])


def save_progress(ckpt, config, progress: StageProgress, step_id: int) -> None:
    """Writes `progress` (its `state` a `DistillState`) as step `step_id` (the run's
    gradient step) of the intra-stage checkpointer `ckpt`."""
    tree = {"distill": parallel.host_local(progress.state)}
    if progress.encoder is not None:
        tree["encoder"] = progress.encoder
    meta = {"format": PROGRESS_FORMAT, "stage": progress.stage, "phase": progress.phase,
            "phase_steps": progress.phase_steps, "curve": progress.curve,
            "phase_mse": progress.phase_mse, "drift": progress.drift,
            "seconds": progress.seconds, "config": config.to_dict()}
    ckpt.save(step_id, tree, meta)


def restore_progress(ckpt, config, stages_done: int, steps_done: int
                      ) -> StageProgress | None:
    """The latest intra-stage checkpoint of stage `stages_done + 1` (the one to run
    next), or None. Its step id is the run's gradient step, so one at or before
    `steps_done` (the finished stages' steps) is a finished stage's leftover: the run
    was killed between that stage's checkpoint and their deletion, maybe during it, so
    they are deleted unread. UserError for one that cannot be resumed: unreadable,
    another format or config, or a later stage."""
    latest = ckpt.latest()
    if latest is None:
        return None
    if latest <= steps_done:
        logging.info("deleting a finished stage's intra-stage checkpoint (step %d)", latest)
        ckpt.delete_all()
        return None
    fix = f"delete {ckpt.directory} to run the stage from its start"
    try:
        meta = ckpt.restore_metadata()
    except checkpointing.CorruptCheckpointError as e:
        raise UserError(f"{e}; {fix}") from e
    checkpointing.check_format(meta, PROGRESS_FORMAT, str(ckpt.directory), fix)
    if meta["stage"] != stages_done + 1:
        raise UserError(f"{ckpt.directory} holds stage {meta['stage']}'s progress but the "
                        f"run's checkpoints end after stage {stages_done}; {fix}")
    _verify_resumable_config(meta, config, fix)
    try:
        tree, meta = ckpt.restore()
    except checkpointing.CorruptCheckpointError as e:
        raise UserError(f"{e}; {fix}") from e
    return StageProgress(stage=meta["stage"], phase=meta["phase"],
                         phase_steps=meta["phase_steps"], state=tree["distill"],
                         curve=meta["curve"], phase_mse=meta["phase_mse"],
                         encoder=tree.get("encoder"), drift=meta["drift"],
                         seconds=meta["seconds"])
