"""basketball-v3 (metaworld/envs/sawyer_basketball_v3.py): pick up the ball and drop it
through the hoop."""

import jax.numpy as jnp
import numpy as np

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "basketball-v3"
XML = "sawyer_xyz/sawyer_basketball.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
OBJ_LOW, OBJ_HIGH = (-0.1, 0.6, 0.0299), (0.1, 0.7, 0.0301)
BASKET_LOW, BASKET_HIGH = (-0.1, 0.85, 0.0), (0.1, 0.9 + 1e-7, 0.0)
RESET_LOW, RESET_HIGH = OBJ_LOW + BASKET_LOW, OBJ_HIGH + BASKET_HIGH
GOAL_LOW = (-0.1, 0.85 - 0.083, 0.2499)  # goal_space = basket range + (0, -0.083, 0.25)
GOAL_HIGH = (0.1, 0.9 + 1e-7 - 0.083, 0.2501)
MIN_OBJ_GOAL_XY = 0.15
# reset_model keeps the z of init_config's obj_init_pos, a float32 0.03
OBJ_INIT_Z = float(np.float32(0.03))
OBJ_QPOS = slice(9, 12)
OBJ_QVEL = slice(9, 15)
TARGET_RADIUS = 0.08
TARGET_Z = 0.3  # compute_reward forces the target slightly above the hoop
SCALE = (1.0, 1.0, 2.0)

# Pads and claws hold the ball (sphere) and hit the backboard (box #0 of
# backboardlink) when dunking; the ball rests on the table and hits the backboard and
# the ring (8 capsules and a box on hooplink).
BALL = GeomSel(name="objGeom")
BACKBOARD = GeomSel(body="backboardlink", gtype="box", index=0)
RING = GeomSel(body="hooplink")
MODEL_EDITS = ModelEdits(
    pairs=p2.fingers_with(BALL, BACKBOARD) + [(BALL, TABLE), (BALL, BACKBOARD), (BALL, RING)])


def resolve_ids(ids):
    return {"basket": ids.body("basket_goal"), "ball": ids.body("bsktball"),
            "goal": ids.site("goal")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def _obj_init(rand_vec):
    return jnp.stack([rand_vec[0], rand_vec[1], jnp.asarray(OBJ_INIT_Z, jnp.float32)])


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    body_pos = body_pos.at[env.tids["basket"]].set(rand_vec[3:6])
    return qpos.at[OBJ_QPOS].set(_obj_init(rand_vec)), qvel.at[OBJ_QVEL].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": d.site_xpos[env.tids["goal"]], "obj_init_pos": _obj_init(rand_vec)}


def obj_obs(env, d):
    b = env.tids["ball"]
    return jnp.concatenate([d.xpos[b], d.xquat[b]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerBasketballEnvV3."""
    obj, init = obs[4:7], tv["obj_init_pos"]
    target = tv["target_pos"].at[2].set(TARGET_Z)
    scale = common.f32(SCALE)
    target_to_obj = jnp.linalg.norm((obj - target) * scale)
    target_to_obj_init = jnp.linalg.norm((init - target) * scale)
    in_place = ru.tolerance(target_to_obj, (0.0, TARGET_RADIUS), target_to_obj_init,
                            "long_tail")
    tcp_opened = obs[3]
    tcp_to_obj = jnp.linalg.norm(obj - env.tcp_center(d))
    grasped = common.gripper_caging_reward(
        env, d, action, obj, init, tv["init_tcp"], object_reach_radius=0.01, obj_radius=0.025,
        pad_success_thresh=0.06, xz_thresh=0.005, high_density=True)
    lifted = (tcp_to_obj < 0.035) & (tcp_opened > 0) & (obj[2] - 0.01 > init[2])
    grasped = jnp.where(lifted, 1.0, grasped)
    r = ru.hamacher_product(grasped, in_place)
    r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
    r = jnp.where(target_to_obj < TARGET_RADIUS, 10.0, r)
    return r, target_to_obj <= TARGET_RADIUS
