"""The run report: numbers equal the metrics computed by hand, every embedded plot exists."""

import re

import numpy as np
import pytest

from cpd_jax.evaluation import metrics, run_report

PNG_MAGIC = b"\x89PNG"
NAN = float("nan")
TASKS = ["reach-v3", "push-v3", "door-open-v3"]
SOT = [0, 0, 1]
R = [[0.8, 0.6, NAN], [0.5, 0.7, 0.9]]


def _curve(steps, phase):
    return [{"step": s, "phase": phase, "loss": 1.0 / s, "mse": 1.0 / s} for s in steps]


def _continual_results():
    summary = metrics.summarize(np.array(R), np.array(SOT))
    for row in summary:
        row["teacher_recovery"] = 0.75
    stages = [{"stage": 0, "num_experts": 4, "phase_mse": [{"phase": 1, "mse": {"a": 0.002}}],
               "seconds": 12.0, "train_curve": _curve([100, 200], 1)},
              {"stage": 1, "num_experts": 5, "seconds": 20.0,
               "phase_mse": [{"phase": 1, "mse": {"a": 0.004}}, {"phase": 2, "mse": {"a": 0.001}}],
               "routing": {"new_tasks_to_new_experts": 0.5, "old_tasks_to_later_experts": 0.1},
               "train_curve": _curve([100], 1) + _curve([50, 100], 2)}]
    return {"method": "ours", "seed": 3, "tasks": TASKS, "stage_of_task": SOT, "R": R,
            "summary": summary, "teacher_success": [1.0, 0.9, 1.0], "num_experts": 5,
            "stages": stages, "evaluation": None, "wall_time_s": 120.0}


def _embedded_images(text):
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_continual_report_numbers_and_plots(tmp_path):
    path = run_report.write_continual_report(tmp_path, _continual_results())
    text = path.read_text()
    # final Acc (0.5 + 0.7 + 0.9) / 3 = 70.0; BWT ((0.5-0.8) + (0.7-0.6)) / 2 = -10.0;
    # average incremental Acc (0.7 + 0.7) / 2 = 70.0; CW forgetting (0.3 - 0.1 + 0) / 3
    assert "| 70.0 | -10.0 | 70.0 | 75.0 | 70.0 | 6.7 | 5 | 2.0 min |" in text
    # stage 2 row: new task door-open 90.0, MSE x1000 of both phases, routing shares
    assert "| 2 | door-open-v3 | 90.0 | 70.0 | -10.0 | 5 | 4.0 / 1.0 | 50.0 | 10.0 | 20 |" in text
    images = _embedded_images(text)
    assert run_report.TASK_SUCCESS_PNG in images and run_report.TRAIN_CURVES_PNG in images
    for name in images:
        assert (tmp_path / name).read_bytes()[:4] == PNG_MAGIC, name


def test_continual_report_embeds_the_runs_own_plots_only_when_present(tmp_path):
    (tmp_path / "accuracy_matrix.png").write_bytes(PNG_MAGIC + b"fake")
    text = run_report.write_continual_report(tmp_path, _continual_results()).read_text()
    assert "accuracy_matrix.png" in _embedded_images(text)
    assert "routing_all_layers.png" not in text


def test_step_increments_follow_phase_restarts():
    # phase 1 logs 100, 200; phase 2 restarts its count: 50, 100 -> running 250, 300
    curve = _curve([100, 200], 1) + _curve([50, 100], 2)
    np.testing.assert_array_equal(np.cumsum(run_report._step_increments(curve)),
                                  [100, 200, 250, 300])
    # one count across phases: unchanged
    np.testing.assert_array_equal(np.cumsum(run_report._step_increments(
        _curve([100, 200, 300], 1))), [100, 200, 300])


def test_joint_report(tmp_path):
    results = {"tasks": TASKS[:2], "train_steps": 400, "mean_success": 0.75,
               "teacher_mean_success": 0.95, "evaluation": None, "wall_time_s": 60.0,
               "per_task": {"reach-v3": {"success_rate": 1.0, "teacher_success": 1.0},
                            "push-v3": {"success_rate": 0.5, "teacher_success": 0.9}},
               "curve": _curve([200, 400], 1)}
    text = run_report.write_joint_report(tmp_path, results).read_text()
    assert "| push-v3 | 50.0 | 90.0 |" in text and "| **mean** | **75.0** | 95.0 |" in text
    for name in _embedded_images(text):
        assert (tmp_path / name).read_bytes()[:4] == PNG_MAGIC, name


@pytest.mark.parametrize("student", [[1.0, 0.0], [NAN, 0.5]])
def test_task_success_plot_accepts_nan(tmp_path, student):
    path = run_report.plot_task_success(tmp_path / "bars.png", TASKS[:2], student, [1.0, 1.0])
    assert path.read_bytes()[:4] == PNG_MAGIC
