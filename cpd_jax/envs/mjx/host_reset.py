"""MJX env states built on the host, with native `mj_forward` instead of a compiled reset.

Checks and benchmarks that only need the *step* compiled (fidelity sweeps, the env
throughput benchmark) build their start states here: the task's `reset_physics` and
`reset_vars` run eagerly (pure jnp) and MuJoCo's own `mj_forward` on our edited model
fills in the derived quantities, which `mjx.put_data` then hands to MJX. This skips the
~40 s compile of the batched `mjx.forward` reset and is exact up to float32 casting.
"""

import copy

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from cpd_jax.envs.mjx import sawyer


def native_mjx_data(env: sawyer.SawyerEnv, qpos, qvel, mocap_pos, body_pos) -> mjx.Data:
    """mjx.Data of native `mj_forward` on `env`'s edited model at the given physics state
    (float64 arrays: qpos [nq], qvel [nv], mocap_pos [nmocap, 3], body_pos [nbody, 3])."""
    m = copy.copy(env.mj_model)
    m.body_pos[:] = np.asarray(body_pos, np.float64)
    d = mujoco.MjData(m)
    d.qpos[:], d.qvel[:] = qpos, qvel
    d.mocap_pos[:] = mocap_pos
    d.mocap_quat[:] = np.asarray(env._data0.mocap_quat)
    d.ctrl[:] = np.asarray(env._data0.ctrl)
    mujoco.mj_forward(m, d)
    return mjx.put_data(m, d)


def host_reset_state(env: sawyer.SawyerEnv, rand_vec: np.ndarray) -> sawyer.State:
    """The `sawyer.State` that `env.reset(key, rand_vec)` starts from, built on the host."""
    t, d0 = env.task, env._data0
    rv = jnp.asarray(rand_vec, jnp.float32)
    qpos, qvel, body_pos = t.reset_physics(env, d0.qpos, d0.qvel, env._body_pos0, rv)
    d = native_mjx_data(env, np.asarray(qpos, np.float64), np.asarray(qvel, np.float64),
                        np.asarray(d0.mocap_pos, np.float64), np.asarray(body_pos, np.float64))
    # keep the dtypes/shapes of the jitted path (put_data may carry extra precision)
    d = jax.tree_util.tree_map(
        lambda a, b: jnp.asarray(a, b.dtype) if hasattr(b, "dtype") else a, d, d0)
    tv = t.reset_vars(env, d, rv)
    tv["init_tcp"] = jnp.asarray(env.init_tcp, jnp.float32)
    curr = env.curr_obs(d)
    zero = jnp.zeros((), jnp.float32)
    return sawyer.State(
        data=d, body_pos=jnp.asarray(body_pos, jnp.float32),
        obs=jnp.concatenate([curr, curr, tv["target_pos"]]), curr_obs=curr, reward=zero,
        done=jnp.zeros((), bool), truncated=jnp.zeros((), bool),
        step_count=jnp.zeros((), jnp.int32), task_vars=tv, info={"success": zero},
        rng=jax.random.PRNGKey(0))


def host_reset_states(env: sawyer.SawyerEnv, rand_vecs: np.ndarray) -> sawyer.State:
    """Batched `sawyer.State` [N] of `host_reset_state` for each row of rand_vecs [N, d]."""
    states = [host_reset_state(env, rv) for rv in rand_vecs]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
