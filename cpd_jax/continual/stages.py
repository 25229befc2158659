"""Algorithm 1: continual distillation over a stream of stages.

Per stage k: load/collect teacher data of the stage's tasks; (k >= 2) add experts;
(contrastive context) continue training the task encoder on stage data + replay;
train the student on stage data + replay with the phase schedule (optax freezing);
pick replay trajectories (DPP); evaluate on every task seen so far (row k of the
accuracy matrix R) under the config's evaluation protocol; checkpoint.

Besides R, every stage logs (results.json, "stages"): the student's MSE on held-out
teacher actions per task at the end of each phase, how routing splits new and old
tasks over new and old experts, and how far old tasks' task embeddings moved.

Restarting the same command resumes after the last finished stage, or inside the
unfinished one from its latest intra-stage checkpoint (every `checkpoint.every_steps`
steps: the training state, the phase and the stage's results so far; `StageProgress`).
Every stage's randomness is `fold_in(seed, stage)` and the training state carries its
own key, so a resumed run reproduces an uninterrupted one bitwise.
"""

import dataclasses
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cpd_jax import (checkpointing, config_checks, distillation, live_metrics, parallel,
                     pipeline, progress)
from cpd_jax.continual import freezing, penalties
from cpd_jax.continual.methods import Method, get_method
from cpd_jax.data import replay as replay_lib
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.envs import MT25_TASKS
from cpd_jax.errors import UserError
from cpd_jax.evaluation import metrics, protocol, report, routing_stats, run_report
from cpd_jax.student import Student, StudentSpec, growth, num_experts
from cpd_jax.student import task_embedding
from cpd_jax.student.inputs import (NUM_TASK_IDS, ObsNorm, fit_obs_norm,
                                    obs_norm_from_tree, obs_norm_to_tree, student_inputs)

CHECKPOINT_FORMAT = "cpd_jax.continual/v2"
# Intra-stage checkpoints: `<workdir>/checkpoints/in_stage/`, a step namespace of their
# own (`RunCheckpointer.nested`), so resume and `--mode=eval` only see finished stages.
PROGRESS_FORMAT = "cpd_jax.continual.in_stage/v1"
PROGRESS_DIR = "in_stage"
# Config fields that may change between a run and its resumption (they do not change
# what is computed): logging cadence and live-metric sinks (`log.*`, absent from
# checkpoints made before it existed), checkpoint retention and cadence (absent before
# intra-stage checkpoints), where shared data lives.
RESUMABLE_FIELDS = ("distill.log_every", "log", "checkpoint.max_to_keep",
                    "checkpoint.every_steps", "data.dir")


def split_stages(tasks, stage_sizes) -> list[tuple[str, ...]]:
    """The task stream cut into consecutive stages of the given sizes (UserError if the
    sizes do not partition it)."""
    return config_checks.split_stages(tasks, stage_sizes)


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


def validate(config, stages) -> None:
    """Refuses a config that cannot run, before any data is collected or compiled: the
    checks of `cpd_jax.main` (also when called as a library), then the goal split."""
    config_checks.check_config(config, protocol="stages")
    protocol.check_goal_split(config, [t for s in stages for t in s])


def replay_trajectories(buffer: replay_lib.ReplayBuffer) -> list[Trajectories]:
    """The buffer's trajectories grouped by task, as `Trajectories` for distillation."""
    out = []
    for tid in buffer.tasks():
        part = buffer.for_tasks([tid])
        n, t = part.rewards.shape
        out.append(Trajectories(task=MT25_TASKS[int(tid)], obs=part.obs, actions=part.actions,
                                rewards=part.rewards,
                                success=np.broadcast_to(part.success[:, None], (n, t)).copy(),
                                lengths=np.full(n, t, np.int32),
                                variations=np.full(n, -1, np.int32)))
    return out


