"""The experiment pipeline: teacher data -> distillation -> closed-loop evaluation.

`train_and_evaluate(config, workdir)` is what `python -m cpd_jax.main` runs for the
joint protocol. Everything it produces lands in `workdir`:

  data/<task>.npz|json  teacher rollouts (reused by later runs with the same workdir)
  results.json          per-task success, mean success, wall times, training curve
  results.md            the same as a markdown table
  checkpoints/<steps>/  the trained student (orbax; `--mode=eval --restore=` evaluates
                        it, as a continual run's stage)
  report.md             the run report: tables and plots (per-task success bars, loss
                        curve, learning curve), `evaluation.run_report`
"""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cpd_jax import (checkpointing, config_checks, distillation, live_metrics, parallel,
                     progress)
from cpd_jax.data import rollouts
from cpd_jax.envs import make_env, validate_tasks
from cpd_jax.envs import variations as variations_lib
from cpd_jax.errors import UserError
from cpd_jax.evaluation import closed_loop, protocol, report, run_report
from cpd_jax.student import Student, StudentSpec, num_experts
from cpd_jax.student.inputs import context_dim, fit_obs_norm, obs_norm_to_tree
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


def init_student(config, key):
    """(model, params) of the configured student for inputs of obs + task context."""
    spec = StudentSpec.from_config(config.student)
    model = Student(spec)
    features = 39 + context_dim(config.student.task_context, config.task_encoder.embed_dim)
    dummy = jnp.zeros((1, spec.seq_len, features))
    # flax's init runs op by op (not jitted: the params stay bitwise what they were),
    # which is slow enough for a paper-sized student to get a progress line of its own.
    with progress.timed(f"initialising the student ({spec.num_blocks} blocks, "
                        f"{spec.num_experts} experts)"):
        params = model.init(key, dummy, jnp.ones((1, spec.seq_len), bool))["params"]
    return model, params


def data_mesh(config):
    """A 1-D 'data' mesh over all devices when there are several (and the config allows
    data parallelism), else None: the same config runs unchanged on 1 or N devices."""
    if not config.parallel.data_parallel or jax.device_count() == 1:
        return None
    return parallel.make_mesh()


def evaluate_student(config, model, params, obs_norm, tasks, embed_fn=None) -> dict:
    """Closed-loop success of the student on `tasks` under `config.eval` (the protocol's
    goals); {task: {"success_rate", "mean_return", "episodes", "successes"}}.

    On several processes each runs its `parallel.process_share` of the goals and every
    process gets the merged result (`closed_loop.merge_results`).
    """
    policy = closed_loop.student_policy(model, parallel.host_local(params),
                                        config.student.task_context, embed_fn=embed_fn,
                                        obs_norm=obs_norm)
    variations = parallel.process_share(protocol.eval_variations(config),
                                        jax.process_index(), jax.process_count())
    mine = closed_loop.evaluate_tasks(
        lambda ts: make_env(config.env.backend, ts), policy, tasks, variations,
        config.student.seq_len, stop_at_success=config.eval.stop_at_success,
        max_envs=config.eval.max_envs) if variations else {}
    return closed_loop.merge_results(parallel.gather_json("evaluation", mine), tasks)


CHECKPOINT_FORMAT = "cpd_jax.joint/v1"


def save_student(workdir: pathlib.Path, config, params, obs_norm, train_steps: int) -> None:
    """The trained student as `<workdir>/checkpoints/<train_steps>` in the layout of a
    continual run's stage (params, obs_norm; metadata: format, one stage done, its
    expert count, config, gradient steps), so `--mode=eval` restores either. A run
    that starts again in the same workdir trains from scratch and replaces it, as it
    replaces results.json. Every process calls it (orbax synchronises them)."""
    ckpt = checkpointing.RunCheckpointer(workdir / "checkpoints", max_to_keep=1)
    if ckpt.latest() is not None:
        ckpt.delete_all()
    tree = parallel.host_local({"params": params, "obs_norm": obs_norm_to_tree(obs_norm)})
    meta = {"format": CHECKPOINT_FORMAT, "stages_done": 1, "num_experts": num_experts(params),
            "config": config.to_dict(), "log": [{"train_steps": int(train_steps)}]}
    with ckpt:
        ckpt.save(int(train_steps), tree, meta)


