"""pick-out-of-hole-v3 (metaworld/envs/sawyer_pick_out_of_hole_v3.py): pick a puck out
of a hole in the table and lift it to a goal in the air."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "pick-out-of-hole-v3"
XML = "sawyer_xyz/sawyer_pick_out_of_hole.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, -0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.1, 0.5, 0.15), (0.1, 0.6, 0.3)
OBJ_LOW, OBJ_HIGH = (0.0, 0.75, 0.02), (0.0, 0.75, 0.02)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_OBJ_GOAL_XY = 0.15
OBJ_QPOS = slice(9, 12)
OBJ_QVEL = slice(9, 15)
SUCCESS_DIST = 0.07
FINAL_RADIUS = 0.05  # `self.TARGET_RADIUS` resolves to SawyerXYZEnv's 0.05 (sic)
FUNNEL_THRESHOLD = 0.03

# Pads and claws grasp the puck (cylinder -> box); the puck sits in the hole (the
# tablelink top below, the four boxes of the unnamed hole body around it); the
# fingers reach down to the table and the hole's front block.
PUCK = GeomSel(name="objGeom")
HOLE = GeomSel(body=p2.UNNAMED_BODY, gtype="box")
HOLE_FRONT = GeomSel(body=p2.UNNAMED_BODY, gtype="box", index=0)
MODEL_EDITS = ModelEdits(
    pairs=p2.fingers_with(PUCK, TABLE, HOLE_FRONT) + [(PUCK, TABLE), (PUCK, HOLE)],
    cylinders_to_box=(PUCK,))


def resolve_ids(ids):
    return {"obj": ids.body("obj")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos.at[OBJ_QPOS].set(rand_vec[:3]), qvel.at[OBJ_QVEL].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec[3:6], "obj_init_pos": rand_vec[:3]}


def obj_obs(env, d):
    o = env.tids["obj"]
    return jnp.concatenate([d.xpos[o], d.xquat[o]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerPickOutOfHoleEnvV3."""
    obj, gripper, target, init = obs[4:7], env.tcp_center(d), tv["target_pos"], tv["obj_init_pos"]
    obj_to_target = jnp.linalg.norm(obj - target)
    tcp_to_obj = jnp.linalg.norm(obj - gripper)
    in_place_margin = jnp.linalg.norm(init - target)
    radius = jnp.linalg.norm(gripper[:2] - init[:2])
    safe = jnp.maximum(radius - FUNNEL_THRESHOLD, 1e-12)
    floor = jnp.where(radius <= FUNNEL_THRESHOLD, 0.0, 0.015 * jnp.log(safe) + 0.15)
    above_floor = jnp.where(
        gripper[2] >= floor, 1.0,
        ru.tolerance(jnp.maximum(floor - gripper[2], 0.0), (0.0, 0.01), 0.02, "long_tail"))
    grasped = common.gripper_caging_reward(
        env, d, action, obj, init, tv["init_tcp"], object_reach_radius=0.01, obj_radius=0.015,
        pad_success_thresh=0.02, xz_thresh=0.03, desired_gripper_effort=0.1,
        high_density=True)
    in_place = ru.tolerance(obj_to_target, (0.0, 0.02), in_place_margin, "long_tail")
    r = ru.hamacher_product(grasped, in_place)
    grasp_success = (tcp_to_obj < 0.04) & (obj[2] - 0.02 > init[2]) & ~(obs[3] < 0.33)
    r = jnp.where(grasp_success, r + 1.0 + 5.0 * ru.hamacher_product(in_place, above_floor), r)
    r = jnp.where(obj_to_target < FINAL_RADIUS, 10.0, r)
    return r, obj_to_target <= SUCCESS_DIST