def select_replay(config, data: list[Trajectories], stage: int, key) -> replay_lib.ReplayBuffer:
    """This stage's contribution to the replay buffer (per-task budget, paper §4.4)."""
    cat = lambda name: np.concatenate([getattr(d, name) for d in data])
    task_ids = np.concatenate([np.full(d.num_episodes, d.task_id) for d in data])
    success = np.concatenate([d.episode_success() for d in data])
    return replay_lib.select_stage(cat("obs"), cat("actions"), cat("rewards"), success,
                                   task_ids, stage, config.continual.replay_fraction,
                                   config.continual.replay_selector, key,
                                   slice_len=config.student.seq_len)


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


def _student(config, n_experts: int) -> Student:
    spec = dataclasses.replace(StudentSpec.from_config(config.student), num_experts=n_experts)
    return Student(spec)


def context_rows(config, stage: int, stage_tasks) -> np.ndarray | None:
    """bool[C]: rows of the student's task-context projection that train at `stage`
    (1-based) under the freezing schedule; None = all of them.

    Stage 1 trains every row. Later, with one-hot context each task's row is that
    task's own embedding: the rows of the stage's tasks train, and old tasks' rows stay
    as their stage left them unless continual.old_task_context == "trainable" (trained
    on the replay, they moved by up to 0.9 and cost old tasks 30-45 points of success in
    one stage; BUILD_NOTES). With contrastive context the projection of z is shared by
    all tasks, so it is frozen with the input embedding after stage 1 (§4.5); the task
    encoder is the part that keeps training (`train_encoder`).
    """
    if stage == 1 or config.student.task_context == "none":
        return None
    if config.student.task_context == "contrastive":
        return np.zeros(config.task_encoder.embed_dim, bool)
    if config.continual.old_task_context == "trainable":
        return None
    return np.isin(np.arange(NUM_TASK_IDS), [MT25_TASKS.index(t) for t in stage_tasks])


def _optimizer(config, method: Method, params, num_old: int, stage: int, phase: int,
               total_steps: int, steps_done: int, rows=None):
    """(tx, frozen mask or None) for one phase of one stage (stage is 1-based). The
    learning-rate schedule spans the stage: this phase starts at `steps_done` of
    `total_steps`. rows: `context_rows` of the stage."""
    if method.freeze:
        lr = distillation.learning_rate(config.distill, total_steps, steps_done)
        schedule = dict(backbone=config.continual.backbone,
                        freeze_gating=config.continual.freeze_gating,
                        old_experts=config.continual.old_experts)
        tx = freezing.make_optimizer(params, num_old, stage, phase, lr,
                                     config.distill.weight_decay, **schedule)
        trainable = freezing.trainable_labels(stage, phase, **schedule)
        return tx, freezing.frozen_mask(params, num_old, trainable, rows)
    tx = distillation.make_optimizer(config.distill, total_steps, steps_done)
    if method.optimizer == "trac":
        from cpd_jax.continual import trac
        tx = trac.trac(tx)
    return tx, None


def _penalty(config, method: Method, model, prev_params, prev_source, obs_norm, key,
             old_task_ids=()):
    """EWC / KL / routing penalty anchored at the previous stage's student (None
    otherwise). `model` is the previous stage's student."""
    if prev_params is None:
        return None
    cont = config.continual
    if method.expand and (cont.route_anchor_coef > 0 or cont.route_new_coef > 0):
        return penalties.routing_penalty(model, prev_params, old_task_ids,
                                         cont.route_anchor_coef, cont.route_new_coef)
    if method.penalty == "none":
        return None
    if method.penalty == "kl":
        return penalties.kl_penalty(model, prev_params, config.continual.kl_coef)
    if method.penalty == "ewc":
        batches = []
        for i in range(config.continual.fisher_batches):
            history, targets = distillation.sample_batch(jax.random.fold_in(key, i),
                                                         prev_source, config.distill.batch_size)
            inputs = student_inputs(config.student.task_context, history, None, obs_norm)
            batches.append((inputs, history.valid, targets))
        fisher = penalties.diagonal_fisher(model, prev_params, batches)
        return penalties.ewc_penalty(prev_params, fisher, config.continual.ewc_coef)
    raise ValueError(f"unknown penalty {method.penalty!r}")


