"""Helpers of the task modules that need contact and reset machinery beyond `common.py`:
finger/target contact pairs for the model edits (`fingers_with`), Meta-World's unnamed
wall body, and the two ways to reproduce a reset whose hand settles by simulation (the
MT50 lookup table of recorded reference states, `mt50_reset_lookup`, or the simulated
settle itself, `simulate_hand_reset`). Used by the 15 MT25 tasks outside MT10.
Pure jax unless stated otherwise.
"""

from cpd_jax.envs.mjx.model_edit import CLAW_GEOMS, PAD_GEOMS, GeomSel

FINGERS = PAD_GEOMS + CLAW_GEOMS  # the four finger collision boxes

# Meta-World's unnamed bodies: `GeomSel(body="")` selects the collision geoms of every
# body whose name is empty; in the wall tasks that is only the wall.
UNNAMED_BODY = ""


def fingers_with(*targets: GeomSel, claws: bool = True) -> list[tuple[GeomSel, GeomSel]]:
    """Pairs of each finger pad (and claw) with each target selection."""
    fingers = FINGERS if claws else PAD_GEOMS
    return [(GeomSel(name=f), t) for f in fingers for t in targets]


def mt50_reset_lookup(env, rand_vec, qpos, qvel):
    """(qpos float32[nq], qvel float32[nv]): the reference's post-reset state from
    `env.mt50_resets` when `rand_vec` is one of the 100 variations (max abs
    difference < 1e-5), else the given (simulated) qpos/qvel."""
    import jax.numpy as jnp

    tab = env.mt50_resets
    err = jnp.max(jnp.abs(tab["rand_vec"] - rand_vec[None]), axis=-1)
    i = jnp.argmin(err)
    hit = err[i] < 1e-5
    return jnp.where(hit, tab["qpos"][i], qpos), jnp.where(hit, tab["qvel"][i], qvel)


def simulate_hand_reset(env, body_pos, hand_init_pos, substeps: int,
                        solver_iterations: int | None = None):
    """(qpos, qvel) after Meta-World's second `reset_model` hand settle, simulated in MJX.

    From `mj_resetData` (qpos0, zero velocity) with this env's fixture positions
    `body_pos`, holds the mocap at `hand_init_pos` (quat (1, 0, 1, 0)) with gripper ctrl
    (-1, 1) for `substeps` physics substeps (`_reset_hand`: 50 x frame_skip = 250).
    For tasks where that settle touches a variation-dependent fixture (door-lock: the
    lock lever; disassemble: the nut lands on the moved peg), so the base's cached
    variation-0 state is wrong. Euler damping is forced on for the settle (without it
    the arm does not reach the mocap from qpos0 in 250 substeps).
    `solver_iterations` (Newton and line-search iterations for the settle only): the
    episode model's 4/8 are too few to reproduce how an object lands during the settle
    (disassemble's nut spins on the peg; with 20/20 native MuJoCo on the edited model
    matches the reference exactly, with 4/8 it is off by up to 0.11 in the quaternion).
    """
    import jax
    import jax.numpy as jnp
    from mujoco import mjx

    m = env.mx.replace(body_pos=body_pos)
    m = m.replace(opt=m.opt.replace(disableflags=m.opt.disableflags & ~mjx.DisableBit.EULERDAMP))
    if solver_iterations is not None:
        m = m.replace(opt=m.opt.replace(iterations=solver_iterations,
                                        ls_iterations=solver_iterations))
    d0 = env._data0
    d = mjx.make_data(m).replace(
        qpos=jnp.asarray(env.mj_model.qpos0, d0.qpos.dtype),
        mocap_pos=d0.mocap_pos.at[0].set(jnp.asarray(hand_init_pos, d0.mocap_pos.dtype)),
        mocap_quat=d0.mocap_quat, ctrl=jnp.array([-1.0, 1.0], d0.ctrl.dtype))
    d, _ = jax.lax.scan(lambda dd, _: (mjx.step(m, dd), None), d, None, length=substeps)
    return d.qpos, d.qvel
