"""The whole joint pipeline on a tiny config: data on disk, training, eval, result files."""

import json
import math

from cpd_jax import evaluate_checkpoint, pipeline
from cpd_jax.configs import quickstart


def tiny_joint_config():
    c = quickstart.get_config()
    c.tasks = ("reach-v3",)
    c.data.episodes_per_task = 2
    c.student.dim, c.student.num_blocks, c.student.seq_len = 16, 1, 4
    c.distill.max_steps, c.distill.log_every = 30, 10
    c.eval.episodes_per_task = 2
    return c


def test_tiny_joint_run_writes_results_and_reuses_data(tmp_path):
    c = tiny_joint_config()
    results = pipeline.train_and_evaluate(c, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    reach = saved["per_task"]["reach-v3"]
    assert reach["episodes"] == 2
    assert saved["per_task"] == results["per_task"]
    assert reach["success_rate"] in (0.0, 0.5, 1.0)  # 2 episodes
    assert saved["mean_success"] == reach["success_rate"]  # one task
    assert reach["teacher_success"] == 1.0
    assert saved["train_steps"] == 30
    assert [log["step"] for log in saved["curve"]] == [10, 20, 30]
    assert all(math.isfinite(log["loss"]) for log in saved["curve"])
    assert saved["learning_curve"][-1]["step"] == 30
    assert "| reach-v3 |" in (tmp_path / "results.md").read_text()
    assert saved["evaluation"]["protocol"] == "heldout"
    assert saved["evaluation"]["variations"] == [50, 51]  # held-out goals; data used 0, 1
    assert "Evaluation: held-out goals" in (tmp_path / "results.md").read_text()

    # A second run in the same workdir loads the rollouts instead of collecting them
    # again, and with the same seed reproduces the first run's numbers exactly.
    data_file = tmp_path / "data" / "reach-v3.npz"
    written = data_file.stat().st_mtime_ns
    again = pipeline.train_and_evaluate(c, tmp_path)
    assert data_file.stat().st_mtime_ns == written
    assert again["per_task"] == results["per_task"]
    assert [log["loss"] for log in again["curve"]] == [log["loss"] for log in results["curve"]]

    # The second run replaced the first's checkpoint; --mode=eval restores it and
    # evaluates the same student on the same goals: the run's own numbers.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["30"]
    evaluated = evaluate_checkpoint.run(c, tmp_path / "checkpoints", tmp_path / "eval")
    assert evaluated["stages_done"] == 1
    assert {t: r["successes"] for t, r in evaluated["per_task"].items()} == {
        t: r["successes"] for t, r in again["per_task"].items()}
