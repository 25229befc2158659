"""The joint protocol: teacher data -> distillation -> closed-loop evaluation.

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

from cpd_jax import checkpointing, config_checks, distillation, live_metrics, parallel
from cpd_jax.data.collection import collect_or_load_all, data_dir
from cpd_jax.envs import validate_tasks
from cpd_jax.errors import UserError
from cpd_jax.evaluation import protocol, report, run_report
from cpd_jax.evaluation.closed_loop import evaluate_student
from cpd_jax.student import init_student, num_experts
from cpd_jax.student.inputs import fit_obs_norm, obs_norm_to_tree


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
    mesh = parallel.data_mesh(config)
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
