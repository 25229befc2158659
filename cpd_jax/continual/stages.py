"""Algorithm 1: continual distillation over a stream of stages.

Per stage k: load/collect teacher data of the stage's tasks; (k >= 2) add experts;
(contrastive context) continue training the task encoder on stage data + replay;
train the student on stage data + replay with the phase schedule (optax freezing);
pick replay trajectories (DPP); evaluate on every task seen so far (row k of the
accuracy matrix R) under the config's evaluation protocol; checkpoint.

Besides R, every stage logs (results.json, "stages"): the student's MSE on held-out
teacher actions per task at the end of each phase, how routing splits new and old
tasks over new and old experts, and how far old tasks' task embeddings moved.

The method (`methods.Method`) builds each phase's optimizer and the stage's penalty;
`state.py` saves and restores the run, `encoder.py` trains the task encoder and
`results.py` measures and writes what a stage and the run report.

Restarting the same command resumes after the last finished stage, or inside the
unfinished one from its latest intra-stage checkpoint (every `checkpoint.every_steps`
steps: the training state, the phase and the stage's results so far; `StageProgress`).
Every stage's randomness is `fold_in(seed, stage)` and the training state carries its
own key, so a resumed run reproduces an uninterrupted one bitwise.
"""

import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cpd_jax import (checkpointing, config_checks, distillation, live_metrics, parallel,
                     progress)
