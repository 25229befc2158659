"""The whole joint pipeline on a tiny config: data on disk, training, eval, result files."""

import json

from cpd_jax import pipeline
from cpd_jax.configs import quickstart


def test_tiny_joint_run_writes_results_and_reuses_data(tmp_path):
    c = quickstart.get_config()
    c.tasks = ("reach-v3",)
    c.data.episodes_per_task = 2
    c.student.dim, c.student.num_blocks, c.student.seq_len = 16, 1, 4
    c.distill.max_steps, c.distill.log_every = 30, 10
    c.eval.episodes_per_task = 2
    results = pipeline.train_and_evaluate(c, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["per_task"]["reach-v3"]["episodes"] == 2
    assert saved["per_task"] == results["per_task"]
    assert 0.0 <= saved["mean_success"] <= 1.0
    assert saved["per_task"]["reach-v3"]["teacher_success"] == 1.0
    assert "| reach-v3 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "data" / "reach-v3.npz").exists()
    assert saved["evaluation"]["protocol"] == "heldout"
    assert saved["evaluation"]["variations"] == [50, 51]  # held-out goals; data used 0, 1
    assert "Evaluation: held-out goals" in (tmp_path / "results.md").read_text()
