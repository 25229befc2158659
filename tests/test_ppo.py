"""PPO teacher tests: math pieces against independent references, then training.

Golden values come from numpy loops / numpy.linalg.lstsq / jax.jacobian; the
training tests use the tiny point-mass env with the CPU config.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.configs import teachers_ppo, teachers_ppo_cpu
from cpd_jax.envs import toy_envs
from cpd_jax.rl.ppo import losses, networks, normalizer, runner
from cpd_jax.rl.ppo import train as ppo
from tests.helpers import TOY_TASKS3, small_ppo_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def _unsharded_multi_task_run(seed: int):
    """(TrainState[3], metrics[3, 2]) of the 3 toy tasks, vmapped, one device."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    goals = jnp.asarray(toy_envs.toy_task_params(TOY_TASKS3))
    train = ppo.make_multi_task_train(small_ppo_config(), toy_envs.PointMass())
    return keys, goals, train(keys, goals)


# ------------------------------------------------------------------------ math


def gae_reference(rewards, values, dones, last_value, gamma, lam):
    """Plain Python loop (cleanrl test style)."""
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        last = 0.0
        for t in reversed(range(T)):
            next_v = last_value[b] if t == T - 1 else values[t + 1, b]
            nd = 1.0 - dones[t, b]
            delta = rewards[t, b] + gamma * next_v * nd - values[t, b]
            last = delta + gamma * lam * nd * last
            adv[t, b] = last
    return adv, adv + values


@pytest.mark.parametrize("lam", [0.97, 1.0, 0.0])
def test_gae_matches_python_loop(lam):
    rng = np.random.default_rng(0)
    T, B = 37, 5
    rewards = rng.normal(size=(T, B)).astype(np.float32)
    values = rng.normal(size=(T, B)).astype(np.float32)
    dones = (rng.random((T, B)) < 0.1).astype(np.float32)
    last_value = rng.normal(size=(B,)).astype(np.float32)
    adv, ret = losses.compute_gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones),
                               jnp.asarray(last_value), 0.99, lam)
    adv_ref, ret_ref = gae_reference(rewards, values, dones, last_value, 0.99, lam)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-5, atol=1e-5)


def test_linear_baseline_matches_numpy_lstsq():
    rng = np.random.default_rng(1)
    N, D = 500, 7
    obs = rng.normal(size=(N, D)).astype(np.float32) * 3.0
    t = rng.integers(0, 500, size=N).astype(np.int32)
    targets = rng.normal(size=N).astype(np.float32) + obs[:, 0] - 0.01 * t
    feats = np.asarray(losses.linear_baseline_features(jnp.asarray(obs), jnp.asarray(t),
                                                       10.0, 100.0))
    # Features built independently in numpy (garage LinearFeatureBaseline._features).
    o = np.clip(obs.astype(np.float64), -10, 10)
    al = t[:, None] / 100.0
    feats_ref = np.concatenate([o, o**2, al, al**2, al**3, np.ones((N, 1))], axis=1)
    np.testing.assert_allclose(feats, feats_ref, rtol=1e-5, atol=1e-5)
    ridge = 1e-3
    coeffs = losses.fit_linear_baseline(jnp.asarray(feats), jnp.asarray(targets), ridge)
    F = feats_ref.shape[1]
    a = np.concatenate([feats_ref, np.sqrt(ridge) * np.eye(F)])
    b = np.concatenate([targets.astype(np.float64), np.zeros(F)])
    ref = np.linalg.lstsq(a, b, rcond=None)[0]
    # Compare predictions (what the baseline is used for) and coefficients.
    np.testing.assert_allclose(feats_ref @ np.asarray(coeffs), feats_ref @ ref, atol=2e-3)
    np.testing.assert_allclose(coeffs, ref, rtol=1e-2, atol=1e-2)
    # Also the ridge normal equations garage solves.
    ref_ne = np.linalg.solve(feats_ref.T @ feats_ref + ridge * np.eye(F), feats_ref.T @ b[:N])
    np.testing.assert_allclose(ref, ref_ne, rtol=1e-6, atol=1e-6)