from cpd_jax.continual import encoder as encoder_lib
from cpd_jax.continual import results as results_lib
from cpd_jax.continual import state as state_lib
from cpd_jax.continual.methods import Method, Previous, get_method
from cpd_jax.continual.state import RunState, StageProgress
from cpd_jax.data import replay as replay_lib
from cpd_jax.data import collection
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.envs import MT25_TASKS
from cpd_jax.evaluation import metrics, protocol
from cpd_jax.student import growth, init_student, make_student, num_experts
from cpd_jax.student.inputs import NUM_TASK_IDS, ObsNorm, fit_obs_norm

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
    model = make_student(config, num_experts(params))
    total = distillation.num_train_steps(config.distill, source)
    phase_ids = method.phases(config, stage)
    fractions = ([config.continual.phase1_fraction, 1 - config.continual.phase1_fraction]
                 if len(phase_ids) == 2 else [1.0])
    curve, done = ([] if resume is None else list(resume.curve)), 0
    mesh = parallel.data_mesh(config)
    for phase, fraction in zip(phase_ids, fractions):
        steps = max(1, int(round(total * fraction)))
        if resume is not None and phase < resume.phase:  # in the checkpoint: curve, MSE
            done += steps
            continue
        tx, frozen = method.optimizer(config, params, num_old, stage, phase, total, done,
                                      context_rows(config, stage, stage_tasks))
        step_fn = distillation.make_train_step(model, tx, config.distill,
                                               config.student.task_context,
                                               embed_fn=encoder_lib.embed_fn_for(encoder),
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


def _previous_data(data, load_all, tasks, stage: int) -> list:
    """The teacher data of 1-based `stage` (`tasks`): `data` as kept in memory, or loaded
    again when the run was resumed at the next stage."""
    return data if data is not None else load_all(tasks, f"stage {stage} teacher data")


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
    stages = config_checks.split_stages(config.tasks, config.continual.stage_sizes)
    validate(config, stages)
    tasks = [t for s in stages for t in s]
    stage_of_task = np.array([k for k, s in enumerate(stages) for _ in s])
    ckpt = checkpointing.RunCheckpointer(workdir / "checkpoints",
                                         max_to_keep=config.checkpoint.max_to_keep)
    run = state_lib.restore_run(ckpt, config)
    progress_ckpt = ckpt.nested(state_lib.PROGRESS_DIR, max_to_keep=1)
    resume = state_lib.restore_progress(progress_ckpt, config, run.stages_done if run else 0,
                                        results_lib.steps_before_stage(run.log if run else []))
    seed_key = jax.random.PRNGKey(config.seed)
    last = len(stages) if max_stages is None else min(max_stages, len(stages))
    prev_data = None  # the previous stage's teacher data (EWC's Fisher)
    load_all = lambda ts, what: collection.collect_or_load_all(
        config, ts, collection.data_dir(config, workdir), what=what)
    for k in range(run.stages_done if run else 0, last):
        resumed = resume if resume is not None and resume.stage == k + 1 else None
        t0 = time.time() - (resumed.seconds if resumed else 0.0)
        key = jax.random.fold_in(seed_key, k)
        k_init, k_grow, k_train, k_replay, k_pen, k_enc = jax.random.split(key, 6)
        data = load_all(stages[k], f"stage {k + 1} teacher data")
        seen = [t for s in stages[:k + 1] for t in s]
        heldout = collection.collect_or_load_all(
            config, stages[k] if method.fresh_student else seen,
            collection.heldout_data_dir(config, workdir), collection.heldout_variations(config),
            what=f"stage {k + 1} held-out teacher episodes")
        if run is None or method.fresh_student:  # a new student fits its own normaliser
            _, params = init_student(config, k_init)
            obs_norm = fit_obs_norm(
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
            warm_start = None if method.fresh_student else run.encoder
            with progress.timed(f"stage {k + 1}: training the task encoder "
                                f"({config.task_encoder.steps} InfoNCE steps)"):
                run.encoder, drift = encoder_lib.train_encoder(
                    config, data + replayed, k_enc, warm_start, old_tasks=seen[:-len(stages[k])])
        anchor = None  # the previous stage's student, for the method's penalty
        if prev_params is not None:
            anchor = Previous(model=make_student(config, num_experts(prev_params)),
                              params=prev_params, obs_norm=obs_norm,
                              old_task_ids=[MT25_TASKS.index(t) for t in seen
                                            if t not in stages[k]],
                              data=functools.partial(_previous_data, prev_data, load_all,
                                                     stages[k - 1], k))
        penalty_fn = method.penalty(config, anchor, k_pen)
        phase_mse, evals = (list(resumed.phase_mse) if resumed else []), []

        def after_phase(phase, params):
            evals.append(results_lib.heldout_evaluation(config, params, obs_norm, heldout,
                                                        run.encoder))
            mse = {MT25_TASKS[int(t)]: float(v) for t, v in zip(evals[-1]["task_ids"],
                                                               evals[-1]["mse"])}
            phase_mse.append({"phase": phase, "mse": mse})
            logging.info("stage %d phase %d: held-out teacher-action MSE %.4f (mean over "
                         "%d tasks)", k + 1, phase, np.mean(list(mse.values())), len(mse))

        first_step = results_lib.steps_before_stage(run.log)  # of this stage, in the whole run

        def save_progress(phase, phase_steps, stage_step, state, curve):
            at = StageProgress(k + 1, phase, phase_steps, state, curve, phase_mse,
                               run.encoder, drift, time.time() - t0)
            state_lib.save_progress(progress_ckpt, config, at, first_step + stage_step)

        params, curve = train_stage(config, method, params, num_old, k + 1, source, obs_norm,
                                    k_train, penalty_fn, run.encoder, after_phase, stages[k],
                                    writer=writer, global_step_offset=first_step,
                                    resume=resumed, save=save_progress)
        phase_ends = results_lib.phase_end_steps(curve)
        for entry in phase_mse:
            writer.scalars(first_step + phase_ends[entry["phase"]],
                           {f"heldout_mse/{t}": v for t, v in entry["mse"].items()})
        if method.replay:
            run.replay = run.replay.add(select_replay(config, data, k, k_replay))
        eval_tasks = list(stages[k]) if method.fresh_student else seen
        results = results_lib.evaluate_seen(config, params, obs_norm, eval_tasks, run.encoder)
        for t, r in results.items():
            run.R[k, tasks.index(t)] = r["success_rate"]
        if method.fresh_student:  # earlier tasks keep the score of the student trained on them
            for t in seen[:-len(stages[k])]:
                j = tasks.index(t)
                run.R[k, j] = run.R[stage_of_task[j], j]
        run.params, run.obs_norm, run.stages_done = params, obs_norm, k + 1
        experts = [e["num_experts"] for e in run.log] + [num_experts(params)]
        stage_steps = max(phase_ends.values())
        run.log.append(results_lib.stage_log(method, evals[-1], phase_mse, experts, k,
                                             stage_of_task, tasks, drift, time.time() - t0,
                                             train_steps=stage_steps))
        run.log[-1]["train_curve"] = [  # the run report's per-stage loss curves
            {key: m[key] for key in ("step", "phase", "loss", "mse")} for m in curve]
        summary = metrics.summarize(run.R[:k + 1], stage_of_task)
        writer.scalars(first_step + stage_steps,
                       results_lib.stage_scalars(summary[k], run.R[k], tasks, stage_of_task,
                                                 k, num_experts(params)))
        logging.info("stage %d/%d done in %.0fs: Acc %.3f BWT %s experts %d", k + 1, len(stages),
                     time.time() - t0, summary[k]["Acc"], summary[k]["BWT"],
                     num_experts(params))
        state_lib.save_run(ckpt, run, config)
        progress_ckpt.delete_all()  # superseded by the stage's checkpoint
        prev_data = data
    results = results_lib.write_continual_results(workdir, config, run, tasks, stage_of_task,
                                                  time.time() - start)
    parallel.barrier("results written")  # every process ends once process 0 has written
    return dict(results, state=run)  # the in-memory RunState too (not in results.json)


