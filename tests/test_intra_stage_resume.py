"""Intra-stage checkpoints: a stage killed part-way resumes from its latest one, bitwise.

The unit tests resume the distillation loop from its own checkpoints and round-trip a
stage's progress; the end-to-end test SIGKILLs a real run in a subprocess in the middle
of stage 2 and restarts it.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax import checkpointing, distillation
from cpd_jax.configs import default as default_config
from cpd_jax.continual import state as run_state
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.errors import UserError
from cpd_jax.student import init_student
from cpd_jax.student.inputs import identity_obs_norm
from tests.helpers import tiny_two_stage_config

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 12, 4


def _assert_same_params(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    assert all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


def _fake_source(seq_len: int) -> distillation.WindowSource:
    """4 random episodes of 9 steps of push-v3."""
    rng = np.random.default_rng(0)
    n, t = 4, 9
    push = Trajectories(task="push-v3", obs=rng.normal(size=(n, t, 39)).astype(np.float32),
                        actions=rng.uniform(-1, 1, (n, t, 4)).astype(np.float32),
                        rewards=rng.normal(size=(n, t)).astype(np.float32),
                        success=np.zeros((n, t), bool), lengths=np.full(n, t, np.int32),
                        variations=np.arange(n, dtype=np.int32))
    return distillation.make_window_source([push], seq_len)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A stage-1 training of `STEPS` steps without a break, one loss point per step, a
    checkpoint every `EVERY` steps (each in a checkpointer of its own):
    (fresh state, train step, source, final state, curve, {step: checkpointer})."""
    c = tiny_two_stage_config(every_steps=EVERY)
    model, params = init_student(c, jax.random.PRNGKey(0))
    tx = distillation.make_optimizer(c.distill, STEPS)
    step_fn = distillation.make_train_step(model, tx, c.distill, c.student.task_context,
                                           obs_norm=identity_obs_norm())
    fresh = distillation.DistillState(params, tx.init(params), jnp.zeros((), jnp.int32),
                                      jax.random.PRNGKey(1))
    source = _fake_source(c.student.seq_len)
    root = tmp_path_factory.mktemp("uninterrupted")
    saved = {}

    def save(state, i, history):
        saved[i] = checkpointing.RunCheckpointer(root / str(i))
        saved[i].save(i, state, {"curve": history})

    final, curve = distillation.distill(fresh, step_fn, source, STEPS, log_every=1,
                                        save_every=EVERY, save=save)
    return fresh, step_fn, source, final, curve, saved


def test_no_save_after_the_last_step(uninterrupted):
    *_, saved = uninterrupted
    assert sorted(saved) == [4, 8]  # not 12: the caller checkpoints what follows the loop


@pytest.mark.parametrize("steps_done", [4, 8])
def test_resumed_training_continues_the_same_batch_stream(uninterrupted, steps_done):
    """Restored from the checkpoint after `steps_done` steps (raw, then given the state's
    types), training carries on with the same batches: its loss curve (one point per
    step) is the uninterrupted curve's tail and the final state is bitwise the same."""
    fresh, step_fn, source, final, curve, saved = uninterrupted
    raw, meta = saved[steps_done].restore()
    assert meta["curve"] == curve[:steps_done]
    state = checkpointing.restructure(raw, fresh)
    state, tail = distillation.distill(state, step_fn, source, STEPS, log_every=1,
                                       steps_done=steps_done)
    assert tail == curve[steps_done:]
    _assert_same_params(state, final)  # params, optimizer state, step and key


def test_stage_progress_round_trip_and_refusals(tmp_path):
    c = tiny_two_stage_config()
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    distill_state = {"w": np.arange(3.0)}  # stands in for a DistillState
    curve = [{"step": 4, "loss": 0.25, "phase": 2}]
    mse = [{"phase": 1, "mse": {"reach-v3": 0.5}}]
    encoder = {"dense": {"kernel": np.ones((2, 3), np.float32)}}
    at = run_state.StageProgress(2, 2, 4, distill_state, curve, mse, encoder,
                                 {"reach-v3": 0.1}, 7.5)
    run_state.save_progress(ckpt, c, at, 16)
    back = run_state.restore_progress(ckpt, c, stages_done=1, steps_done=12)
    assert (back.stage, back.phase, back.phase_steps, back.curve, back.phase_mse,
            back.drift, back.seconds) == (2, 2, 4, curve, mse, {"reach-v3": 0.1}, 7.5)
    np.testing.assert_array_equal(back.state["w"], distill_state["w"])
    np.testing.assert_array_equal(back.encoder["dense"]["kernel"], 1.0)
    changed = tiny_two_stage_config()
    changed.distill.learning_rate *= 2
    with pytest.raises(UserError, match="distill.learning_rate"):
        run_state.restore_progress(ckpt, changed, stages_done=1, steps_done=12)
    changed = tiny_two_stage_config(every_steps=7)  # the cadence may change on resume
    assert run_state.restore_progress(ckpt, changed, stages_done=1, steps_done=12)
    with pytest.raises(UserError, match="stage 2's progress .* end after stage 0"):
        run_state.restore_progress(ckpt, c, stages_done=0, steps_done=0)
    # a stage finished at step 16 left it behind: deleted, nothing to resume
    assert run_state.restore_progress(ckpt, c, stages_done=2, steps_done=16) is None
    assert not tmp_path.exists()