def _with_phase(history: list, phase: int) -> list:
    return [dict(m, phase=phase) for m in history]


def train_stage(config, method: Method, params, num_old: int, stage: int, source,
                obs_norm: ObsNorm, key, penalty_fn=None, encoder=None, after_phase=None,
                stage_tasks=(), writer=None, global_step_offset: int = 0,
                resume: StageProgress | None = None, save=None):
    """All phases of one stage (stage is 1-based). The aux-loss lambda and the learning
    rate each follow one schedule over the stage: phase 2 continues phase 1's count.

    after_phase: optional `f(phase, params)` called at the end of each phase.
    stage_tasks: the tasks this stage introduces (`context_rows`).
    writer, global_step_offset: live metrics (`distillation.distill`); the offset is
    the gradient steps of the run's earlier stages.
    resume: carry on from this intra-stage checkpoint of the stage (`params` are then
    only the structure of its state: the stage's params before training).
    save: `save(phase, phase_steps, stage_step, state, curve)` every
    `config.checkpoint.every_steps` steps of a phase (`distillation.distill`), with
    the stage's curve so far; stage_step counts from the start of the stage.
    Returns (params, curve: logged metrics of every phase; each entry's "step" counts
    from the start of the stage, so the last one is the stage's number of steps).
    """
    model = _student(config, num_experts(params))
    total = distillation.num_train_steps(config.distill, source)
    phase_ids = freezing.phases(stage, config.continual.freeze_gating) if method.freeze else (1,)
    fractions = ([config.continual.phase1_fraction, 1 - config.continual.phase1_fraction]
                 if len(phase_ids) == 2 else [1.0])
    curve, done = ([] if resume is None else list(resume.curve)), 0
    mesh = pipeline.data_mesh(config)
    for phase, fraction in zip(phase_ids, fractions):
        steps = max(1, int(round(total * fraction)))
        if resume is not None and phase < resume.phase:  # in the checkpoint: curve, MSE
            done += steps
            continue
        tx, frozen = _optimizer(config, method, params, num_old, stage, phase, total, done,
                                context_rows(config, stage, stage_tasks))
        step_fn = distillation.make_train_step(model, tx, config.distill,
                                               config.student.task_context,
                                               embed_fn=embed_fn_for(encoder),
                                               obs_norm=obs_norm, penalty_fn=penalty_fn,
                                               frozen=frozen, mesh=mesh)
        state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                          step=jnp.asarray(done, jnp.int32),
                                          key=jax.random.fold_in(key, phase))
        phase_done = 0
        if resume is not None and phase == resume.phase:
            state = checkpointing.restructure(resume.state, state)
            phase_done = resume.phase_steps
            logging.info("resuming stage %d at step %d of %d (phase %d)", stage,
                         done + phase_done, total, phase)
        if mesh is not None:
            state, source = parallel.replicate((state, source), mesh)
        save_phase = None if save is None else functools.partial(
            _save_phase, save, phase, done, curve)
        parallel.barrier(f"stage {stage} phase {phase}")  # the steps' all-reduce is gloo's
        state, phase_curve = distillation.distill(
            state, step_fn, source, steps, config.distill.log_every,
            label=f"stage {stage} phase {phase}", writer=writer,
            global_step_offset=global_step_offset, steps_done=phase_done,
            save_every=config.checkpoint.every_steps, save=save_phase)
        params, done = parallel.host_local(state.params), done + steps
        curve += _with_phase(phase_curve, phase)
        if after_phase is not None:
            after_phase(phase, params)
    return params, curve


def _save_phase(save, phase: int, steps_before: int, curve: list, state, phase_steps: int,
                history: list) -> None:
    """`distill`'s save hook for one phase of `train_stage`: `steps_before` steps of the
    stage preceded the phase, `curve` is the stage's curve before this `distill` call."""
    save(phase, phase_steps, steps_before + phase_steps, state,
         curve + _with_phase(history, phase))


