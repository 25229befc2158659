"""Host-side cache of Meta-World's hand reset, simulated once per task with native MuJoCo.

`SawyerXYZEnv.reset` runs `mj_resetData` and then `reset_model`, whose `_reset_hand`
holds the mocap at `hand_init_pos` for 50 x 5 substeps. Nothing in that depends on the
task variation except where fixtures sit, which does not move the arm or the
variation-independent joints, so the post-reset arm/finger state and the mocap are the
same for every variation. We run the metaworld env itself (variation 0) and keep
qpos/qvel/mocap/ctrl and `init_tcp`; the task's `reset_physics` overwrites the
variation-dependent entries inside `jit`.
"""

import functools

import numpy as np

# peg-insert-side: the peg head site before the peg is moved (variation independent).
EXTRA_ATTRS = ("peg_head_pos_init",)


@functools.lru_cache(maxsize=None)
def hand_reset_state(task: str) -> dict[str, np.ndarray]:
    """{qpos, qvel, mocap_pos, mocap_quat, ctrl, init_tcp} after metaworld's reset."""
    from cpd_jax.envs.reference import make_metaworld_env, set_variation

    env = make_metaworld_env(task)
    set_variation(env, task, 0)
    env.reset()
    d = env.unwrapped.data if hasattr(env, "unwrapped") else env.data
    out = dict(qpos=d.qpos.copy(), qvel=d.qvel.copy(), mocap_pos=d.mocap_pos.copy(),
               mocap_quat=d.mocap_quat.copy(), ctrl=d.ctrl.copy(),
               init_tcp=np.asarray(env.init_tcp, np.float64).copy())
    for attr in EXTRA_ATTRS:  # task-specific values metaworld reads mid-reset
        if hasattr(env, attr):
            out[attr] = np.asarray(getattr(env, attr), np.float64).copy()
    env.close()
    return out


@functools.lru_cache(maxsize=None)
def mt50_reset_states(task: str) -> dict[str, np.ndarray]:
    """{rand_vec float64[V, d], qpos [V, nq], qvel [V, nv]}: the physics state right
    after metaworld's own `reset()` for each of the V = 100 variations (training and
    held-out goals, `cpd_jax.envs.variations`).

    For tasks whose hand settle touches a variation-dependent fixture (door-lock's lock,
    disassemble's nut landing on the moved peg) the post-reset state depends on the
    variation, and the MJX re-simulation of the settle (float32, reduced contacts) does
    not reproduce how the nut spins on the peg (chaotic: up to 0.25 in the quaternion).
    Those tasks look their reset up here when the variation is one of these and fall
    back to the simulated settle otherwise (random training variations). ~4 s/task.
    """
    from cpd_jax.envs import variations
    from cpd_jax.envs.reference import make_metaworld_env, set_variation

    env = make_metaworld_env(task)
    rvs, qpos, qvel = [], [], []
    for v in range(variations.NUM_VARIATIONS):
        set_variation(env, task, v)
        env.reset()
        rvs.append(variations.rand_vec(task, v))
        qpos.append(env.data.qpos.copy())
        qvel.append(env.data.qvel.copy())
    env.close()
    return dict(rand_vec=np.stack(rvs), qpos=np.stack(qpos), qvel=np.stack(qvel))
