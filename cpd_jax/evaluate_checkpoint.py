"""`--mode=eval`: restore a saved student (a joint run's, or a continual run's at any
stage, any expert count) and evaluate it.

The student's structure comes from the checkpoint's metadata (its expert count and
config), not from the command's config, so a checkpoint of stage 5 restores with the
experts it grew.
"""

import json
import pathlib

import ml_collections
from absl import logging

from cpd_jax import checkpointing, live_metrics, pipeline
from cpd_jax.config_checks import check_tasks, split_stages
from cpd_jax.errors import UserError
from cpd_jax.evaluation import protocol, report
from cpd_jax.student.inputs import obs_norm_from_tree


def restore_student(checkpoint_dir, step=None):
    """(config of the run, params, ObsNorm, metadata, task-encoder params or None) from a
    run's checkpoint directory."""
    tree, meta = checkpointing.RunCheckpointer(checkpoint_dir).restore(step)
    config = ml_collections.ConfigDict(meta["config"])
    config.student.num_experts = meta["num_experts"]
    obs_norm = obs_norm_from_tree(tree["obs_norm"])
    return config, tree["params"], obs_norm, meta, tree.get("encoder")


def check_checkpoint(checkpoint_dir) -> dict:
    """The latest step's metadata, after refusing (UserError, before any evaluation) a
    missing or empty directory or another kind of checkpoint. The command's config is not
    compared with the run's: only its `eval`, `env` and `parallel` fields are used."""
    from cpd_jax.continual import state

    ckpt = checkpointing.RunCheckpointer(checkpoint_dir)
    where = f"--restore={checkpoint_dir}"
    if not ckpt.directory.is_dir():
        raise UserError(f"{where}: no such checkpoint directory; pass a run's "
                        "<workdir>/checkpoints")
    if ckpt.latest() is None:
        raise UserError(f"{where}: no checkpoint steps in it; pass a run's "
                        "<workdir>/checkpoints after at least one finished stage")
    meta = ckpt.restore_metadata()
    checkpointing.check_format(meta, (state.CHECKPOINT_FORMAT, pipeline.CHECKPOINT_FORMAT),
                               where, "pass a continual or joint run's <workdir>/checkpoints")
    return meta


def seen_tasks(saved_config, meta) -> list[str]:
    """The tasks a checkpoint was trained on: a joint run's, or those of the stages a
    continual run has finished, in stage order."""
    if meta["format"] == pipeline.CHECKPOINT_FORMAT:
        return list(saved_config.tasks)
    seen = split_stages(saved_config.tasks, saved_config.continual.stage_sizes)
    return [t for s in seen[:meta["stages_done"]] for t in s]


def run(config, checkpoint_dir, workdir, tasks=None) -> dict:
    """Evaluates the checkpoint on `tasks` (default: every task it has seen)."""
    from cpd_jax.continual import results as continual_results

    check_checkpoint(checkpoint_dir)
    saved_config, params, obs_norm, meta, encoder = restore_student(checkpoint_dir)
    if tasks is None:
        tasks = seen_tasks(saved_config, meta)
    tasks = check_tasks(tasks, "--eval_tasks")
    # The command's config decides how to evaluate (protocol, episodes, backend); the
    # saved one which goals the student was trained on.
    saved_config.eval = config.eval
    saved_config.env = config.env
    protocol.check_goal_split(saved_config, tasks)
    per_task = continual_results.evaluate_seen(saved_config, params, obs_norm, tasks, encoder)
    out = {"checkpoint": str(checkpoint_dir), "stages_done": meta["stages_done"],
           "num_experts": meta["num_experts"], "per_task": per_task,
           "evaluation": protocol.describe(saved_config)}
    from cpd_jax import parallel
    if not parallel.is_main_process():  # every process evaluated its share; one writes
        return out
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "eval_results.json").write_text(json.dumps(out, indent=2))
    lines = ["| task | success | return |", "| --- | --- | --- |"]
    lines += [f"| {t} | {r['success_rate']:.2f} | {r['mean_return']:.1f} |"
              for t, r in per_task.items()]
    lines += ["", report.evaluation_note(out["evaluation"])]
    (workdir / "eval_results.md").write_text("\n".join(lines) + "\n")
    # At the checkpoint's gradient step, so an evaluation in the run's own workdir lands
    # on the run's x axis; `eval/` keeps it apart from the run's own evaluations.
    with live_metrics.make_writer(config, workdir) as writer:
        writer.scalars(continual_results.steps_before_stage(meta.get("log", [])),
                       {f"eval/{tag}": v for tag, v in
                        live_metrics.success_scalars(per_task).items()})
    logging.info("evaluated %s on %d tasks -> %s", checkpoint_dir, len(tasks), workdir)
    return out
