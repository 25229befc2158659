"""Algorithm 1: continual distillation over a stream of stages.

Per stage k: load/collect teacher data of the stage's tasks; (k >= 2) add experts;
train on stage data + replay with the phase schedule (optax freezing); pick replay
trajectories (DPP); evaluate on every task seen so far (row k of the accuracy matrix
R); checkpoint. Restarting the same command resumes after the last finished stage.
Every stage's randomness is `fold_in(seed, stage)`, so a resumed run reproduces an
uninterrupted one.
"""

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from cpd_jax import checkpointing, distillation, parallel, pipeline
from cpd_jax.continual import freezing, penalties
from cpd_jax.continual.methods import Method, get_method
from cpd_jax.data import replay as replay_lib
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.envs import MT25_TASKS, make_env, validate_tasks
from cpd_jax.evaluation import closed_loop, metrics, report, routing_stats
from cpd_jax.student import Student, StudentSpec, growth, num_experts
from cpd_jax.student import task_embedding
from cpd_jax.student.inputs import (ObsNorm, fit_obs_norm, obs_norm_from_tree,
                                    obs_norm_to_tree, student_inputs)

CHECKPOINT_FORMAT = "cpd_jax.continual/v1"
# Config fields that may change between a run and its resumption (they do not change
# what is computed): logging cadence, checkpoint retention, where shared data lives.
RESUMABLE_FIELDS = ("distill.log_every", "checkpoint.max_to_keep", "data.dir")


def split_stages(tasks, stage_sizes) -> list[tuple[str, ...]]:
    """The task stream cut into consecutive stages of the given sizes."""
    tasks = validate_tasks(tasks)
    if sum(stage_sizes) != len(tasks) or min(stage_sizes) < 1:
        raise ValueError(f"stage sizes {tuple(stage_sizes)} do not partition "
                         f"{len(tasks)} tasks")
    bounds = np.cumsum([0, *stage_sizes])
    return [tasks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@dataclasses.dataclass
class RunState:
    """Everything a later stage (or a resumed run) needs.

    R: float64[S, T] success of task j after stage i (NaN: not yet seen / not run).
    """

    stages_done: int
    params: dict
    obs_norm: ObsNorm
    replay: replay_lib.ReplayBuffer
    R: np.ndarray
    teacher_success: np.ndarray  # float64[T], NaN until the task's data exists
    encoder: dict | None = None  # task-encoder params (task_context "contrastive")
    opt_state: object = None


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
                                   config.continual.replay_slice_len)


def _shifted(x):
    """x[:, t-1] at step t (zeros at t=0): what the agent has seen before acting at t."""
    return np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def train_encoder(config, trajectories: list[Trajectories], key) -> dict:
    """Task encoder (InfoNCE, §4.3) on windows of (o_t, a_{t-1}, r_{t-1}) — the same
    history the student's context sees at evaluation, where a_t is not known yet."""
    windows, ids = [], []
    for traj in trajectories:
        w, _ = task_embedding.make_windows(traj.obs, _shifted(traj.actions),
                                           _shifted(traj.rewards), config.student.seq_len,
                                           length=traj.lengths)
        windows.append(w)
        ids.append(np.full(len(w.valid), traj.task_id))
    stacked = task_embedding.Windows(*(np.concatenate(f) for f in zip(*windows)))
    enc_config = task_embedding.TaskEncoderConfig.from_config(config.task_encoder)
    return task_embedding.train_task_encoder(key, stacked, np.concatenate(ids), enc_config)


def embed_fn_for(encoder):
    """History -> z float32[B, Z] with the encoder's params (None without an encoder)."""
    if encoder is None:
        return None
    return lambda h: task_embedding.embed(encoder, h.obs, h.prev_actions, h.prev_rewards,
                                          h.valid)


def _student(config, n_experts: int) -> Student:
    spec = dataclasses.replace(StudentSpec.from_config(config.student), num_experts=n_experts)
    return Student(spec)


def _optimizer(config, method: Method, params, num_old: int, stage: int, phase: int,
               num_steps: int):
    """(tx, frozen mask or None) for one phase of one stage (stage is 1-based)."""
    if method.freeze:
        tx = freezing.make_optimizer(
            params, num_old, stage, phase, config.distill.learning_rate,
            config.distill.weight_decay, freeze_backbone=config.continual.freeze_backbone,
            freeze_gating=config.continual.freeze_gating)
        trainable = freezing.trainable_labels(stage, phase, config.continual.freeze_backbone,
                                              config.continual.freeze_gating)
        return tx, freezing.frozen_mask(params, num_old, trainable)
    tx = distillation.make_optimizer(config.distill, num_steps)
    if method.optimizer == "trac":
        from cpd_jax.continual import trac
        tx = trac.trac(tx)
    return tx, None


def _penalty(config, method: Method, model, prev_params, prev_source, obs_norm, key):
    """EWC / KL penalty anchored at the previous stage's student (None otherwise)."""
    if method.penalty == "none" or prev_params is None:
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


