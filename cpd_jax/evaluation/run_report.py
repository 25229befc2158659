"""One `report.md` per run: the plots a person looks at first, with the numbers they show.

`write_continual_report(workdir, results)` (a `stages` run) and
`write_joint_report(workdir, results)` (a `joint` run) take the run's results dict (as in
its results.json), draw the plots the run does not draw itself (per-task success bars,
training curves) and write `report.md`, which embeds those and the ones the run already
wrote beside it (accuracy matrix, routing heatmaps, task-embedding PCA, learning curve) by
relative links, so the directory can be moved or browsed on GitHub as it is.
"""

import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cpd_jax.evaluation import metrics  # noqa: E402
from cpd_jax.evaluation.report import (PERCENT, evaluation_note, percent_text,  # noqa: E402
                                       save_figure)

REPORT = "report.md"
TASK_SUCCESS_PNG = "task_success.png"
TRAIN_CURVES_PNG = "train_curves.png"
# Plots the runs write themselves, embedded when present: (file, caption).
CONTINUAL_PLOTS = (
    ("accuracy_matrix.png", "Accuracy matrix: success on each task (column) after each "
                            "stage (row)"),
    ("routing_all_layers.png", "Routing: share of each task's tokens sent to each expert "
                               "(held-out teacher windows, after the last stage)"),
    ("task_embedding_pca.png", "Task embeddings (PCA of z over held-out windows)"),
)


def _image(name: str, caption: str) -> list[str]:
    return [f"![{caption}]({name})", "", f"*{caption}.*", ""]