def evaluate_seen(config, params, obs_norm, tasks, encoder=None) -> dict:
    return pipeline.evaluate_student(config, _student(config, num_experts(params)), params,
                                     obs_norm, tasks, embed_fn_for(encoder))


def heldout_evaluation(config, params, obs_norm, heldout: list[Trajectories],
                       encoder=None) -> dict:
    """The student on every window of the held-out teacher episodes:
    `distillation.evaluate_windows` (per-task MSE, routing of every token)."""
    source = distillation.make_window_source(heldout, config.student.seq_len)
    return distillation.evaluate_windows(_student(config, num_experts(params)), params, source,
                                         config.student.task_context, embed_fn_for(encoder),
                                         obs_norm)


def stage_log(method, ev: dict, phase_mse: list, experts_after_stage: list,
              stage: int, stage_of_task: np.ndarray, tasks, drift: dict, seconds: float,
              train_steps: int | None = None):
    """The JSON entry of a finished stage (0-based `stage`): held-out MSE per phase,
    routing shares (methods that grow experts), encoder drift, wall time, gradient
    steps (a resumed run's live metrics continue from the sum over finished stages)."""
    entry = {"stage": stage, "num_experts": experts_after_stage[-1], "phase_mse": phase_mse,
             "encoder_drift": drift, "seconds": seconds, "train_steps": train_steps}
    if method.expand:
        _, fractions = routing_stats.per_task_fractions(
            ev["expert_index"], ev["token_task"], experts_after_stage[-1],
            tasks=ev["task_ids"], token_mask=ev["token_valid"])
        task_stage = np.array([stage_of_task[tasks.index(MT25_TASKS[int(t)])]
                               for t in ev["task_ids"]])
        entry["routing"] = routing_stats.stage_routing_shares(
            fractions, task_stage, routing_stats.expert_birth_stages(experts_after_stage),
            stage)
    return entry


def steps_before_stage(log: list) -> int:
    """Gradient steps of the finished stages (`stage_log` entries): where the next
    stage's live-metric step starts. A stage logged before the field existed counts 0."""
    return int(sum(entry.get("train_steps") or 0 for entry in log))


def phase_end_steps(curve: list) -> dict:
    """{phase: step within the stage at which it ended} from `train_stage`'s curve."""
    ends = {}
    for m in curve:
        ends[m["phase"]] = max(ends.get(m["phase"], 0), int(m["step"]))
    return ends


def stage_scalars(summary_row: dict, R_row: np.ndarray, tasks, stage_of_task: np.ndarray,
                  stage: int, experts: int) -> dict:
    """Live-metric scalars at the end of 0-based `stage`: the success of every task seen
    so far (row `stage` of R), Acc, BWT and MaxForgetting (None at stage 0, where they are
    undefined), the expert count and the 1-based stage number."""
    seen = [(t, R_row[j]) for j, t in enumerate(tasks) if stage_of_task[j] <= stage]
    out = {f"success/{t}": float(v) for t, v in seen}
    later = stage > 0
    out.update({"success/mean": summary_row["Acc"], "continual/Acc": summary_row["Acc"],
                "continual/BWT": summary_row["BWT"] if later else None,
                "continual/MaxForgetting": summary_row["MaxForgetting"] if later else None,
                "continual/num_experts": experts, "continual/stage": stage + 1})
    return out


def _save(ckpt, run: RunState, config):
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


def _restore(ckpt, config) -> RunState | None:
    if ckpt.latest() is None:
        return None
    meta = ckpt.restore_metadata()
    checkpointing.check_format(meta, CHECKPOINT_FORMAT, str(ckpt.directory),
                               "use a fresh --workdir")
    checkpointing.verify_config(meta, config.to_dict(), ignore=RESUMABLE_FIELDS,
                                fix="rerun with the run's config and --config overrides, "
                                "or use a fresh --workdir")
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


def _save_progress(ckpt, config, progress: StageProgress, step_id: int) -> None:
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


