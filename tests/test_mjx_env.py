"""MJX Meta-World port vs the `metaworld` package (the reference backend).

Default run: the quickstart tasks (reach, drawer-close, button-press-topdown) with few
episodes; `-m slow` runs every ported task with 20 scripted episodes. Compiled
functions are shared through session-scoped caches; JAX's persistent compilation cache
(`$CPD_JAX_CACHE/jax_cc`) makes re-runs fast.
"""

import functools
import os

import numpy as np
import pytest

CACHE = os.environ.get("CPD_JAX_CACHE", os.path.expanduser("~/.cache/cpd_jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax_cc"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cpd_jax.envs import reference  # noqa: E402
from cpd_jax.envs.mjx import host_env, wrappers  # noqa: E402
from cpd_jax.envs.mjx.fidelity import record_reference  # noqa: E402
from cpd_jax.envs.mjx.tasks import registry  # noqa: E402
from cpd_jax.teachers import scripted  # noqa: E402

QUICK_TASKS = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")
PORTED = registry.ported_tasks()
SLOW_TASKS = tuple(t for t in PORTED if t not in QUICK_TASKS)
REWARD_TOL = 1e-4
RESET_OBS_TOL = 1e-3
SUCCESS_SLACK = 0.10  # MJX scripted success may be at most this below the reference


def _params(quick):
    return [t for t in quick if t in PORTED] + [
        pytest.param(t, marks=pytest.mark.slow) for t in PORTED if t not in quick]


N_QUICK = 5  # episodes / variations per task in the default run (one compiled batch size)


@functools.lru_cache(maxsize=None)
def _reset_states(task):
    """Batched MJX states of variations 0..N_QUICK-1 (host env, same batch size as the
    scripted-policy test so the compiled reset is shared)."""
    env = host_env.MjxHostEnv([task] * N_QUICK)
    env.reset(list(range(N_QUICK)))
    return env.states[task]


@functools.lru_cache(maxsize=None)
def _from_physics(task):
    """jitted obs + reward + success of a recorded physics state for one task."""
    env = host_env.get_env(task)

    def from_physics(qpos, qvel, mocap_pos, body_pos, task_vars, prev_curr, action):
        d, obs = env.state_from_physics(qpos, qvel, mocap_pos, body_pos, task_vars, prev_curr)
        r, s = env.task.reward(env, d, obs, action, task_vars)
        return obs, r, s

    return jax.jit(from_physics)


def _env_slice(states, i):
    return jax.tree_util.tree_map(lambda x: x[i], states)


@pytest.mark.parametrize("task", _params(QUICK_TASKS))
def test_reward_port_exact(task):
    from_physics, states = _from_physics(task), _reset_states(task)
    steps = set(range(0, 300, 7))
    errs, obs_errs, mismatched = [], [], []
    for variation in (0, 1):
        st = _env_slice(states, variation)
        for rec in record_reference(task, variation, steps):
            obs, r, s = from_physics(rec["qpos"], rec["qvel"], rec["mocap_pos"], st.body_pos,
                                     st.task_vars, rec["prev"], jnp.asarray(rec["action"]))
            errs.append(abs(float(r) - rec["reward"]))
            obs_errs.append(float(np.abs(np.asarray(obs) - rec["obs"]).max()))
            if bool(s) != rec["success"]:
                mismatched.append((variation, float(r), rec["reward"]))
    assert max(obs_errs) < REWARD_TOL, f"obs from physics max err {max(obs_errs)}"
    assert max(errs) < REWARD_TOL, f"reward max err {max(errs)}"
    assert not mismatched, f"success differs at {mismatched}"


@pytest.mark.parametrize("task", _params(QUICK_TASKS))
def test_reset_obs_matches_reference(task):
    states = _reset_states(task)
    ref = reference.make_metaworld_env(task)
    for variation in range(N_QUICK):
        reference.set_variation(ref, task, variation)
        ref_obs, _ = ref.reset()
        err = np.abs(np.asarray(states.obs[variation]) - ref_obs).max()
        assert err < RESET_OBS_TOL, f"variation {variation}: reset obs err {err}"


@functools.lru_cache(maxsize=None)
def _batched(task):
    b = wrappers.make_batched(host_env.get_env(task))
    return b, jax.jit(b.reset), jax.jit(b.step)


@pytest.mark.parametrize("task", _params(("reach-v3",)))
def test_smoke_batched_autoreset(task):
    b, reset, step = _batched(task)
    batch = 2
    st = reset(jax.random.split(jax.random.PRNGKey(0), batch))
    assert st.obs.shape == (batch, 39)
    rv = jax.vmap(b.env.sample_rand_vec)(jax.random.split(jax.random.PRNGKey(1), 64))
    if task in ("reach-v3", "push-v3", "pick-place-v3"):  # the >= 0.15 resampling rule
        assert float(jnp.linalg.norm(rv[:, :2] - rv[:, 3:5], axis=-1).min()) >= 0.15
    key = jax.random.PRNGKey(2)
    for _ in range(3):
        key, sub = jax.random.split(key)
        st = step(st, jax.random.uniform(sub, (batch, 4), minval=-1, maxval=1))
        assert st.obs.shape == (batch, 39) and st.reward.shape == (batch,)
        assert np.isfinite(np.asarray(st.obs)).all() and np.isfinite(np.asarray(st.reward)).all()
    # force the truncation: the next step ends the episode and auto-resets
    st = st.replace(step_count=jnp.full((batch,), 499, jnp.int32))
    st = step(st, jnp.zeros((batch, 4)))
    assert bool(st.done.all()) and int(st.step_count.max()) == 0
    assert np.asarray(st.info["episodes"]).tolist() == [1] * batch


def _scripted_success(task, n_episodes):
    """Fraction of variations 0..n-1 where the scripted policy succeeds within 500 steps
    in the MJX env (closed loop), run N_QUICK episodes at a time so every task uses one
    compiled batch size."""
    assert n_episodes % N_QUICK == 0
    env = host_env.MjxHostEnv([task] * N_QUICK)
    wins = []
    for start in range(0, n_episodes, N_QUICK):
        obs = env.reset(list(range(start, start + N_QUICK)))

        def env_step(actions):
            tr = env.step(actions)
            return tr.obs, tr.success

        ever = scripted.closed_loop_success(task, obs, env_step)
        wins.extend(ever.tolist())
    return float(np.mean(wins))


# Default run: one closed-loop task (each compiles a full MJX step: ~2 min on a CPU); the
# other quick tasks' ports are checked eagerly above, and every task closed-loop with -m slow.
@pytest.mark.parametrize("task,n", [("reach-v3", N_QUICK)] + [
    pytest.param(t, N_QUICK, marks=pytest.mark.slow) for t in QUICK_TASKS[1:]] + [
    pytest.param(t, 20, marks=pytest.mark.slow) for t in PORTED])
def test_scripted_policy_success(task, n, scripted_reference):
    ref = scripted_reference[task]
    got = _scripted_success(task, n)
    print(f"{task}: scripted success MJX {got:.2f} vs reference {ref:.2f} ({n} episodes)")
    assert got >= ref - SUCCESS_SLACK


def test_hand_proxy_geom():
    """HAND_PROXY: added to the hand body only when a pair uses it, collides only in its
    explicit pairs, leaves masses unchanged, and the box covers the whole hand mesh."""
    import dataclasses

    import mujoco

    from cpd_jax.envs.mjx import model_edit as me
    from cpd_jax.envs.mjx.tasks import window_open as wo

    edits = dataclasses.replace(wo.MODEL_EDITS, hand_proxy="box")
    m = me.build_model(wo.XML, edits)
    no_proxy = me.build_model(wo.XML, dataclasses.replace(edits, pairs=[
        p for p in edits.pairs if me.HAND_PROXY not in p]))
    g = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, me.HAND_PROXY_NAME)
    assert g >= 0 and mujoco.mj_name2id(no_proxy, mujoco.mjtObj.mjOBJ_GEOM,
                                        me.HAND_PROXY_NAME) < 0
    assert m.body(int(m.geom_bodyid[g])).name == me.HAND_BODY
    assert m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0
    in_pairs = [p for p in range(m.npair) if g in (m.pair_geom1[p], m.pair_geom2[p])]
    assert len(in_pairs) == 3  # the three sash handle capsules
    np.testing.assert_array_equal(m.body_mass, no_proxy.body_mass)
    np.testing.assert_array_equal(m.body_inertia, no_proxy.body_inertia)
    # every mesh vertex (in the hand body's frame) lies inside the box
    mesh_g = me.hand_mesh_geom(m)
    mid = m.geom_dataid[mesh_g]
    verts = m.mesh_vert[m.mesh_vertadr[mid]:m.mesh_vertadr[mid] + m.mesh_vertnum[mid]]
    rot_mesh, rot_box = np.zeros(9), np.zeros(9)
    mujoco.mju_quat2Mat(rot_mesh, m.geom_quat[mesh_g])
    mujoco.mju_quat2Mat(rot_box, m.geom_quat[g])
    body_frame = verts @ rot_mesh.reshape(3, 3).T + m.geom_pos[mesh_g]
    in_box = (body_frame - m.geom_pos[g]) @ rot_box.reshape(3, 3)
    assert (np.abs(in_box) <= m.geom_size[g] + 1e-6).all()


def test_capsule_standin_geom():
    """`capsule_standins`: a massless capsule twin of the peg, same frame and length,
    colliding only in the finger pairs that name it."""
    import dataclasses

    import mujoco

    from cpd_jax.envs.mjx import model_edit as me
    from cpd_jax.envs.mjx.tasks import peg_insert_side as peg

    m = me.build_model(peg.XML, peg.MODEL_EDITS)
    plain = me.build_model(peg.XML, dataclasses.replace(
        peg.MODEL_EDITS, capsule_standins=(), pairs=[(peg.PEG, me.TABLE)]))
    box = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "peg")
    twin = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "peg_capsule")
    assert twin >= 0 and mujoco.mj_name2id(plain, mujoco.mjtObj.mjOBJ_GEOM, "peg_capsule") < 0
    assert m.geom_type[twin] == mujoco.mjtGeom.mjGEOM_CAPSULE
    assert m.geom_bodyid[twin] == m.geom_bodyid[box]
    np.testing.assert_allclose(m.geom_pos[twin], m.geom_pos[box])
    np.testing.assert_allclose(m.geom_quat[twin], m.geom_quat[box])
    r, half = m.geom_size[twin][:2]
    assert r == m.geom_size[box][0] and np.isclose(r + half, m.geom_size[box][2])
    np.testing.assert_array_equal(m.body_mass, plain.body_mass)
    np.testing.assert_allclose(m.body_inertia, plain.body_inertia)
    assert m.geom_contype[twin] == 0 and m.geom_conaffinity[twin] == 0
    partners = {int(m.pair_geom1[p] if m.pair_geom2[p] == twin else m.pair_geom2[p])
                for p in range(m.npair) if twin in (m.pair_geom1[p], m.pair_geom2[p])}
    assert {m.geom(g).name for g in partners} == set(me.PAD_GEOMS + me.CLAW_GEOMS)


