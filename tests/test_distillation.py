"""Window sampling against a numpy reference; the train step learns; NaN is caught."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cpd_jax import distillation
from cpd_jax.configs import quickstart
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.pipeline import init_student

L = 4


def _fake_trajectories(task, n=3, t=9, seed=0):
    rng = np.random.default_rng(seed)
    return Trajectories(task=task, obs=rng.normal(size=(n, t, 39)).astype(np.float32),
                        actions=rng.uniform(-1, 1, (n, t, 4)).astype(np.float32),
                        rewards=rng.normal(size=(n, t)).astype(np.float32),
                        success=np.zeros((n, t), bool), lengths=np.full(n, t, np.int32),
                        variations=np.arange(n, dtype=np.int32))


def _numpy_window(traj, n, end):
    """Plain-loop reference: left-padded window of L steps ending at `end`."""
    obs, prev_a, prev_r, valid, tgt = [], [], [], [], []
    for s in range(end - L + 1, end + 1):
        ok = s >= 0
        obs.append(traj.obs[n, s] if ok else np.zeros(39))
        tgt.append(traj.actions[n, s] if ok else np.zeros(4))
        prev_a.append(traj.actions[n, s - 1] if s >= 1 else np.zeros(4))
        prev_r.append(traj.rewards[n, s - 1] if s >= 1 else 0.0)
        valid.append(ok)
    return [np.array(x) for x in (obs, prev_a, prev_r, valid, tgt)]


@pytest.mark.parametrize("end", [0, 1, 3, 8])
def test_window_matches_numpy_loop(end):
    traj = _fake_trajectories("reach-v3")
    source = distillation.make_window_source([_fake_trajectories("push-v3", seed=9), traj], L)
    history, targets = distillation.window(source, jnp.int32(3 + 1), jnp.int32(end))
    obs, prev_a, prev_r, valid, tgt = _numpy_window(traj, 1, end)
    np.testing.assert_allclose(history.obs, obs, atol=0)
    np.testing.assert_allclose(history.prev_actions, prev_a, atol=0)
    np.testing.assert_allclose(history.prev_rewards, prev_r, atol=0)
    np.testing.assert_array_equal(history.valid, valid)
    np.testing.assert_allclose(targets, tgt, atol=0)
    assert int(history.task_id) == 0  # reach-v3


def test_sample_batch_windows_end_at_valid_steps():
    source = distillation.make_window_source([_fake_trajectories("reach-v3")], L)
    history, targets = distillation.sample_batch(jax.random.PRNGKey(0), source, 256)
    assert history.obs.shape == (256, L, 39) and targets.shape == (256, L, 4)
    assert bool(jnp.all(history.valid[:, -1]))  # the predicted step is always real
    # padding only ever on the left
    v = np.asarray(history.valid)
    assert np.all(np.diff(v.astype(int), axis=1) >= 0)


def _small_config():
    c = quickstart.get_config()
    c.student.dim, c.student.num_blocks, c.student.seq_len = 16, 1, L
    c.distill.batch_size = 32
    return c


def test_train_step_reduces_loss_on_a_fixed_mapping():
    c = _small_config()
    model, params = init_student(c, jax.random.PRNGKey(0))
    source = distillation.make_window_source([_fake_trajectories("reach-v3", n=8)], L)
    tx = distillation.make_optimizer(c.distill, 200)
    step = distillation.make_train_step(model, tx, c.distill, c.student.task_context)
    state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                      step=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(1))
    state, first = step(state, source)
    state, curve = distillation.distill(state, step, source, 200, log_every=50)
    assert curve[-1]["mse"] < 0.5 * float(first["mse"])


def test_aux_coefficient_follows_table_6():
    coef = lambda s: float(distillation.aux_coefficient(s, 0.01, 5e-5, 1e-4))
    assert coef(0) == pytest.approx(0.01)
    assert coef(100) == pytest.approx(0.005)
    assert coef(10_000) == pytest.approx(1e-4)


def test_non_finite_loss_stops_with_a_clear_error():
    c = _small_config()
    model, params = init_student(c, jax.random.PRNGKey(0))
    bad = _fake_trajectories("reach-v3")
    bad.actions[0, 2, 1] = np.nan
    source = distillation.make_window_source([bad], L)
    tx = distillation.make_optimizer(c.distill, 10)
    step = distillation.make_train_step(model, tx, c.distill, c.student.task_context)
    state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                      step=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(1))
    with pytest.raises(distillation.NonFiniteLossError, match="nan"):
        distillation.distill(state, step, source, 10, log_every=1)
