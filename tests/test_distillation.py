"""Window sampling against a numpy reference; the train step learns; NaN is caught."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax import distillation
from cpd_jax.configs import quickstart
from cpd_jax.pipeline import init_student

L = 4


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
def test_window_matches_numpy_loop(end, fake_trajectories):
    traj = fake_trajectories("reach-v3")
    source = distillation.make_window_source([fake_trajectories("push-v3", seed=9), traj], L)
    history, targets = distillation.window(source, jnp.int32(3 + 1), jnp.int32(end))
    obs, prev_a, prev_r, valid, tgt = _numpy_window(traj, 1, end)
    np.testing.assert_allclose(history.obs, obs, atol=0)
    np.testing.assert_allclose(history.prev_actions, prev_a, atol=0)
    np.testing.assert_allclose(history.prev_rewards, prev_r, atol=0)
    np.testing.assert_array_equal(history.valid, valid)
    np.testing.assert_allclose(targets, tgt, atol=0)
    assert int(history.task_id) == 0  # reach-v3


def test_sample_batch_windows_end_at_valid_steps(fake_trajectories):
    source = distillation.make_window_source([fake_trajectories("reach-v3")], L)
    history, targets = distillation.sample_batch(jax.random.PRNGKey(0), source, 256)
    assert history.obs.shape == (256, L, 39) and targets.shape == (256, L, 4)
    assert bool(jnp.all(history.valid[:, -1]))  # the predicted step is always real
    # padding only ever on the left
    v = np.asarray(history.valid)
    assert np.all(np.diff(v.astype(int), axis=1) >= 0)


def test_episode_probabilities_match_a_brute_force_count():
    """Task-balanced weights equal the probability of (pick a task uniformly, then an
    episode uniformly within it), counted exhaustively over that two-step draw."""
    task_id = np.array([3, 3, 3, 3, 0, 7, 7, 3])  # unequal counts, unsorted, gaps in ids
    probs = distillation.episode_probabilities(task_id, "task")
    brute = np.zeros(len(task_id))
    tasks = sorted(set(task_id))
    for t in tasks:  # every (task, episode-of-task) outcome, each task with mass 1/T
        members = [e for e in range(len(task_id)) if task_id[e] == t]
        for e in members:
            brute[e] += 1.0 / len(tasks) / len(members)
    np.testing.assert_allclose(probs, brute, rtol=1e-12)
    assert distillation.episode_probabilities(task_id, "episode") is None
    assert distillation.episode_probabilities(np.array([0, 0, 5, 5]), "task") is None
    with pytest.raises(ValueError, match="sampling"):
        distillation.episode_probabilities(task_id, "tasks")


def test_task_balanced_batches_draw_each_task_equally(fake_trajectories):
    """A stage with 3 new tasks (3 episodes each) + a replay of 1 episode of 2 old tasks:
    sample_batch's empirical task frequencies are 1/5 each (uniform would give 1/11)."""
    trajs = ([fake_trajectories(t, n=3, seed=i) for i, t in enumerate(
        ["push-v3", "pick-place-v3", "door-open-v3"])]
        + [fake_trajectories(t, n=1, seed=9) for t in ["reach-v3", "drawer-open-v3"]])
    source = distillation.make_window_source(trajs, L, sampling="task")
    n = 20_000
    history, _ = jax.jit(distillation.sample_batch, static_argnums=2)(
        jax.random.PRNGKey(0), source, n)
    counts = np.bincount(np.asarray(history.task_id), minlength=25)[[0, 1, 2, 3, 4]]
    # binomial std of a frequency 0.2 over 20,000 draws is 0.0028: 4 std tolerance
    np.testing.assert_allclose(counts / n, 0.2, atol=0.012)
    uniform = distillation.make_window_source(trajs, L)
    history, _ = distillation.sample_batch(jax.random.PRNGKey(0), uniform, n)
    counts = np.bincount(np.asarray(history.task_id), minlength=25)[[0, 4]]
    np.testing.assert_allclose(counts / n, 1 / 11, atol=0.01)