def train_stage(config, method: Method, params, num_old: int, stage: int, source,
                obs_norm: ObsNorm, key, penalty_fn=None, encoder=None):
    """All phases of one stage. Returns (params, opt_state, curve)."""
    model = _student(config, num_experts(params))
    total = distillation.num_train_steps(config.distill, source)
    phase_ids = freezing.phases(stage, config.continual.freeze_gating) if method.freeze else (1,)
    fractions = ([config.continual.phase1_fraction, 1 - config.continual.phase1_fraction]
                 if len(phase_ids) == 2 else [1.0])
    curve, opt_state = [], None
    mesh = pipeline.data_mesh(config)
    for phase, fraction in zip(phase_ids, fractions):
        steps = max(1, int(round(total * fraction)))
        tx, frozen = _optimizer(config, method, params, num_old, stage, phase, steps)
        step_fn = distillation.make_train_step(model, tx, config.distill,
                                               config.student.task_context,
                                               embed_fn=embed_fn_for(encoder),
                                               obs_norm=obs_norm, penalty_fn=penalty_fn,
                                               frozen=frozen, mesh=mesh)
        state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                          step=jnp.zeros((), jnp.int32),
                                          key=jax.random.fold_in(key, phase))
        if mesh is not None:
            state, source = parallel.replicate((state, source), mesh)
        state, phase_curve = distillation.distill(
            state, step_fn, source, steps, config.distill.log_every,
            label=f"stage {stage} phase {phase}")
        params, opt_state = state.params, state.opt_state
        curve += [dict(m, phase=phase) for m in phase_curve]
    return params, opt_state, curve


def evaluate_seen(config, params, obs_norm, tasks, encoder=None) -> dict:
    model = _student(config, num_experts(params))
    policy = closed_loop.student_policy(model, params, config.student.task_context,
                                        embed_fn=embed_fn_for(encoder), obs_norm=obs_norm)
    return closed_loop.evaluate_tasks(lambda ts: make_env(config.env.backend, ts), policy,
                                      tasks, pipeline.eval_variations(config),
                                      config.student.seq_len)


def _save(ckpt, run: RunState, config, extra: dict):
    tree = {"params": run.params, "obs_norm": obs_norm_to_tree(run.obs_norm),
            "R": run.R, "teacher_success": run.teacher_success}
    if len(run.replay):  # orbax stores no zero-size arrays: an empty buffer is left out
        tree["replay"] = {f: getattr(run.replay, f) for f in replay_lib.FIELDS}
    if run.encoder is not None:
        tree["encoder"] = run.encoder
    if run.opt_state is not None:
        tree["opt_state"] = run.opt_state
    meta = {"format": CHECKPOINT_FORMAT, "stages_done": run.stages_done,
            "num_experts": num_experts(run.params), "replay_size": len(run.replay),
            "config": config.to_dict(), **extra}
    ckpt.save(run.stages_done, tree, meta)


def _restore(ckpt, config) -> RunState | None:
    if ckpt.latest() is None:
        return None
    meta = ckpt.restore_metadata()
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint in {ckpt.directory} has format {meta.get('format')!r}, "
                         f"expected {CHECKPOINT_FORMAT}")
    checkpointing.verify_config(meta, config.to_dict(), ignore=RESUMABLE_FIELDS)
    tree, meta = ckpt.restore()
    logging.info("resuming after stage %d (%d experts)", meta["stages_done"], meta["num_experts"])
    return RunState(stages_done=meta["stages_done"], params=tree["params"],
                    obs_norm=obs_norm_from_tree(tree["obs_norm"]),
                    replay=(replay_lib.ReplayBuffer.from_arrays(**tree["replay"])
                            if "replay" in tree else replay_lib.ReplayBuffer.empty()),
                    R=np.asarray(tree["R"]), teacher_success=np.asarray(tree["teacher_success"]),
                    encoder=tree.get("encoder"))