def plot_task_success(path, tasks: Sequence[str], student: Sequence[float],
                      teacher: Sequence[float] | None = None) -> pathlib.Path:
    """Bars of the student's success per task (float[T] in [0, 1]), with the teachers'
    success as a marker on each bar."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(tasks) + 1.5), 3.5))
    x = np.arange(len(tasks))
    ax.bar(x, PERCENT * np.asarray(student, np.float64), color="tab:blue", label="student")
    if teacher is not None:
        ax.scatter(x, PERCENT * np.asarray(teacher, np.float64), marker="_", s=400,
                   color="black", zorder=3, label="teacher")
    ax.set_xticks(x, list(tasks), rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def plot_train_curves(path, curves: Sequence[Sequence[Mapping]], labels: Sequence[str],
                      xlabel: str = "gradient steps") -> pathlib.Path:
    """Distillation MSE vs gradient step, one line per curve (e.g. per stage), on one
    running x axis: curve i starts where curve i-1 ended. Each curve is the list of
    logged metric dicts ({"step", "mse", ...}) of `distillation.distill`."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    offset = 0
    for curve, label in zip(curves, labels):
        if not curve:
            continue
        steps = offset + np.cumsum(_step_increments(curve))
        ax.plot(steps, [m["mse"] for m in curve], marker=".", label=label)
        offset = int(steps[-1])
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("teacher-action MSE (train batch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _step_increments(curve: Sequence[Mapping]) -> np.ndarray:
    """Steps between consecutive log points of a curve whose "step" may restart (phase 2
    of a stage counts from 0 again): an increment is the step itself after a restart."""
    steps = np.array([m["step"] for m in curve], np.int64)
    previous = np.concatenate([[0], steps[:-1]])
    return np.where(steps > previous, steps - previous, steps)


def _continual_summary_lines(results: Mapping) -> list[str]:
    R = np.asarray(results["R"], np.float64)
    sot = np.asarray(results["stage_of_task"])
    done = len(results["summary"])
    R = R[:done]
    final = results["summary"][-1]
    cw = metrics.continual_world(R, sot)
    return [
        "| final Acc | final BWT | avg incremental Acc | teacher recovery | CW average "
        "performance | CW forgetting | experts | wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {percent_text(final['Acc'])} | {percent_text(final['BWT'])} | "
        f"{percent_text(metrics.average_incremental_accuracy(R, sot, done - 1))} | "
        f"{percent_text(final.get('teacher_recovery'))} | {percent_text(cw['average_performance'])} | "
        f"{percent_text(cw['forgetting'])} | {results.get('num_experts', '—')} | "
        f"{results.get('wall_time_s', float('nan')) / 60:.1f} min |", ""]


def _stage_lines(results: Mapping) -> list[str]:
    tasks, sot = results["tasks"], np.asarray(results["stage_of_task"])
    R = np.asarray(results["R"], np.float64)
    lines = ["| stage | new tasks | new tasks' success | Acc | BWT | experts | held-out "
             "MSE ×1000 (end of each phase) | new → new experts | old → later experts "
             "| seconds |", "|" + " --- |" * 10]
    for k, (row, log) in enumerate(zip(results["summary"], results["stages"])):
        mse = ["{:.1f}".format(1000 * float(np.mean(list(p["mse"].values()))))
               for p in log.get("phase_mse", [])]
        routing = log.get("routing", {})
        lines.append(" | ".join([
            f"| {k + 1}", ", ".join(t for t, s in zip(tasks, sot) if s == k),
            percent_text(metrics.new_task_accuracy(R[:k + 1], sot, k)), percent_text(row["Acc"]),
            percent_text(row["BWT"]), str(log.get("num_experts", "—")), " / ".join(mse) or "—",
            percent_text(routing.get("new_tasks_to_new_experts")),
            percent_text(routing.get("old_tasks_to_later_experts")),
            f"{log.get('seconds', float('nan')):.0f} |"]))
    return lines + [""]


def write_continual_report(workdir, results: Mapping) -> pathlib.Path:
    """`workdir`/report.md of a continual run (results = its results.json dict, at least
    one stage done); also writes task_success.png and, when the stage logs carry their
    training curves, train_curves.png."""
    workdir = pathlib.Path(workdir)
    done = len(results["summary"])
    tasks = results["tasks"]
    sot = np.asarray(results["stage_of_task"])
    seen = [j for j in range(len(tasks)) if sot[j] < done]
    final = np.asarray(results["R"], np.float64)[done - 1]
    teacher = np.asarray(results["teacher_success"], np.float64)
    plot_task_success(workdir / TASK_SUCCESS_PNG, [tasks[j] for j in seen], final[seen],
                      teacher[seen])
    lines = [f"# Continual run: method `{results['method']}`, seed {results['seed']}", "",
             f"{done} of {int(sot.max()) + 1} stages done; {len(seen)} tasks seen. "
             f"{evaluation_note(results.get('evaluation'))}", "",
             *_continual_summary_lines(results),
             "Acc = mean success over the tasks seen so far; BWT = mean over earlier tasks "
             "of (success now − success after its own stage); Continual World's forgetting "
             "averages own-stage − final success over all seen tasks.", "",
             "## Per stage", "", *_stage_lines(results)]
    curves = [log.get("train_curve") for log in results["stages"]]
    if any(curves):
        plot_train_curves(workdir / TRAIN_CURVES_PNG, [c or [] for c in curves],
                          [f"stage {k + 1}" for k in range(len(curves))],
                          xlabel="gradient steps (running over stages)")
        lines += _image(TRAIN_CURVES_PNG, "Distillation loss (teacher-action MSE on the "
                        "training batches) per stage, phases 1 and 2 in sequence")
    lines += ["## Plots", ""]
    lines += _image(TASK_SUCCESS_PNG, f"Success per task after stage {done} (bars) and "
                    "the teachers' success (black marks)")
    for name, caption in CONTINUAL_PLOTS:
        if (workdir / name).exists():
            lines += _image(name, caption)
    lines += ["Files: results.json (everything above), accuracy_matrix.{json,md,png}, "
              "routing.json, checkpoints/ (`--mode=eval --restore=...`)."]
    path = workdir / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def write_joint_report(workdir, results: Mapping) -> pathlib.Path:
    """`workdir`/report.md of a joint distillation run (results = its results.json dict);
    also writes task_success.png and train_curves.png."""
    workdir = pathlib.Path(workdir)
    tasks = results["tasks"]
    per_task = results["per_task"]
    student = [per_task[t]["success_rate"] for t in tasks]
    teacher = [per_task[t].get("teacher_success", float("nan")) for t in tasks]
    plot_task_success(workdir / TASK_SUCCESS_PNG, tasks, student, teacher)
    lines = ["# Joint distillation run", "",
             f"{len(tasks)} tasks, {results['train_steps']} gradient steps. "
             f"{evaluation_note(results.get('evaluation'))}", "",
             "| task | student success | teacher success |", "| --- | --- | --- |"]
    lines += [f"| {t} | {percent_text(s)} | {percent_text(te)} |" for t, s, te in zip(tasks, student, teacher)]
    lines += [f"| **mean** | **{percent_text(results['mean_success'])}** | "
              f"{percent_text(results.get('teacher_mean_success'))} |", "",
              f"Wall time {results.get('wall_time_s', float('nan')) / 60:.1f} min.", ""]
    lines += _image(TASK_SUCCESS_PNG, "Student success per task (bars) and the teachers' "
                    "(black marks)")
    if results.get("curve"):
        plot_train_curves(workdir / TRAIN_CURVES_PNG, [results["curve"]], ["student"])
        lines += _image(TRAIN_CURVES_PNG, "Distillation loss (teacher-action MSE on the "
                        "training batches)")
    if (workdir / "learning_curve.png").exists():
        lines += _image("learning_curve.png", "Held-out success vs gradient steps")
    lines += ["Files: results.json (everything above), results.md."]
    path = workdir / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path