def write_results(workdir: pathlib.Path, results: dict) -> None:
    """results.json, results.md (one row per task, then the mean; the learning curve
    as a second table and learning_curve.png when it has several points) and report.md."""
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| task | teacher success (data) | student success | student return |",
             "| --- | --- | --- | --- |"]
    for task, r in results["per_task"].items():
        lines.append(f"| {task} | {r['teacher_success']:.2f} | {r['success_rate']:.2f} "
                     f"| {r['mean_return']:.1f} |")
    lines.append(f"| **mean** | {results['teacher_mean_success']:.3f} | "
                 f"**{results['mean_success']:.3f}** | |")
    ev = results["evaluation"]
    lines += ["", f"Evaluation: {ev['description']}; {ev['episodes_per_task']} episodes per "
              f"task (variations {ev['variations'][0]}..{ev['variations'][-1]}), success = "
              f"{ev['success']}; training goals {ev['training_goals']}. Wall time "
              f"{results['wall_time_s']:.0f} s."]
    curve = results["learning_curve"]
    if len(curve) > 1:
        lines += ["", "| gradient steps | mean success |", "| --- | --- |"]
        lines += [f"| {p['step']} | {p['mean_success']:.3f} |" for p in curve]
        report.plot_learning_curves(workdir / "learning_curve.png",
                                    {"student": curve}, results["teacher_mean_success"])
    (workdir / "results.md").write_text("\n".join(lines) + "\n")
    run_report.write_joint_report(workdir, results)


def train_and_evaluate(config, workdir) -> dict:
    """Joint distillation of `config.tasks` and closed-loop evaluation; returns results.

    With `eval.curve_steps`, the student is also evaluated (same protocol) after each of
    those gradient steps: `results["learning_curve"]` = held-out success vs steps.
    Live metrics (`config.log`, `cpd_jax.live_metrics`): `distill/*` at every log point
    and `success/*` at every evaluation, against the gradient step.
    """
    with live_metrics.make_writer(config, workdir) as writer:
        return _train_and_evaluate(config, workdir, writer)


def _train_and_evaluate(config, workdir, writer) -> dict:
    start = time.time()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tasks = validate_tasks(config.tasks)
    if config.protocol != "joint":
        raise UserError(f"protocol={config.protocol!r}: train_and_evaluate runs 'joint'")
    config_checks.check_joint(config)  # also when called without cpd_jax.main
    protocol.check_goal_split(config, tasks)  # before any data is collected
    key_init, key_train = jax.random.split(jax.random.PRNGKey(config.seed))

    trajs = collect_or_load_all(config, tasks, data_dir(config, workdir))
    t_data = time.time() - start

    model, params = init_student(config, key_init)
    source = distillation.make_window_source(trajs, config.student.seq_len,
                                             config.distill.sampling)
    num_steps = distillation.num_train_steps(config.distill, source)
    tx = distillation.make_optimizer(config.distill, num_steps)
    obs_norm = fit_obs_norm(np.concatenate([t.obs.reshape(-1, t.obs.shape[-1]) for t in trajs]))
    mesh = data_mesh(config)
    step_fn = distillation.make_train_step(model, tx, config.distill,
                                           config.student.task_context, obs_norm=obs_norm,
                                           mesh=mesh)
    state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                      step=jnp.zeros((), jnp.int32), key=key_train)
    if mesh is not None:
        state, source = parallel.replicate((state, source), mesh)
    logging.info("distilling %d tasks, %d windows, %d steps", len(tasks),
                 source.num_windows, num_steps)
    points = sorted({int(s) for s in config.eval.curve_steps if 0 < s < num_steps}) + [num_steps]
    curve, learning_curve, t_train, t_eval, done = [], [], 0.0, 0.0, 0
    for target in points:
        t0 = time.time()
        state, part = distillation.distill(state, step_fn, source, target - done,
                                           config.distill.log_every, writer=writer)
        curve += part
        done = target
        t1 = time.time()
        per_task = evaluate_student(config, model, state.params, obs_norm, tasks)
        t_train, t_eval = t_train + t1 - t0, t_eval + time.time() - t1
        learning_curve.append({"step": target, "per_task": {
            t: r["success_rate"] for t, r in per_task.items()}, "mean_success": float(
            np.mean([r["success_rate"] for r in per_task.values()]))})
        logging.info("step %d/%d: mean held-out success %.3f", target, num_steps,
                     learning_curve[-1]["mean_success"])
        writer.scalars(target, live_metrics.success_scalars(per_task))
    save_student(workdir, config, state.params, obs_norm, num_steps)
    for traj in trajs:
        per_task[traj.task]["teacher_success"] = float(traj.episode_success().mean())
    results = {
        "tasks": list(tasks), "per_task": per_task,
        "mean_success": learning_curve[-1]["mean_success"],
        "teacher_mean_success": float(np.mean([r["teacher_success"]
                                               for r in per_task.values()])),
        "evaluation": protocol.describe(config),
        "train_steps": num_steps, "curve": curve, "learning_curve": learning_curve,
        "wall_time_s": time.time() - start,
        "time_s": {"data": t_data, "train": t_train, "eval": t_eval},
        "config": config.to_dict(),
    }
    if parallel.is_main_process():
        write_results(workdir, results)
    parallel.barrier("results written")  # every process ends once process 0 has written
    logging.info("mean success %.3f; results in %s", results["mean_success"], workdir)
    return results
