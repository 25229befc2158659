"""reach-v3 (metaworld/envs/sawyer_reach_v3.py): move the gripper to a goal in the air."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "reach-v3"
XML = "sawyer_xyz/sawyer_reach_v3.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.1, 0.8, 0.05), (0.1, 0.9, 0.3)
OBJ_LOW, OBJ_HIGH = (-0.1, 0.6, 0.02), (0.1, 0.7, 0.02)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_OBJ_GOAL_XY = 0.15  # reset_model resamples until |obj_xy - goal_xy| >= 0.15
TARGET_RADIUS = 0.05
OBJ_QPOS = slice(9, 12)  # the puck's free joint position
OBJ_QVEL = slice(9, 15)

PUCK = GeomSel(name="objGeom")
MODEL_EDITS = ModelEdits(
    # The puck only matters if the fingers bump it; it must rest on the table.
    pairs=pads_with(PUCK) + [(PUCK, TABLE)],
    cylinders_to_box=(PUCK,),
)


def resolve_ids(ids):
    return {"obj": ids.body("obj"), "obj_geom": ids.geom("objGeom")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    qpos = qpos.at[OBJ_QPOS].set(rand_vec[:3])
    qvel = qvel.at[OBJ_QVEL].set(0.0)
    return qpos, qvel, body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec[3:6], "obj_init_pos": rand_vec[:3]}


def obj_obs(env, d):
    ti = env.tids
    return jnp.concatenate([d.xpos[ti["obj"]],
                            common.quat_from_matrix_xyzw(d.geom_xmat[ti["obj_geom"]])])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerReachEnvV3."""
    target = tv["target_pos"]
    tcp_to_target = jnp.linalg.norm(env.tcp_center(d) - target)
    in_place_margin = jnp.linalg.norm(common.f32(HAND_INIT_POS) - target)
    in_place = ru.tolerance(tcp_to_target, (0.0, TARGET_RADIUS), in_place_margin, "long_tail")
    return 10.0 * in_place, tcp_to_target <= TARGET_RADIUS