def run_continual(config, workdir, max_stages: int | None = None) -> dict:
    """Runs (or resumes) every stage; writes results.json/.md and plots.

    Returns the results dict (as in results.json) plus "state": the final `RunState`.

    max_stages: stop after this many finished stages (a batch job per stage, or a test
    of resumption); the next call with the same workdir carries on from there.
    """
    start = time.time()
    workdir = pathlib.Path(workdir)
    method = get_method(config.method)
    stages = split_stages(config.tasks, config.continual.stage_sizes)
    tasks = [t for s in stages for t in s]
    stage_of_task = np.array([k for k, s in enumerate(stages) for _ in s])
    ckpt = checkpointing.RunCheckpointer(workdir / "checkpoints",
                                         max_to_keep=config.checkpoint.max_to_keep)
    run = _restore(ckpt, config)
    seed_key = jax.random.PRNGKey(config.seed)
    timings = []
    last = len(stages) if max_stages is None else min(max_stages, len(stages))
    prev_data = None  # the previous stage's teacher data (EWC's Fisher, KL's targets)
    for k in range(run.stages_done if run else 0, last):
        t0 = time.time()
        key = jax.random.fold_in(seed_key, k)
        k_init, k_grow, k_train, k_replay, k_pen, k_enc = jax.random.split(key, 6)
        data = [pipeline.collect_or_load(config, t, pipeline.data_dir(config, workdir))
                for t in stages[k]]
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
        if config.student.task_context == "contrastive":
            run.encoder = train_encoder(config, data + replayed, k_enc)
        penalty_fn = None
        if prev_params is not None and method.penalty != "none":
            prev_model = _student(config, num_experts(prev_params))
            if prev_data is None:  # resumed at this stage: the previous one's data is on disk
                prev_data = [pipeline.collect_or_load(config, t, pipeline.data_dir(config, workdir))
                             for t in stages[k - 1]]
            prev_source = distillation.make_window_source(prev_data, config.student.seq_len)
            penalty_fn = _penalty(config, method, prev_model, prev_params, prev_source,
                                  obs_norm, k_pen)
        params, opt_state, curve = train_stage(config, method, params, num_old, k + 1, source,
                                               obs_norm, k_train, penalty_fn, run.encoder)
        if method.replay:
            run.replay = run.replay.add(select_replay(config, data, k, k_replay))
        seen = [t for s in stages[:k + 1] for t in s]
        eval_tasks = list(stages[k]) if method.fresh_student else seen
        results = evaluate_seen(config, params, obs_norm, eval_tasks, run.encoder)
        for t, r in results.items():
            run.R[k, tasks.index(t)] = r["success_rate"]
        if method.fresh_student:  # earlier tasks keep the score of the student trained on them
            for t in seen[:-len(stages[k])]:
                j = tasks.index(t)
                run.R[k, j] = run.R[stage_of_task[j], j]
        run.params, run.obs_norm, run.opt_state, run.stages_done = params, obs_norm, opt_state, k + 1
        summary = metrics.summarize(run.R[:k + 1], stage_of_task)
        logging.info("stage %d/%d done in %.0fs: Acc %.3f BWT %s experts %d", k + 1, len(stages),
                     time.time() - t0, summary[k]["Acc"], summary[k]["BWT"],
                     num_experts(params))
        timings.append(time.time() - t0)
        _save(ckpt, run, config, {"summary": summary, "curve_tail": curve[-1:]})
        prev_data = data
    results = write_continual_results(workdir, config, run, tasks, stage_of_task,
                                      time.time() - start)
    return dict(results, state=run)  # the in-memory RunState too (not in results.json)


def write_routing_and_embedding_plots(workdir, config, run: RunState, tasks,
                                      windows_per_task: int = 64) -> list[str]:
    """Per-task expert-usage heatmaps (paper Table 9) and, with a task encoder, the PCA of
    task embeddings (Fig. 3), from windows of each seen task's teacher data."""
    data = [pipeline.collect_or_load(config, t, pipeline.data_dir(config, workdir))
            for t in tasks]
    source = distillation.make_window_source(data, config.student.seq_len)
    history, _ = distillation.sample_batch(jax.random.PRNGKey(config.seed), source,
                                           windows_per_task * len(tasks))
    inputs = student_inputs(config.student.task_context, history, embed_fn_for(run.encoder),
                            run.obs_norm)
    model = _student(config, num_experts(run.params))
    _, aux = jax.jit(model.apply)({"params": run.params}, inputs, history.valid)
    token_tasks = routing_stats.token_task_ids(np.asarray(history.task_id),
                                               config.student.seq_len)
    ids, fractions = routing_stats.per_task_fractions(
        aux["expert_index"], token_tasks, num_experts(run.params),
        token_mask=np.asarray(history.valid).reshape(-1))
    names = [MT25_TASKS[int(i)] for i in ids]
    out = pathlib.Path(workdir)
    paths = [routing_stats.write_fractions_json(str(out / "routing.json"), ids, fractions,
                                                names)]
    paths += routing_stats.plot_routing_heatmaps(fractions, names, str(out))
    if run.encoder is not None:
        z = embed_fn_for(run.encoder)(history)
        paths.append(routing_stats.plot_task_embedding_pca(
            z, np.asarray(history.task_id), dict(enumerate(MT25_TASKS)), str(out)))
    return paths


def write_continual_results(workdir, config, run: RunState, tasks, stage_of_task, wall):
    """results.json (R with NaN rows for stages not run yet) and the accuracy-matrix
    JSON/markdown/heatmap of the finished stages."""
    done = run.R[:run.stages_done]
    summary = metrics.summarize(done, stage_of_task)
    results = {"method": config.method, "seed": config.seed, "tasks": list(tasks),
               "stage_of_task": stage_of_task.tolist(), "R": run.R.tolist(),
               "summary": summary, "teacher_success": run.teacher_success.tolist(),
               "num_experts": num_experts(run.params), "wall_time_s": wall,
               "config": config.to_dict()}
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(workdir) / "results.json").write_text(json.dumps(results, indent=2,
                                                                   default=float))
    report.write_accuracy_matrix(workdir, done, tasks, stage_of_task)
    seen = [t for t, k in zip(tasks, stage_of_task) if k < run.stages_done]
    write_routing_and_embedding_plots(workdir, config, run, seen)
    return results
