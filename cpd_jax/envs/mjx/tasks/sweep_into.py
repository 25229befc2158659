"""sweep-into-v3 (metaworld/envs/sawyer_sweep_into_goal_v3.py): sweep a block into a
hole in the table (the goal is fixed; the rand_vec's goal half is unused)."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "sweep-into-v3"
XML = "sawyer_xyz/sawyer_table_with_hole.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.001, 0.8399, 0.0199), (0.001, 0.8401, 0.0201)
OBJ_LOW, OBJ_HIGH = (-0.1, 0.6, 0.02), (0.1, 0.7, 0.02)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
GOAL = (0.0, 0.84, 0.02)  # self.goal: the target, whatever the rand_vec says
MIN_OBJ_GOAL_XY = 0.15  # reset_model resamples until |obj_xy - GOAL_xy| >= 0.15
OBJ_QPOS = slice(9, 12)
OBJ_QVEL = slice(9, 15)
OBJ_RADIUS = 0.02
TARGET_RADIUS = 0.05
SUCCESS_DIST = 0.05
PAD_SUCCESS_MARGIN = 0.05
X_Z_SUCCESS_MARGIN = 0.01

# Pads and claws push the block; it slides on the table top (tablelink boxes #0, #2, #3,
# #5 of the table-with-hole, the ones the reference run touches) and falls in; the
# fingers scrape boxes #2, #3, #5.
BLOCK = GeomSel(name="objGeom")
_TOP = [GeomSel(body="tablelink", gtype="box", index=i) for i in (0, 2, 3, 5)]
MODEL_EDITS = ModelEdits(pairs=p2.fingers_with(BLOCK, *_TOP[1:]) + [(BLOCK, t) for t in _TOP])


def resolve_ids(ids):
    return {"obj": ids.body("obj"), "obj_geom": ids.geom("objGeom"),
            "leftpad": ids.body("leftpad"), "rightpad": ids.body("rightpad")}


def sample_rand_vec(key):
    """Like common.uniform_with_min_dist but against the fixed GOAL (metaworld's rule)."""
    import jax
    low, high = jnp.asarray(RESET_LOW, jnp.float32), jnp.asarray(RESET_HIGH, jnp.float32)
    cands = jax.random.uniform(key, (common.REJECTION_CANDIDATES,) + low.shape, jnp.float32,
                               low, high)
    ok = jnp.linalg.norm(cands[:, :2] - common.f32(GOAL[:2]), axis=-1) >= MIN_OBJ_GOAL_XY
    first_ok = jnp.where(jnp.any(ok), jnp.argmax(ok), common.REJECTION_CANDIDATES - 1)
    return cands[first_ok]


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    # obj z: the block's z before it is moved, i.e. where the cached reset left it
    obj = jnp.stack([rand_vec[0], rand_vec[1], qpos[OBJ_QPOS][2]])
    return qpos.at[OBJ_QPOS].set(obj), qvel.at[OBJ_QVEL].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": common.f32(GOAL), "obj_init_pos": d.qpos[OBJ_QPOS]}


def obj_obs(env, d):
    return jnp.concatenate([d.xpos[env.tids["obj"]],
                            common.quat_from_matrix_xyzw(d.geom_xmat[env.tids["obj_geom"]])])


def _caging(env, d, action, obj, tv):
    """SawyerSweepIntoGoalEnvV3._gripper_caging_reward (its own variant); metaworld's
    init_left_pad / init_right_pad are live views of the current pad positions."""
    tcp = env.tcp_center(d)
    left_pad, right_pad = d.xpos[env.tids["leftpad"]], d.xpos[env.tids["rightpad"]]
    dl, dr = left_pad[1] - obj[1], obj[1] - right_pad[1]
    r_margin = jnp.abs(jnp.abs(obj[1] - right_pad[1]) - PAD_SUCCESS_MARGIN)
    l_margin = jnp.abs(jnp.abs(obj[1] - left_pad[1]) - PAD_SUCCESS_MARGIN)
    grip = OBJ_RADIUS + 0.005
    r_cage = ru.tolerance(dr, (OBJ_RADIUS, PAD_SUCCESS_MARGIN), r_margin, "long_tail")
    l_cage = ru.tolerance(dl, (OBJ_RADIUS, PAD_SUCCESS_MARGIN), l_margin, "long_tail")
    r_grip = ru.tolerance(dr, (OBJ_RADIUS, grip), r_margin, "long_tail")
    l_grip = ru.tolerance(dl, (OBJ_RADIUS, grip), l_margin, "long_tail")
    y_caging = ru.hamacher_product(r_cage, l_cage)
    y_gripping = ru.hamacher_product(r_grip, l_grip)
    xz = jnp.array([0, 2])
    init = tv["obj_init_pos"]
    xz_margin = jnp.linalg.norm(init[xz] - tv["init_tcp"][xz]) - X_Z_SUCCESS_MARGIN
    x_z_caging = ru.tolerance(jnp.linalg.norm(tcp[xz] - obj[xz]), (0.0, X_Z_SUCCESS_MARGIN),
                              xz_margin, "long_tail")
    caging = ru.hamacher_product(y_caging, x_z_caging)
    gripping = jnp.where(caging > 0.95, y_gripping, 0.0)
    return (caging + gripping) / 2


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerSweepIntoGoalEnvV3."""
    obj = obs[4:7]
    target = jnp.stack([tv["target_pos"][0], tv["target_pos"][1], obj[2]])
    obj_to_target = jnp.linalg.norm(obj - target)
    in_place_margin = jnp.linalg.norm(tv["obj_init_pos"] - target)
    in_place = ru.tolerance(obj_to_target, (0.0, TARGET_RADIUS), in_place_margin, "long_tail")
    grasped = _caging(env, d, action, obj, tv)
    r = 2.0 * grasped + 6.0 * ru.hamacher_product(grasped, in_place)
    r = jnp.where(obj_to_target < TARGET_RADIUS, 10.0, r)
    return r, obj_to_target <= SUCCESS_DIST
