"""Helpers shared by the task modules (pure jax)."""

import jax
import jax.numpy as jnp
import numpy as np

# How many candidates the bounded rejection sampler draws (Meta-World loops until the
# object-goal distance rule holds; with these ranges a candidate fails < 50% of the
# time, so 16 draws all fail with probability < 2e-5, and then the last one is used).
REJECTION_CANDIDATES = 16


def uniform(key, low, high):
    """float32[d] uniform in the box [low, high]."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    return jax.random.uniform(key, low.shape, jnp.float32, low, high)


def uniform_with_min_dist(key, low, high, min_dist: float, a=slice(0, 2), b=slice(3, 5)):
    """Like `uniform` but rejects draws with |v[a] - v[b]| < min_dist (bounded loop)."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    cands = jax.random.uniform(key, (REJECTION_CANDIDATES,) + low.shape, jnp.float32, low, high)
    ok = jnp.linalg.norm(cands[:, a] - cands[:, b], axis=-1) >= min_dist
    first_ok = jnp.where(jnp.any(ok), jnp.argmax(ok), REJECTION_CANDIDATES - 1)
    return cands[first_ok]


def quat_from_matrix_xyzw(m):
    """float32[4] (x, y, z, w): scipy `Rotation.from_matrix(m).as_quat()` incl. its sign
    convention (the largest of diag/trace decides which component is built first)."""
    m = m.reshape(3, 3)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    decision = jnp.stack([m[0, 0], m[1, 1], m[2, 2], tr])
    choice = jnp.argmax(decision)
    cands = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        q = [None] * 4
        q[i] = 1.0 - tr + 2.0 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[k] = m[k, i] + m[i, k]
        q[3] = m[k, j] - m[j, k]
        cands.append(jnp.stack(q))
    cands.append(jnp.stack([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1.0 + tr]))
    q = jnp.stack(cands)[choice]
    return q / jnp.linalg.norm(q)


def f32(x):
    return jnp.asarray(np.asarray(x, np.float64), jnp.float32)


def button_press_terms(env, d, obs, tv, axis: int, near_bound: float, pressed_bound: float,
                       pressed_margin):
    """The terms every v2 button reward builds (button-press-topdown, -wall,
    -topdown-wall, coffee-button), float32[] each:
    (tcp_to_obj, obj_to_target, near_button, pressed).

    obj = obs[4:7] (the button), pressed along `axis` towards tv["target_pos"]; the reach
    margin is |obj - init_tcp| with the *current* button position (sic, as metaworld);
    `pressed_margin` is the task's (tv["obj_to_target_init"] or a fixed travel).
    """
    from cpd_jax.envs.mjx import reward_utils as ru

    obj = obs[4:7]
    tcp_to_obj = jnp.linalg.norm(obj - env.tcp_center(d))
    tcp_to_obj_init = jnp.linalg.norm(obj - tv["init_tcp"])
    obj_to_target = jnp.abs(tv["target_pos"][axis] - obj[axis])
    near_button = ru.tolerance(tcp_to_obj, (0.0, near_bound), tcp_to_obj_init, "long_tail")
    pressed = ru.tolerance(obj_to_target, (0.0, pressed_bound), pressed_margin, "long_tail")
    return tcp_to_obj, obj_to_target, near_button, pressed


def gripper_caging_reward(env, d, action, obj_pos, obj_init, init_tcp, *, obj_radius,
                          pad_success_thresh, object_reach_radius, xz_thresh,
                          desired_gripper_effort=1.0, high_density=False,
                          medium_density=False):
    """`SawyerXYZEnv._gripper_caging_reward` (float32[] in [0, 1]): caging in y by the two
    pads, closeness in xz, gripper effort, optional density terms. The one port used by
    every task that calls the base method (tasks with their own override, pick-place and
    sweep-into, have theirs). obj_pos, obj_init, init_tcp: float32[3] (some tasks pass
    an obj_init other than tv["obj_init_pos"], e.g. basketball's z-shifted one)."""
    from cpd_jax.envs.mjx import reward_utils as ru

    if high_density and medium_density:
        raise ValueError("Can only be either high_density or medium_density")
    pad_y = jnp.stack([d.xpos[env.ids.body("leftpad")][1], d.xpos[env.ids.body("rightpad")][1]])
    pad_to_obj = jnp.abs(pad_y - obj_pos[1])
    pad_to_objinit = jnp.abs(pad_y - obj_init[1])
    margin = jnp.abs(pad_to_objinit - pad_success_thresh)
    caging_lr = [ru.tolerance(pad_to_obj[i], (obj_radius, pad_success_thresh), margin[i],
                              "long_tail") for i in range(2)]
    caging_y = ru.hamacher_product(*caging_lr)
    tcp = env.tcp_center(d)
    xz = jnp.array([0, 2])
    xz_margin = jnp.linalg.norm(obj_init[xz] - init_tcp[xz]) - xz_thresh
    caging_xz = ru.tolerance(jnp.linalg.norm(tcp[xz] - obj_pos[xz]), (0.0, xz_thresh),
                             xz_margin, "long_tail")
    gripper_closed = jnp.minimum(jnp.maximum(0.0, action[-1]),
                                 desired_gripper_effort) / desired_gripper_effort
    caging = ru.hamacher_product(caging_y, caging_xz)
    gripping = jnp.where(caging > 0.97, gripper_closed, 0.0)
    out = ru.hamacher_product(caging, gripping)
    if high_density:
        out = (out + caging) / 2
    if medium_density:
        tcp_to_obj = jnp.linalg.norm(obj_pos - tcp)
        tcp_to_obj_init = jnp.linalg.norm(obj_init - init_tcp)
        reach = ru.tolerance(tcp_to_obj, (0.0, object_reach_radius),
                             jnp.abs(tcp_to_obj_init - object_reach_radius), "long_tail")
        out = (out + reach) / 2
    return out
