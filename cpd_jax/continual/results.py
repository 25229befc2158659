"""What a continual run measures and writes: the student on the seen tasks (closed loop)
and on held-out teacher windows, the per-stage log entry and live-metric scalars, and the
run's results files (results.json, the accuracy matrix, routing and embedding plots,
the run report)."""

import json
import pathlib

import jax
import numpy as np

from cpd_jax import distillation, parallel
from cpd_jax.continual.encoder import embed_fn_for, encoder_windows
from cpd_jax.continual.state import RunState
from cpd_jax.data import collection
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.envs import MT25_TASKS
from cpd_jax.evaluation import metrics, protocol, report, routing_stats, run_report
from cpd_jax.evaluation.closed_loop import evaluate_student
from cpd_jax.student import make_student, num_experts, task_embedding


def evaluate_seen(config, params, obs_norm, tasks, encoder=None) -> dict:
    return evaluate_student(config, make_student(config, num_experts(params)), params, obs_norm,
                            tasks, embed_fn_for(encoder))


def heldout_evaluation(config, params, obs_norm, heldout: list[Trajectories],
                       encoder=None) -> dict:
    """The student on every window of the held-out teacher episodes:
    `distillation.evaluate_windows` (per-task MSE, routing of every token)."""
    source = distillation.make_window_source(heldout, config.student.seq_len)
    return distillation.evaluate_windows(make_student(config, num_experts(params)), params,
                                         source, config.student.task_context,
                                         embed_fn_for(encoder), obs_norm)


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


def write_routing_and_embedding_plots(workdir, config, run: RunState, tasks) -> list[str]:
    """Per-task expert-usage heatmaps (paper Table 9) and, with a task encoder, the PCA of
    task embeddings (Fig. 3), on every window of the seen tasks' held-out teacher
    episodes (`collection.heldout_variations`)."""
    heldout = [collection.collect_or_load(config, t, collection.heldout_data_dir(config, workdir),
                                          collection.heldout_variations(config)) for t in tasks]
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