def test_a_checkpoint_from_before_the_cadence_field_still_resumes():
    c = tiny_two_stage_config()
    saved = c.to_dict()
    del saved["checkpoint"]["every_steps"]  # as in a run made before intra-stage saves
    checkpointing.verify_config({"config": saved}, c.to_dict(),
                                ignore=run_state.RESUMABLE_FIELDS)  # no UserError


def test_a_field_added_after_the_save_resumes_at_its_default_only():
    c = tiny_two_stage_config()
    saved = c.to_dict()
    del saved["continual"]["feature_anchor_coef"]  # as in a run made before the field
    defaults = default_config.get_config().to_dict()
    checkpointing.verify_config({"config": saved}, c.to_dict(), defaults=defaults)
    c.continual.feature_anchor_coef = 0.5
    with pytest.raises(UserError, match=r"1 field\(s\): continual.feature_anchor_coef "
                       r"\(continual.feature_anchor_coef: saved None, now 0.5\)"):
        checkpointing.verify_config({"config": saved}, c.to_dict(), defaults=defaults)


def test_nested_checkpointer_is_invisible_to_the_outer_one_and_restructure_checks(tmp_path):
    outer = checkpointing.RunCheckpointer(tmp_path)
    inner = outer.nested("in_stage", max_to_keep=1)
    inner.save(7, {"x": np.ones(3, np.float32)}, {})
    assert outer.all_steps() == [] and inner.all_steps() == [7]
    with pytest.raises(ValueError, match="non-numeric"):
        outer.nested("3")
    raw, _ = inner.restore()
    like = {"x": jax.ShapeDtypeStruct((3,), np.float32)}
    np.testing.assert_array_equal(checkpointing.restructure(raw, like)["x"], np.ones(3))
    with pytest.raises(ValueError, match=r"\['x'\] is float32\[3\], expected float32\[4\]"):
        checkpointing.restructure(raw, {"x": jax.ShapeDtypeStruct((4,), np.float32)})
    with pytest.raises(ValueError, match=r"no leaf at \['y'\]"):
        checkpointing.restructure(raw, {"y": like["x"]})
    inner.delete_all()
    assert inner.all_steps() == [] and not inner.directory.exists()


# A run in a fresh process (argv: workdir, data dir), with its progress lines.
RUN = """
import sys
from absl import logging
from cpd_jax.continual import stages
from tests.helpers import tiny_two_stage_config
logging.set_verbosity(logging.INFO)
c = tiny_two_stage_config()
c.data.dir = sys.argv[2]
stages.run_continual(c, sys.argv[1])
"""


def _start_run(tmp_path: pathlib.Path, name: str) -> tuple[subprocess.Popen, pathlib.Path]:
    """(process, log file) of a run in `tmp_path/name`. The runs share their teacher data
    and JAX's persistent compile cache (as `cpd_jax.main` turns it on): only the first
    one compiles."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"))
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        run = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path / name),
                                str(tmp_path / "data")],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return run, log


def _finish(run: subprocess.Popen, log: pathlib.Path) -> str:
    """The log of `run` once it has exited successfully."""
    assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
    return log.read_text()


def _wait_for(path: pathlib.Path, run: subprocess.Popen, timeout_s: float = 600) -> None:
    """Polls until `path` exists (orbax renames a step's directory into place once it is
    complete); fails if the run exits or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert run.poll() is None, f"the run ended (code {run.returncode}) before {path}"
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.02)


def test_run_killed_mid_stage_resumes_to_the_uninterrupted_result(tmp_path):
    """An uninterrupted run, then the same run SIGKILLed once stage 2 has saved a
    checkpoint in its phase 2, restarted in a new process: the same R, stage logs and
    final params, bitwise."""
    c = tiny_two_stage_config()
    steps, every = c.distill.max_steps, c.checkpoint.every_steps
    phase1 = round(steps * c.continual.phase1_fraction)
    _finish(*_start_run(tmp_path, "full"))
    killed = tmp_path / "killed"
    # the run's gradient step of stage 2's first checkpoint in phase 2
    target = killed / "checkpoints" / run_state.PROGRESS_DIR / str(steps + phase1 + every)
    run, _ = _start_run(tmp_path, "killed")
    try:
        _wait_for(target, run)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert run.returncode == -signal.SIGKILL
    ckpt = checkpointing.RunCheckpointer(killed / "checkpoints")
    assert ckpt.all_steps() == [1]  # killed inside stage 2
    progress = ckpt.nested(run_state.PROGRESS_DIR).restore_metadata()
    assert (progress["stage"], progress["phase"]) == (2, 2)

    os.rename(tmp_path / "killed.log", tmp_path / "killed_first.log")
    log = _finish(*_start_run(tmp_path, "killed"))
    assert f"resuming stage 2 at step {phase1 + progress['phase_steps']} of {steps}" in log
    assert ckpt.all_steps() == [1, 2]
    assert not ckpt.nested(run_state.PROGRESS_DIR).directory.exists()  # superseded
    expected = json.loads((tmp_path / "full" / "results.json").read_text())
    got = json.loads((killed / "results.json").read_text())
    np.testing.assert_array_equal(np.asarray(got["R"], float), np.asarray(expected["R"], float))
    for a, b in zip(got["stages"], expected["stages"]):
        assert a["train_curve"] == b["train_curve"]
        assert a["phase_mse"] == b["phase_mse"]
    final, _ = checkpointing.RunCheckpointer(tmp_path / "full" / "checkpoints").restore()
    resumed, _ = ckpt.restore()
    _assert_same_params(resumed["params"], final["params"])
