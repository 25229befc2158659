"""The command line: locked configs name a misspelt field; bad tasks are named."""

import subprocess
import sys

import pytest


def _run_main(*args):
    return subprocess.run([sys.executable, "-m", "cpd_jax.main",
                           "--config=cpd_jax/configs/quickstart.py", *args],
                          capture_output=True, text=True, timeout=300)


def test_misspelt_config_field_is_named():
    out = _run_main("--workdir=/tmp/unused", "--config.distill.batchsize=3")
    assert out.returncode != 0
    assert "batchsize" in out.stderr


def test_unknown_task_is_named(tmp_path):
    out = _run_main(f"--workdir={tmp_path}", "--config.tasks=('reach-v3','fly-v3')")
    assert out.returncode != 0
    assert "fly-v3" in out.stderr and "reach-v3" in out.stderr


def test_every_config_file_loads_and_has_paper_defaults():
    from cpd_jax.configs import default
    c = default.get_config()
    assert (c.student.dim, c.student.num_blocks, c.student.num_experts) == (256, 5, 8)
    assert (c.student.seq_len, c.distill.batch_size, c.distill.learning_rate) == (20, 128, 1e-4)