def test_tanh_gaussian_log_prob_matches_jacobian_density():
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    A = 4
    mean = jax.random.normal(k1, (A,))
    log_std = 0.3 * jax.random.normal(k2, (A,))
    u = mean + jnp.exp(log_std) * jax.random.normal(k3, (A,)) * 2.0
    got = networks.tanh_gaussian_log_prob(u, mean, log_std)
    # Direct density of the pre-tanh Gaussian and log|det J| of tanh by jax.jacobian.
    std = np.exp(np.asarray(log_std, np.float64))
    z = (np.asarray(u, np.float64) - np.asarray(mean)) / std
    log_n = np.sum(-0.5 * z**2 - np.log(std) - 0.5 * np.log(2 * np.pi))
    jac = np.asarray(jax.jacobian(jnp.tanh)(u), np.float64)
    ref = log_n - np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_density_matches_monte_carlo_histogram():
    """1-D: histogram of tanh(u) samples vs exp(log_prob) at bin centres, and the
    density integrates to 1 over (-1, 1)."""
    mean, log_std = jnp.array([0.4]), jnp.array([np.log(0.8)])
    u = mean + jnp.exp(log_std) * jax.random.normal(jax.random.PRNGKey(3), (400_000, 1))
    a = np.asarray(jnp.tanh(u))[:, 0]
    hist, edges = np.histogram(a, bins=40, range=(-1, 1), density=True)
    centres = 0.5 * (edges[1:] + edges[:-1])
    u_c = jnp.arctanh(jnp.asarray(centres))[:, None]
    dens = np.exp(np.asarray(networks.tanh_gaussian_log_prob(u_c, mean, log_std)))
    inner = slice(2, -2)  # the density is steep at +-1: compare away from the edges
    np.testing.assert_allclose(hist[inner], dens[inner], rtol=0.05, atol=0.02)
    grid = np.linspace(-0.999999, 0.999999, 200_001)
    g = np.exp(np.asarray(networks.tanh_gaussian_log_prob(
        jnp.arctanh(jnp.asarray(grid, jnp.float32))[:, None], mean, log_std)))
    assert abs(np.trapezoid(g, grid) - 1.0) < 1e-3


def test_tanh_log_det_is_finite_at_saturation():
    u = jnp.array([[30.0, -30.0, 0.0]])
    assert np.all(np.isfinite(networks.tanh_log_det_jacobian(u)))


def test_running_stats_match_numpy():
    rng = np.random.default_rng(2)
    batches = [rng.normal(loc=3.0, scale=2.0, size=(n, 3)).astype(np.float32)
               for n in (10, 50, 7)]
    stats = normalizer.init_running_stats(3)
    for b in batches:
        stats = normalizer.update_running_stats(stats, jnp.asarray(b))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, allx.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.var, allx.var(0), rtol=1e-3, atol=1e-3)


def test_paper_config_matches_table4():
    c = teachers_ppo.get_config().ppo
    assert (c.gamma, c.gae_lambda, c.num_epochs, c.num_minibatches) == (0.99, 0.97, 20, 64)
    assert (c.learning_rate, c.max_grad_norm, c.baseline) == (5e-5, 1.0, "linear")
    assert c.num_envs * c.unroll_length == 20_000
    assert (c.total_env_steps, c.eval_every_steps, c.early_stop_success) == (10**7, 10**5, 0.98)
    assert ppo.schedule(c) == (20_000, 5, 100)


# -------------------------------------------------------------------- training


@pytest.mark.parametrize("baseline", ["linear", "mlp"])
def test_ppo_solves_point_mass(baseline):
    """CPU config: deterministic eval success >= 0.9 and eval return > -4 (measured
    over 32 episodes: a uniform random policy scores about -26, the scripted
    straight-line policy about -1.25)."""
    c = teachers_ppo_cpu.get_config().ppo
    c.baseline = baseline
    state, m = jax.jit(ppo.make_train(c, toy_envs.PointMass()))(jax.random.PRNGKey(0))
    success, ret = np.asarray(m["eval_success"]), np.asarray(m["eval_return"])
    assert success.max() >= 0.9, success
    assert ret.max() > -4.0, ret
    assert bool(state.stopped)  # early stop reached within the budget
    # After the stop nothing changes: env steps freeze at the stopping point.
    steps = np.asarray(m["env_steps"])
    first_stop = int(np.argmax(np.asarray(m["stopped"])))
    assert np.all(steps[first_stop:] == steps[first_stop])
    assert int(state.env_steps) == steps[first_stop] < c.total_env_steps


def _train_tasks_alone(c, keys, goals):
    train = jax.jit(ppo.make_train(c, toy_envs.PointMass()))
    return [train(k, g) for k, g in zip(keys, goals)]


def test_vmapped_tasks_equal_tasks_alone():
    c = small_ppo_config()
    keys, goals, (batched_state, batched_m) = _unsharded_multi_task_run(7)
    for i, (state, m) in enumerate(_train_tasks_alone(c, keys, goals)):
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-5),
            batched_state.params, state.params)
        np.testing.assert_allclose(batched_m["eval_return"][i], m["eval_return"],
                                   rtol=1e-4, atol=1e-4)
    # Different tasks really are different problems.
    kernel = batched_state.params["policy"]["params"]["mean"]["Dense_0"]["kernel"]
    assert not np.allclose(kernel[0], kernel[1])


