"""pick-place-wall-v3 (metaworld/envs/sawyer_pick_place_wall_v3.py): pick a puck and
place it at a goal behind a wall."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "pick-place-wall-v3"
XML = "sawyer_xyz/sawyer_pick_place_wall_v3.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.05, 0.85, 0.05), (0.05, 0.9, 0.3)
OBJ_LOW, OBJ_HIGH = (-0.05, 0.6, 0.015), (0.05, 0.65, 0.015)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_OBJ_GOAL_XY = 0.15
OBJ_QPOS = slice(9, 12)
OBJ_QVEL = slice(9, 15)
TARGET_RADIUS = 0.05
SUCCESS_DIST = 0.07
MIDPOINT_Y_Z = (0.77, 0.25)  # midpoint = (target_x, 0.77, 0.25): over the wall
IN_PLACE_SCALING = (1.0, 1.0, 3.0)

# Pads and claws grasp the puck (cylinder -> box of the same half-extents); the puck
# rests on the table and can hit the wall.
PUCK = GeomSel(name="objGeom")
WALL = GeomSel(body="wall", gtype="box")
MODEL_EDITS = ModelEdits(pairs=p2.fingers_with(PUCK) + [(PUCK, TABLE), (PUCK, WALL)],
                         cylinders_to_box=(PUCK,))


def resolve_ids(ids):
    return {"obj_geom": ids.geom("objGeom")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos.at[OBJ_QPOS].set(rand_vec[:3]), qvel.at[OBJ_QVEL].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec[3:6], "obj_init_pos": rand_vec[:3]}


def obj_obs(env, d):
    g = env.tids["obj_geom"]
    return jnp.concatenate([d.geom_xpos[g], common.quat_from_matrix_xyzw(d.geom_xmat[g])])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerPickPlaceWallEnvV3."""
    tcp, obj, target, init = env.tcp_center(d), obs[4:7], tv["target_pos"], tv["obj_init_pos"]
    tcp_opened = obs[3]
    midpoint = jnp.stack([target[0], MIDPOINT_Y_Z[0], MIDPOINT_Y_Z[1]]).astype(jnp.float32)
    scaling = common.f32(IN_PLACE_SCALING)
    tcp_to_obj = jnp.linalg.norm(obj - tcp)
    obj_to_midpoint = jnp.linalg.norm((obj - midpoint) * scaling)
    obj_to_midpoint_init = jnp.linalg.norm((init - midpoint) * scaling)
    obj_to_target = jnp.linalg.norm(obj - target)
    obj_to_target_init = jnp.linalg.norm(init - target)
    in_place1 = ru.tolerance(obj_to_midpoint, (0.0, TARGET_RADIUS), obj_to_midpoint_init,
                             "long_tail")
    in_place2 = ru.tolerance(obj_to_target, (0.0, TARGET_RADIUS), obj_to_target_init,
                             "long_tail")
    grasped = common.gripper_caging_reward(
        env, d, action, obj, init, tv["init_tcp"], obj_radius=0.015, pad_success_thresh=0.05,
        object_reach_radius=0.01, xz_thresh=0.005)
    both = ru.hamacher_product(grasped, in_place1)
    lifted = (tcp_to_obj < 0.02) & (tcp_opened > 0) & (obj[2] - 0.015 > init[2])
    r = jnp.where(lifted, jnp.where(obj[1] > 0.75, both + 1.0 + 4.0 + 3.0 * in_place2,
                                    both + 1.0 + 4.0 * in_place1), both)
    r = jnp.where(obj_to_target < TARGET_RADIUS, 10.0, r)
    return r, obj_to_target <= SUCCESS_DIST