def test_autoreset_from_pool_restarts_in_a_pool_state():
    """With a reset pool, a truncated env restarts in one of the pool's states, exactly
    (a gather), keeps the truncating step's reward/done, and counts the episode."""
    from cpd_jax.envs import variations
    from cpd_jax.envs.mjx import host_reset

    b, _, _ = _batched("reach-v3")
    pool = host_reset.host_reset_states(
        b.env, np.stack([variations.rand_vec("reach-v3", v) for v in range(3)]))
    batch = 2
    st = b.init_stats(jax.tree_util.tree_map(lambda x: x[:batch], pool))
    st = st.replace(rng=jax.random.split(jax.random.PRNGKey(3), batch),
                    step_count=jnp.full((batch,), 499, jnp.int32))
    step = jax.jit(b.step)
    out = step(st, jnp.zeros((batch, 4)), pool)
    assert bool(out.done.all()) and int(out.step_count.max()) == 0
    assert np.asarray(out.info["episodes"]).tolist() == [1] * batch
    pool_obs = np.asarray(pool.obs)
    for i in range(batch):  # each env's new first obs is one of the pool's, bit for bit
        assert (np.asarray(out.obs[i]) == pool_obs).all(axis=1).any()
    # without truncation nothing is gathered: the step is the plain batched step
    st2 = st.replace(step_count=jnp.zeros((batch,), jnp.int32))
    out2 = step(st2, jnp.zeros((batch, 4)), pool)
    assert not bool(out2.done.any()) and (np.asarray(out2.step_count) == 1).all()