def _two_tasks_first_stopped(c):
    """(fns, scanned chunk fn, TrainState[2] with task 0 early-stopped). The runner's
    cached (init, chunk) pair with the runner test's task count and env: this XLA
    program is compiled once for all the tests that use it."""
    fns, init_fn, chunk_fn = runner._compiled(runner._config_key(c), toy_envs.PointMass())
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    state0 = init_fn(keys, jnp.asarray(toy_envs.toy_task_params(TOY_TASKS3[1:])))
    return fns, chunk_fn, state0.replace(stopped=jnp.array([True, False]))


def _assert_task0_frozen(before, after):
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a[0], b[0])), before, after)
    assert all(jax.tree_util.tree_leaves(same)), same


def test_stopped_task_is_frozen_while_others_train():
    c = small_ppo_config()
    _, chunk_fn, state0 = _two_tasks_first_stopped(c)
    state1, m = chunk_fn(state0, 2)
    _assert_task0_frozen(state0, state1)
    assert int(state1.env_steps[1]) == 2 * 2 * c.num_envs * c.unroll_length
    assert not np.array_equal(state0.params["policy"]["params"]["mean"]["Dense_0"]["kernel"][1],
                              state1.params["policy"]["params"]["mean"]["Dense_0"]["kernel"][1])
    assert np.asarray(m["active"]).tolist() == [[False, False], [True, True]]


_SHARDED_SCRIPT = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from tests.helpers import TOY_TASKS3, small_ppo_config
    from cpd_jax.envs import toy_envs
    from cpd_jax.rl.ppo import train as ppo
    assert jax.device_count() == 4, jax.devices()
    keys = jax.random.split(jax.random.PRNGKey(7), 3)  # 3 tasks on 4 devices: padded
    goals = jnp.asarray(toy_envs.toy_task_params(TOY_TASKS3))
    mesh = ppo.task_mesh()
    train = ppo.make_multi_task_train(small_ppo_config(), toy_envs.PointMass(), mesh)
    state, m = train(keys, goals)
    leaves = jax.tree_util.tree_leaves(state.params)
    np.savez(sys.argv[1], eval_return=np.asarray(m["eval_return"]),
             **{f"p{i}": np.asarray(x) for i, x in enumerate(leaves)})
    # The program really ran across the 4 devices.
    fns = ppo.make_ppo(small_ppo_config(), toy_envs.PointMass())
    keys4 = jax.random.split(jax.random.PRNGKey(3), 4)
    st = jax.jit(jax.vmap(fns.init))(*ppo.shard_tasks((keys4, jnp.zeros((4, 2))), mesh))
    assert len(st.params["policy"]["params"]["mean"]["Dense_0"]["kernel"].sharding.device_set) == 4
    print("SHARDED_OK")
""")


def test_sharded_on_4_host_devices_equals_unsharded(tmp_path):
    out_file = str(tmp_path / "sharded.npz")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, out_file], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert "SHARDED_OK" in out.stdout, out.stdout + out.stderr
    _, _, (state, m) = _unsharded_multi_task_run(7)  # same keys, one device
    sharded = np.load(out_file)
    np.testing.assert_allclose(sharded["eval_return"], m["eval_return"], rtol=1e-4, atol=1e-4)
    for i, x in enumerate(jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(sharded[f"p{i}"], x, rtol=1e-4, atol=1e-5)


def test_host_loop_chunk_equals_scanned_chunk():
    """`ppo.make_host_chunk` (Python loop over jitted env steps, used for CPU MJX) is
    the scanned chunk computed differently: same params, same metrics, and an
    early-stopped task stays frozen in both."""
    c = small_ppo_config()
    fns, chunk_fn, state0 = _two_tasks_first_stopped(c)
    scanned, m_scan = chunk_fn(state0, 2)
    host_chunk = ppo.make_host_chunk(fns, c)
    host_chunk.warmup(state0)  # compiles the pieces; the state is not consumed
    messages = []
    hosted, m_host = host_chunk(state0, 2, progress=messages.append)
    assert len(messages) == 2 * (2 + 1)  # per update and per evaluation
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        (scanned.replace(task_params=None), m_scan), (hosted.replace(task_params=None), m_host))
    _assert_task0_frozen(state0, hosted)
    assert int(hosted.env_steps[1]) == 2 * 2 * c.num_envs * c.unroll_length
