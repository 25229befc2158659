"""push-v3 (metaworld/envs/sawyer_push_v3.py): push a puck to a goal on the table."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "push-v3"
XML = "sawyer_xyz/sawyer_push_v3.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
OBJ_LOW, OBJ_HIGH = (-0.1, 0.6, 0.02), (0.1, 0.7, 0.02)
GOAL_LOW, GOAL_HIGH = (-0.1, 0.8, 0.01), (0.1, 0.9, 0.02)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_OBJ_GOAL_XY = 0.15
TARGET_RADIUS = 0.05
OBJ_QPOS, OBJ_QVEL = slice(9, 12), slice(9, 15)
OBJ_Z_QPOS = 11  # the puck's resting height after the hand reset (variation independent)

PUCK = GeomSel(name="objGeom")
MODEL_EDITS = ModelEdits(
    # Fingers (pads and claws) push the puck; the puck slides on the table.
    pairs=pads_with(PUCK, claws=True) + [(PUCK, TABLE)],
    cylinders_to_box=(PUCK,),
)


def resolve_ids(ids):
    return {"obj": ids.body("obj"), "obj_geom": ids.geom("objGeom"),
            "leftpad": ids.body("leftpad"), "rightpad": ids.body("rightpad")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def _obj_init(qpos0, rand_vec):
    return jnp.concatenate([rand_vec[:2], qpos0[OBJ_Z_QPOS][None]])


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    qpos = qpos.at[OBJ_QPOS].set(_obj_init(qpos, rand_vec))
    return qpos, qvel.at[OBJ_QVEL].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    z = env._data0.qpos[OBJ_Z_QPOS][None]
    return {"target_pos": jnp.concatenate([rand_vec[3:5], z]),
            "obj_init_pos": _obj_init(env._data0.qpos, rand_vec)}


def obj_obs(env, d):
    ti = env.tids
    return jnp.concatenate([d.xpos[ti["obj"]],
                            common.quat_from_matrix_xyzw(d.geom_xmat[ti["obj_geom"]])])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerPushEnvV3."""
    obj, tcp_opened = obs[4:7], obs[3]
    tcp_to_obj = jnp.linalg.norm(obj - env.tcp_center(d))
    target_to_obj = jnp.linalg.norm(obj - tv["target_pos"])
    target_to_obj_init = jnp.linalg.norm(tv["obj_init_pos"] - tv["target_pos"])
    in_place = ru.tolerance(target_to_obj, (0.0, TARGET_RADIUS), target_to_obj_init, "long_tail")
    grasped = common.gripper_caging_reward(env, d, action, obj, tv["obj_init_pos"],
                                           tv["init_tcp"], obj_radius=0.015,
                                           pad_success_thresh=0.05, object_reach_radius=0.01,
                                           xz_thresh=0.005, high_density=True)
    r = 2.0 * grasped
    r = jnp.where((tcp_to_obj < 0.02) & (tcp_opened > 0), 1.0 + 2.0 * r + 5.0 * in_place, r)
    success = target_to_obj <= TARGET_RADIUS
    r = jnp.where(target_to_obj < TARGET_RADIUS, 10.0, r)
    return r, success