def test_task_sampling_without_replay_is_bitwise_uniform_sampling(fake_trajectories):
    """Equal episode counts: "task" stores no weights and draws the very same batch."""
    trajs = [fake_trajectories("reach-v3"), fake_trajectories("push-v3", seed=3)]
    a = distillation.make_window_source(trajs, L, sampling="task")
    b = distillation.make_window_source(trajs, L)
    assert a.episode_logits is None
    for x, y in zip(distillation.sample_batch(jax.random.PRNGKey(4), a, 64),
                    distillation.sample_batch(jax.random.PRNGKey(4), b, 64)):
        jax.tree.map(np.testing.assert_array_equal, x, y)


def _small_config():
    c = quickstart.get_config()
    c.student.dim, c.student.num_blocks, c.student.seq_len = 16, 1, L
    c.distill.batch_size = 32
    return c


def test_train_step_reduces_loss_on_a_fixed_mapping(fake_trajectories):
    c = _small_config()
    model, params = init_student(c, jax.random.PRNGKey(0))
    source = distillation.make_window_source([fake_trajectories("reach-v3", n=8)], L)
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


def test_non_finite_loss_stops_with_a_clear_error(fake_trajectories):
    c = _small_config()
    model, params = init_student(c, jax.random.PRNGKey(0))
    bad = fake_trajectories("reach-v3")
    bad.actions[0, 2, 1] = np.nan
    source = distillation.make_window_source([bad], L)
    tx = distillation.make_optimizer(c.distill, 10)
    step = distillation.make_train_step(model, tx, c.distill, c.student.task_context)
    state = distillation.DistillState(params=params, opt_state=tx.init(params),
                                      step=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(1))
    with pytest.raises(distillation.NonFiniteLossError, match="nan"):
        distillation.distill(state, step, source, 10, log_every=1)


def test_evaluate_windows_matches_a_per_window_numpy_loop(fake_trajectories):
    """Held-out MSE per task and routing per token, against one model call per window
    (the window built by the numpy reference) and a plain sum of squared errors."""
    c = _small_config()
    c.student.task_context = "onehot"
    model, params = init_student(c, jax.random.PRNGKey(0))
    trajs = [fake_trajectories("reach-v3", n=2, t=6), fake_trajectories("push-v3", n=1, t=6,
                                                                         seed=4)]
    trajs[0].lengths[0] = 5  # an episode shorter than the arrays: its last step is padding
    source = distillation.make_window_source(trajs, L)
    out = distillation.evaluate_windows(model, params, source, "onehot", chunk=4)
    sq, count, experts = {0: 0.0, 1: 0.0}, {0: 0, 1: 0}, []
    for traj in trajs:
        for n in range(traj.num_episodes):
            for end in range(traj.lengths[n]):
                obs, prev_a, prev_r, valid, tgt = _numpy_window(traj, n, end)
                onehot = np.zeros((L, 25), np.float32)
                onehot[:, traj.task_id] = 1
                pred, aux = model.apply({"params": params},
                                        jnp.asarray(np.concatenate([obs, onehot], -1))[None],
                                        jnp.asarray(valid)[None])
                err = (np.asarray(pred[0]) - tgt) ** 2
                sq[traj.task_id] += float(err[valid].sum())
                count[traj.task_id] += int(valid.sum()) * 4
                experts.append(np.asarray(aux["expert_index"])[:, :, 0])
    np.testing.assert_array_equal(out["task_ids"], [0, 1])
    np.testing.assert_allclose(out["mse"], [sq[0] / count[0], sq[1] / count[1]], rtol=1e-4)
    np.testing.assert_array_equal(out["expert_index"][..., 0], np.concatenate(experts, 1))
    assert out["token_valid"].sum() == sum(count.values()) // 4
