"""User errors on the command line: one `error:` line naming the field, exit code 2, no
traceback (unless --traceback), and refused before any data is collected."""

import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from cpd_jax import config_checks, distillation
from cpd_jax.configs import quickstart
from cpd_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_main(workdir, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "cpd_jax.main",
                           "--config=cpd_jax/configs/quickstart.py", f"--workdir={workdir}",
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _assert_user_error(out, workdir, *names):
    """Exit 2, last stderr line `error: ...` naming `names`, no traceback, no data."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-2000:]
    assert lines[-1].startswith("error: "), lines[-1]
    assert all(n in lines[-1] for n in names), lines[-1]
    assert "Traceback" not in out.stderr
    assert not (pathlib.Path(workdir) / "data").exists()
    assert not list(pathlib.Path(workdir).rglob("*.npz"))


def test_out_of_range_config_value(tmp_path):
    out = _run_main(tmp_path, "--config.student.num_experts=0")
    _assert_user_error(out, tmp_path, "student.num_experts", ">= 1")


def test_unknown_task(tmp_path):
    out = _run_main(tmp_path, "--config.tasks=('reach-v3','fly-v3')")
    _assert_user_error(out, tmp_path, "tasks", "fly-v3")


def test_one_task_contrastive_stage(tmp_path):
    out = _run_main(tmp_path, "--config.protocol=stages",
                    "--config.student.task_context=contrastive",
                    "--config.continual.stage_sizes=(1,2)")
    _assert_user_error(out, tmp_path, "student.task_context", "continual.stage_sizes")


def test_eval_of_a_missing_checkpoint(tmp_path):
    out = _run_main(tmp_path, "--mode=eval", f"--restore={tmp_path / 'nowhere'}")
    _assert_user_error(out, tmp_path, "--restore", "nowhere")


def test_eval_of_another_kind_of_checkpoint(tmp_path):
    from cpd_jax import checkpointing

    meta = {"format": "not-a-continual-run", "stages_done": 1}
    checkpointing.RunCheckpointer(tmp_path / "ckpt").save(1, {"x": np.zeros(2)}, meta)
    out = _run_main(tmp_path / "eval", "--mode=eval", f"--restore={tmp_path / 'ckpt'}")
    _assert_user_error(out, tmp_path / "eval", "--restore", "not-a-continual-run")


def test_traceback_flag_shows_the_traceback(tmp_path):
    out = _run_main(tmp_path, "--config.student.num_experts=0", "--traceback")
    assert out.returncode not in (0, 2)
    assert "Traceback" in out.stderr and "UserError" in out.stderr


@pytest.mark.parametrize("field, value", [
    ("student.num_experts", 0), ("student.dim", 0), ("student.num_blocks", 0),
    ("student.seq_len", 0), ("distill.max_steps", -1), ("distill.batch_size", 0),
    ("distill.learning_rate", 0.0), ("distill.log_every", 0),
    ("continual.replay_fraction", 1.5), ("continual.phase1_fraction", 1.0),
    ("continual.phase1_fraction", 0.0), ("continual.new_experts_per_stage", -1),
    ("data.episodes_per_task", 0), ("eval.episodes_per_task", 0),
    ("continual.feature_anchor_coef", -1.0), ("continual.route_anchor_coef", -0.5),
    ("student.task_context", "text"), ("distill.lr_schedule", "linear"),
])
def test_check_config_names_the_out_of_range_field(field, value):
    c = quickstart.get_config()
    section, name = field.split(".")
    c[section][name] = value
    with pytest.raises(UserError, match=f"^{field}"):
        config_checks.check_config(c)


def test_check_config_accepts_the_edges_and_checks_heads():
    c = quickstart.get_config()
    c.continual.replay_fraction, c.continual.new_experts_per_stage = 0.0, 0
    c.distill.max_steps = 0  # 0 = steps from distill.epochs
    config_checks.check_config(c)
    c.student.dim = 65  # 2 heads
    with pytest.raises(UserError, match="student.num_heads"):
        config_checks.check_config(c)


def test_one_task_stage_is_fine_with_replay_of_old_tasks():
    c = quickstart.get_config()
    c.protocol, c.student.task_context, c.continual.stage_sizes = "stages", "contrastive", (2, 1)
    config_checks.check_config(c)  # "ours" replays stage 1's tasks at stage 2
    c.method = "finetune"
    with pytest.raises(UserError, match="stage 2.*finetune"):
        config_checks.check_config(c)
    c.method, c.continual.stage_sizes = "ours", (1, 2)
    with pytest.raises(UserError, match="at least two tasks, but stage 1"):
        config_checks.check_config(c)


def test_non_finite_loss_is_a_user_error_naming_the_fix():
    assert issubclass(distillation.NonFiniteLossError, UserError)
    state = types.SimpleNamespace(step=3)
    nan_step = lambda s, _: (s, {"loss": np.nan, "mse": np.nan, "aux_loss": 0.0})
    with pytest.raises(distillation.NonFiniteLossError, match="distill.learning_rate"):
        distillation.distill(state, nan_step, None, 5, log_every=1)


def test_task_film_without_a_task_context_is_refused():
    c = quickstart.get_config()
    c.student.task_film = True
    config_checks.check_config(c)  # one-hot context: fine
    c.student.task_context = "none"
    with pytest.raises(UserError, match="student.task_film=True.*task_context='none'"):
        config_checks.check_config(c)