def _restore_progress(ckpt, config, stages_done: int, steps_done: int
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
    checkpointing.verify_config(meta, config.to_dict(), ignore=RESUMABLE_FIELDS,
                                fix=f"rerun with the run's config and --config overrides, "
                                f"or {fix}")
    try:
        tree, meta = ckpt.restore()
    except checkpointing.CorruptCheckpointError as e:
        raise UserError(f"{e}; {fix}") from e
    return StageProgress(stage=meta["stage"], phase=meta["phase"],
                         phase_steps=meta["phase_steps"], state=tree["distill"],
                         curve=meta["curve"], phase_mse=meta["phase_mse"],
                         encoder=tree.get("encoder"), drift=meta["drift"],
                         seconds=meta["seconds"])


def run_continual(config, workdir, max_stages: int | None = None) -> dict:
    """Runs (or resumes) every stage; writes results.json/.md and plots.

    Returns the results dict (as in results.json) plus "state": the final `RunState`.
    A stage saves its training state every `checkpoint.every_steps` steps; a call
    that finds one of the unfinished stage carries on from it (`StageProgress`).

    max_stages: stop after this many finished stages (a batch job per stage, or a test
    of resumption); the next call with the same workdir carries on from there.
    Live metrics (`config.log`, `cpd_jax.live_metrics`): against the gradient step of
    the whole run (stages and phases in sequence), `distill/*` at every log point,
    `heldout_mse/*` after each phase, `success/*` and `continual/*` after each stage.
    """
    with live_metrics.make_writer(config, workdir) as writer:
        return _run_continual(config, workdir, max_stages, writer)


def _run_continual(config, workdir, max_stages, writer) -> dict:
    start = time.time()
    workdir = pathlib.Path(workdir)
    method = get_method(config.method)
    stages = split_stages(config.tasks, config.continual.stage_sizes)
    validate(config, stages)
    tasks = [t for s in stages for t in s]
    stage_of_task = np.array([k for k, s in enumerate(stages) for _ in s])
    ckpt = checkpointing.RunCheckpointer(workdir / "checkpoints",
                                         max_to_keep=config.checkpoint.max_to_keep)
    run = _restore(ckpt, config)
    progress_ckpt = ckpt.nested(PROGRESS_DIR, max_to_keep=1)
    resume = _restore_progress(progress_ckpt, config, run.stages_done if run else 0,
                               steps_before_stage(run.log if run else []))
    seed_key = jax.random.PRNGKey(config.seed)
    last = len(stages) if max_stages is None else min(max_stages, len(stages))
    prev_data = None  # the previous stage's teacher data (EWC's Fisher)
    load_all = lambda ts, what: pipeline.collect_or_load_all(
        config, ts, pipeline.data_dir(config, workdir), what=what)
    for k in range(run.stages_done if run else 0, last):
        resumed = resume if resume is not None and resume.stage == k + 1 else None
        t0 = time.time() - (resumed.seconds if resumed else 0.0)
        key = jax.random.fold_in(seed_key, k)
        k_init, k_grow, k_train, k_replay, k_pen, k_enc = jax.random.split(key, 6)
        data = load_all(stages[k], f"stage {k + 1} teacher data")
        seen = [t for s in stages[:k + 1] for t in s]
        heldout = pipeline.collect_or_load_all(
            config, stages[k] if method.fresh_student else seen,
            pipeline.heldout_data_dir(config, workdir), pipeline.heldout_variations(config),
            what=f"stage {k + 1} held-out teacher episodes")
        if run is None or method.fresh_student:
            _, params = pipeline.init_student(config, k_init)
            obs_norm = run.obs_norm if run else fit_obs_norm(
                np.concatenate([d.obs.reshape(-1, d.obs.shape[-1]) for d in data]))
            num_old, prev_params = 0, None
        else:
            prev_params, params, obs_norm = run.params, run.params, run.obs_norm
            num_old = num_experts(params)
            if method.expand:
                params = growth.expand(params, config.continual.new_experts_per_stage, k_grow,
                                       config.continual.sigma_init,
                                       config.continual.gate_bias_init)
        if run is None:
            run = RunState(stages_done=0, params=params, obs_norm=obs_norm,
                           replay=replay_lib.ReplayBuffer.empty(),
                           R=np.full((len(stages), len(tasks)), np.nan),
                           teacher_success=np.full(len(tasks), np.nan))
        for d in data:
            run.teacher_success[tasks.index(d.task)] = d.episode_success().mean()
        replayed = replay_trajectories(run.replay) if method.replay else []
        source = distillation.make_window_source(data + replayed, config.student.seq_len,
                                                 config.distill.sampling)
        drift = {}
        if resumed is not None:  # the encoder was trained before the checkpoint
            run.encoder, drift = resumed.encoder, resumed.drift
        elif config.student.task_context == "contrastive":
            previous = None if method.fresh_student else run.encoder
            with progress.timed(f"stage {k + 1}: training the task encoder "
                                f"({config.task_encoder.steps} InfoNCE steps)"):
                run.encoder, drift = train_encoder(config, data + replayed, k_enc, previous,
                                                   old_tasks=seen[:-len(stages[k])])
        penalty_fn, prev_source = None, None
        if prev_params is not None:
            if method.penalty == "ewc":
                if prev_data is None:  # resumed at this stage: reload it from disk
                    prev_data = load_all(stages[k - 1], f"stage {k} teacher data (EWC)")
                prev_source = distillation.make_window_source(prev_data,
                                                              config.student.seq_len)
            penalty_fn = _penalty(config, method, _student(config, num_experts(prev_params)),
                                  prev_params, prev_source, obs_norm, k_pen,
                                  [MT25_TASKS.index(t) for t in seen if t not in stages[k]])
        phase_mse, evals = (list(resumed.phase_mse) if resumed else []), []

        def after_phase(phase, params):
            evals.append(heldout_evaluation(config, params, obs_norm, heldout, run.encoder))
            mse = {MT25_TASKS[int(t)]: float(v) for t, v in zip(evals[-1]["task_ids"],
                                                               evals[-1]["mse"])}
            phase_mse.append({"phase": phase, "mse": mse})
            logging.info("stage %d phase %d: held-out teacher-action MSE %.4f (mean over "
                         "%d tasks)", k + 1, phase, np.mean(list(mse.values())), len(mse))

        first_step = steps_before_stage(run.log)  # of this stage, in the whole run

        def save_progress(phase, phase_steps, stage_step, state, curve):
            at = StageProgress(k + 1, phase, phase_steps, state, curve, phase_mse,
                               run.encoder, drift, time.time() - t0)
            _save_progress(progress_ckpt, config, at, first_step + stage_step)

        params, curve = train_stage(config, method, params, num_old, k + 1, source, obs_norm,
                                    k_train, penalty_fn, run.encoder, after_phase, stages[k],
                                    writer=writer, global_step_offset=first_step,
                                    resume=resumed, save=save_progress)
        phase_ends = phase_end_steps(curve)
        for entry in phase_mse:
            writer.scalars(first_step + phase_ends[entry["phase"]],
                           {f"heldout_mse/{t}": v for t, v in entry["mse"].items()})
        if method.replay:
            run.replay = run.replay.add(select_replay(config, data, k, k_replay))
        eval_tasks = list(stages[k]) if method.fresh_student else seen
        results = evaluate_seen(config, params, obs_norm, eval_tasks, run.encoder)
        for t, r in results.items():
            run.R[k, tasks.index(t)] = r["success_rate"]
        if method.fresh_student:  # earlier tasks keep the score of the student trained on them
            for t in seen[:-len(stages[k])]:
                j = tasks.index(t)
                run.R[k, j] = run.R[stage_of_task[j], j]
        run.params, run.obs_norm, run.stages_done = params, obs_norm, k + 1
        experts = [e["num_experts"] for e in run.log] + [num_experts(params)]
        stage_steps = max(phase_ends.values())
        run.log.append(stage_log(method, evals[-1], phase_mse, experts, k, stage_of_task,
                                 tasks, drift, time.time() - t0, train_steps=stage_steps))
        run.log[-1]["train_curve"] = [  # the run report's per-stage loss curves
            {key: m[key] for key in ("step", "phase", "loss", "mse")} for m in curve]
        summary = metrics.summarize(run.R[:k + 1], stage_of_task)
        writer.scalars(first_step + stage_steps,
                       stage_scalars(summary[k], run.R[k], tasks, stage_of_task, k,
                                     num_experts(params)))
        logging.info("stage %d/%d done in %.0fs: Acc %.3f BWT %s experts %d", k + 1, len(stages),
                     time.time() - t0, summary[k]["Acc"], summary[k]["BWT"],
                     num_experts(params))
        _save(ckpt, run, config)
        progress_ckpt.delete_all()  # superseded by the stage's checkpoint
        prev_data = data
    results = write_continual_results(workdir, config, run, tasks, stage_of_task,
                                      time.time() - start)
    parallel.barrier("results written")  # every process ends once process 0 has written
    return dict(results, state=run)  # the in-memory RunState too (not in results.json)


def write_routing_and_embedding_plots(workdir, config, run: RunState, tasks) -> list[str]:
    """Per-task expert-usage heatmaps (paper Table 9) and, with a task encoder, the PCA of
    task embeddings (Fig. 3), on every window of the seen tasks' held-out teacher
    episodes (`pipeline.heldout_variations`)."""
    heldout = [pipeline.collect_or_load(config, t, pipeline.heldout_data_dir(config, workdir),
                                        pipeline.heldout_variations(config)) for t in tasks]
    ev = heldout_evaluation(config, run.params, run.obs_norm, heldout, run.encoder)
    ids, fractions = routing_stats.per_task_fractions(
        ev["expert_index"], ev["token_task"], num_experts(run.params), tasks=ev["task_ids"],
        token_mask=ev["token_valid"])
    names = [MT25_TASKS[int(i)] for i in ids]
    out = pathlib.Path(workdir)
    paths = [routing_stats.write_fractions_json(str(out / "routing.json"), ids, fractions,
                                                names)]
    paths += routing_stats.plot_routing_heatmaps(fractions, names, str(out))
    if run.encoder is not None:
        windows, window_tasks = encoder_windows(config, heldout)
        z = jax.jit(task_embedding.embed)(run.encoder, *windows)
        paths.append(routing_stats.plot_task_embedding_pca(
            z, window_tasks, dict(enumerate(MT25_TASKS)), str(out)))
    return paths


def write_continual_results(workdir, config, run: RunState, tasks, stage_of_task, wall):
    """results.json (R with NaN rows for stages not run yet, per-stage metrics, teacher
    recovery, the stage logs, the evaluation protocol) and the accuracy-matrix
    JSON/markdown/heatmap of the finished stages."""
    done = run.R[:run.stages_done]
    summary = metrics.summarize(done, stage_of_task)
    for k, row in enumerate(summary):
        seen = stage_of_task <= k
        row["teacher_recovery"] = metrics.teacher_recovery(done[k, seen],
                                                           run.teacher_success[seen])
    results = {"method": config.method, "seed": config.seed, "tasks": list(tasks),
               "stage_of_task": stage_of_task.tolist(), "R": run.R.tolist(),
               "summary": summary, "teacher_success": run.teacher_success.tolist(),
               "num_experts": num_experts(run.params), "stages": run.log,
               "evaluation": protocol.describe(config), "wall_time_s": wall,
               "config": config.to_dict()}
    if not parallel.is_main_process():  # process 0 writes the run's files
        return results
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(workdir) / "results.json").write_text(json.dumps(results, indent=2,
                                                                   default=float))
    report.write_accuracy_matrix(workdir, done, tasks, stage_of_task,
                                 evaluation=results["evaluation"])
    seen = [t for t, k in zip(tasks, stage_of_task) if k < run.stages_done]
    write_routing_and_embedding_plots(workdir, config, run, seen)
    run_report.write_continual_report(workdir, results)
    return results
