"""The README's first command, the continual main job, end to end at a tiny budget:
every stage runs, the accuracy matrix has the protocol's shape and report.md embeds only
plots that exist. Slow: `pytest -m slow tests/test_main_job.py`."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from cpd_jax.configs import continual_quickstart

TINY = ["--config.distill.max_steps=20", "--config.distill.log_every=10",
        "--config.data.episodes_per_task=10", "--config.data.num_train_variations=10",
        "--config.eval.episodes_per_task=1", "--config.eval.mse_episodes_per_task=1"]


@pytest.mark.slow  # three stages of compiles; test_stages covers the report
def test_continual_main_job_runs_and_reports(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cpd_jax.main",
         "--config=cpd_jax/configs/continual_quickstart.py", f"--workdir={tmp_path}", *TINY],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    config = continual_quickstart.get_config()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tasks"] == list(config.tasks)
    R = np.array(results["R"], np.float64)
    sizes = config.continual.stage_sizes
    assert R.shape == (len(sizes), sum(sizes))
    seen = np.arange(len(sizes))[:, None] >= np.array(results["stage_of_task"])[None, :]
    assert np.all(np.isfinite(R[seen])) and np.all(np.isnan(R[~seen]))
    assert results["num_experts"] == (config.student.num_experts
                                      + (len(sizes) - 1) * config.continual.new_experts_per_stage)
    report = (tmp_path / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"accuracy_matrix.png", "task_success.png", "train_curves.png"} <= set(images)
    for name in images:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name
    assert f"{len(sizes)} of {len(sizes)} stages done" in report
