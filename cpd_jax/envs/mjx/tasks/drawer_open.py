"""drawer-open-v3 (metaworld/envs/sawyer_drawer_open_v3.py): pull a closed drawer open."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "drawer-open-v3"
XML = "sawyer_xyz/sawyer_drawer.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH
RESET_LOW, RESET_HIGH = (-0.1, 0.9, 0.0), (0.1, 0.9, 0.0)
MAX_DIST = 0.2  # the goal is the handle pulled out by this much
HANDLE_OFFSET = (0.0, -0.16, 0.0)  # _get_pos_objects: drawer_link + this
SUCCESS_DIST = 0.03
GRIPPER_ERROR_SCALE = (3.0, 3.0, 1.0)

HANDLE = GeomSel(body="drawer_link", gtype="capsule")
MODEL_EDITS = ModelEdits(
    # The fingers hook the handle (3 capsules) and pull; the slide joint limit stops it.
    pairs=pads_with(HANDLE, claws=True),
)


def resolve_ids(ids):
    return {"drawer": ids.body("drawer"), "drawer_link": ids.body("drawer_link")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos, qvel, body_pos.at[env.tids["drawer"]].set(rand_vec)


def reset_vars(env, d, rand_vec):
    target = rand_vec + jnp.array([0.0, -0.16 - MAX_DIST, 0.09], jnp.float32)
    return {"target_pos": target, "obj_init_pos": rand_vec}


def obj_obs(env, d):
    b = env.tids["drawer_link"]
    return jnp.concatenate([d.xpos[b] + common.f32(HANDLE_OFFSET), d.xquat[b]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerDrawerOpenEnvV3."""
    gripper, handle, target = obs[:3], obs[4:7], tv["target_pos"]
    handle_error = jnp.linalg.norm(handle - target)
    opening = ru.tolerance(handle_error, (0.0, 0.02), MAX_DIST, "long_tail")
    handle_pos_init = target + jnp.array([0.0, MAX_DIST, 0.0], jnp.float32)
    scale = common.f32(GRIPPER_ERROR_SCALE)
    gripper_error = (handle - gripper) * scale
    gripper_error_init = (handle_pos_init - tv["init_tcp"]) * scale
    caging = ru.tolerance(jnp.linalg.norm(gripper_error), (0.0, 0.01),
                          jnp.linalg.norm(gripper_error_init), "long_tail")
    return 5.0 * (caging + opening), handle_error <= SUCCESS_DIST
