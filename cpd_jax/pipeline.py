"""The experiment pipeline: teacher data -> distillation -> closed-loop evaluation.

`train_and_evaluate(config, workdir)` is what `python -m cpd_jax.main` runs for the
joint protocol. Everything it produces lands in `workdir`:

  data/<task>.npz|json  teacher rollouts (reused by later runs with the same workdir)
  results.json          per-task success, mean success, wall times, training curve
  results.md            the same as a markdown table
"""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from cpd_jax import distillation
from cpd_jax.data import rollouts
from cpd_jax.envs import make_env, validate_tasks
from cpd_jax.envs.variations import NUM_VARIATIONS
from cpd_jax.evaluation import closed_loop
from cpd_jax.student import Student, StudentSpec
from cpd_jax.student.inputs import context_dim, fit_obs_norm
from cpd_jax.teachers import make_teacher


def train_variations(data_config, num_episodes: int) -> list[int]:
    """Variation of each collected episode: cycles through the training variations."""
    return [(data_config.first_train_variation + i % data_config.num_train_variations)
            % NUM_VARIATIONS for i in range(num_episodes)]


def eval_variations(config) -> list[int]:
    return [(config.eval.first_variation + i) % NUM_VARIATIONS
            for i in range(config.eval.episodes_per_task)]


def data_dir(config, workdir) -> pathlib.Path:
    """Where teacher rollouts live: `config.data.dir`, else `<workdir>/data`."""
    return pathlib.Path(config.data.dir) if config.data.dir else pathlib.Path(workdir) / "data"


def collect_or_load(config, task: str, directory: pathlib.Path) -> rollouts.Trajectories:
    """Teacher rollouts of `task`: loaded if the workdir has them, else collected+saved."""
    if rollouts.exists(directory, task):
        traj = rollouts.load(directory, task)
        if traj.num_episodes >= config.data.episodes_per_task:
            logging.info("loaded %d %s episodes from %s", traj.num_episodes, task, directory)
            return traj.select(slice(0, config.data.episodes_per_task))
    teacher = make_teacher(config.teacher, task)
    variations = train_variations(config.data, config.data.episodes_per_task)
    chunks, start = [], time.time()
    for i in range(0, len(variations), config.data.collect_batch):
        chunk = variations[i:i + config.data.collect_batch]
        env = make_env(config.env.backend, [task] * len(chunk))
        chunks.append(rollouts.collect(env, teacher, chunk, seed=config.seed + i,
                                       noise_std=config.data.collect_noise_std))
    traj = rollouts.concatenate(chunks)
    rollouts.save(directory, traj, {"backend": config.env.backend,
                                   "teacher": config.teacher.kind,
                                   "noise_std": config.data.collect_noise_std,
                                   "seed": config.seed})
    logging.info("collected %d %s episodes in %.1fs, teacher success %.2f",
                 traj.num_episodes, task, time.time() - start, traj.episode_success().mean())
    return traj


def init_student(config, key):
    """(model, params) of the configured student for inputs of obs + task context."""
    spec = StudentSpec.from_config(config.student)
    model = Student(spec)
    features = 39 + context_dim(config.student.task_context, config.task_encoder.embed_dim)
    dummy = jnp.zeros((1, spec.seq_len, features))
    params = model.init(key, dummy, jnp.ones((1, spec.seq_len), bool))["params"]
    return model, params


def data_mesh(config):
    """A 1-D 'data' mesh over all devices when there are several (and the config allows
    data parallelism), else None: the same config runs unchanged on 1 or N devices."""
    from cpd_jax import parallel

    if not config.parallel.data_parallel or jax.device_count() == 1:
        return None
    return parallel.make_mesh()


def write_results(workdir: pathlib.Path, results: dict) -> None:
    """results.json and results.md (one row per task, then the mean)."""
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["| task | teacher success (data) | student success | student return |",
             "| --- | --- | --- | --- |"]
    for task, r in results["per_task"].items():
        lines.append(f"| {task} | {r['teacher_success']:.2f} | {r['success_rate']:.2f} "
                     f"| {r['mean_return']:.1f} |")
    lines.append(f"| **mean** | {results['teacher_mean_success']:.3f} | "
                 f"**{results['mean_success']:.3f}** | |")
    lines.append("")
    lines.append(f"{results['episodes_per_task']} held-out episodes per task (variations "
                 f"{results['eval_variations']}); wall time {results['wall_time_s']:.0f} s.")
    (workdir / "results.md").write_text("\n".join(lines) + "\n")


def train_and_evaluate(config, workdir) -> dict:
    """Joint distillation of `config.tasks` and closed-loop evaluation; returns results."""
    start = time.time()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tasks = validate_tasks(config.tasks)
    if config.protocol != "joint":
        raise ValueError(f"unknown protocol {config.protocol!r}")
    key_init, key_train = jax.random.split(jax.random.PRNGKey(config.seed))

    trajs = [collect_or_load(config, t, data_dir(config, workdir)) for t in tasks]
    t_data = time.time() - start

    model, params = init_student(config, key_init)
    source = distillation.make_window_source(trajs, config.student.seq_len)
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
        from cpd_jax import parallel
        state, source = parallel.replicate((state, source), mesh)
    logging.info("distilling %d tasks, %d windows, %d steps", len(tasks),
                 source.num_windows, num_steps)
    t0 = time.time()
    state, curve = distillation.distill(state, step_fn, source, num_steps,
                                        config.distill.log_every)
    t_train = time.time() - t0

    t0 = time.time()
    policy = closed_loop.student_policy(model, state.params, config.student.task_context,
                                        obs_norm=obs_norm)
    per_task = closed_loop.evaluate_tasks(
        lambda ts: make_env(config.env.backend, ts), policy, tasks, eval_variations(config),
        config.student.seq_len)
    for traj in trajs:
        per_task[traj.task]["teacher_success"] = float(traj.episode_success().mean())
    results = {
        "tasks": list(tasks), "per_task": per_task,
        "mean_success": float(np.mean([r["success_rate"] for r in per_task.values()])),
        "teacher_mean_success": float(np.mean([r["teacher_success"]
                                               for r in per_task.values()])),
        "episodes_per_task": config.eval.episodes_per_task,
        "eval_variations": eval_variations(config),
        "train_steps": num_steps, "curve": curve,
        "wall_time_s": time.time() - start,
        "time_s": {"data": t_data, "train": t_train, "eval": time.time() - t0},
        "config": config.to_dict(),
    }
    write_results(workdir, results)
    logging.info("mean success %.3f; results in %s", results["mean_success"], workdir)
    return results
