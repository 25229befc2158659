"""pick-place-v3 (metaworld/envs/sawyer_pick_place_v3.py): grasp a puck, carry it to a
goal in the air."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "pick-place-v3"
XML = "sawyer_xyz/sawyer_pick_place_v3.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.1, 0.8, 0.05), (0.1, 0.9, 0.3)
OBJ_LOW, OBJ_HIGH = (-0.1, 0.6, 0.02), (0.1, 0.7, 0.02)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_OBJ_GOAL_XY = 0.15
TARGET_RADIUS = 0.05
SUCCESS_DIST = 0.07
OBJ_QPOS, OBJ_QVEL = slice(9, 12), slice(9, 15)
# _gripper_caging_reward override constants
PAD_SUCCESS_MARGIN, XZ_SUCCESS_MARGIN, OBJ_RADIUS = 0.05, 0.005, 0.015

PUCK = GeomSel(name="objGeom")
MODEL_EDITS = ModelEdits(
    pairs=pads_with(PUCK, claws=True) + [(PUCK, TABLE)],
    cylinders_to_box=(PUCK,),
)


def resolve_ids(ids):
    return {"obj": ids.body("obj"), "obj_geom": ids.geom("objGeom"),
            "leftpad": ids.body("leftpad"), "rightpad": ids.body("rightpad")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos.at[OBJ_QPOS].set(rand_vec[:3]), qvel.at[OBJ_QVEL].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    ti = env.tids
    return {"target_pos": rand_vec[3:6], "obj_init_pos": rand_vec[:3],
            "init_left_pad": d.xpos[ti["leftpad"]], "init_right_pad": d.xpos[ti["rightpad"]]}


def obj_obs(env, d):
    ti = env.tids
    return jnp.concatenate([d.xpos[ti["obj"]],
                            common.quat_from_matrix_xyzw(d.geom_xmat[ti["obj_geom"]])])


def _caging(env, d, action, obj, tv):
    """SawyerPickPlaceEnvV3._gripper_caging_reward (its own override)."""
    tcp = env.tcp_center(d)
    left, right = d.xpos[env.tids["leftpad"]], d.xpos[env.tids["rightpad"]]
    r_margin = jnp.abs(jnp.abs(obj[1] - tv["init_right_pad"][1]) - PAD_SUCCESS_MARGIN)
    l_margin = jnp.abs(jnp.abs(obj[1] - tv["init_left_pad"][1]) - PAD_SUCCESS_MARGIN)
    bounds = (OBJ_RADIUS, PAD_SUCCESS_MARGIN)
    right_c = ru.tolerance(obj[1] - right[1], bounds, r_margin, "long_tail")
    left_c = ru.tolerance(left[1] - obj[1], bounds, l_margin, "long_tail")
    y_caging = ru.hamacher_product(left_c, right_c)
    xz = jnp.array([0, 2])
    xz_margin = (jnp.linalg.norm(tv["obj_init_pos"][xz] - tv["init_tcp"][xz])
                 - XZ_SUCCESS_MARGIN)
    xz_caging = ru.tolerance(jnp.linalg.norm(tcp[xz] - obj[xz]), (0.0, XZ_SUCCESS_MARGIN),
                             xz_margin, "long_tail")
    gripper_closed = jnp.clip(action[-1], 0.0, 1.0)
    caging = ru.hamacher_product(y_caging, xz_caging)
    gripping = jnp.where(caging > 0.97, gripper_closed, 0.0)
    return (ru.hamacher_product(caging, gripping) + caging) / 2


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerPickPlaceEnvV3."""
    obj, tcp_opened, target = obs[4:7], obs[3], tv["target_pos"]
    obj_to_target = jnp.linalg.norm(obj - target)
    tcp_to_obj = jnp.linalg.norm(obj - env.tcp_center(d))
    in_place_margin = jnp.linalg.norm(tv["obj_init_pos"] - target)
    in_place = ru.tolerance(obj_to_target, (0.0, TARGET_RADIUS), in_place_margin, "long_tail")
    grasped = _caging(env, d, action, obj, tv)
    r = ru.hamacher_product(grasped, in_place)
    lifted = (tcp_to_obj < 0.02) & (tcp_opened > 0) & (obj[2] - 0.01 > tv["obj_init_pos"][2])
    r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
    r = jnp.where(obj_to_target < TARGET_RADIUS, 10.0, r)
    return r, obj_to_target <= SUCCESS_DIST
