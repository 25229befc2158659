"""window-close-v3 (metaworld/envs/sawyer_window_close_v3.py): slide a window shut."""

import jax.numpy as jnp

from cpd_jax.envs.mjx.tasks import common
from cpd_jax.envs.mjx.tasks.window_open import (GOAL_HIGH, GOAL_LOW, HAND_HIGH, HAND_INIT_POS,
                                                HAND_LOW, MODEL_EDITS, SLIDE_QPOS, window_reward)

NAME = "window-close-v3"
XML = "sawyer_xyz/sawyer_window_horizontal.xml"
RESET_LOW, RESET_HIGH = (0.0, 0.75, 0.2), (0.0, 0.9, 0.2)
SLIDE_START = 0.2  # the window starts open
HANDLE_SITE = "handleCloseStart"
HANDLE_INIT_OFFSET = (0.2, 0.0, 0.0)  # window_handle_pos_init = handle at slide 0 + this
REACH_SIGMOID = "gaussian"
# MODEL_EDITS: window-open's (same scene; the reference's contacts are also mostly the
# hand mesh on the handle, so the hand stand-in is paired with the handle here too).


def resolve_ids(ids):
    return {"window": ids.body("window"), "handle": ids.site(HANDLE_SITE)}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    # Kinematics (and so the first obs) are evaluated with the slide at 0: metaworld sets
    # window_slide = 0.2 after its last mj_forward, so its reset obs shows the handle
    # there; `post_reset` opens the window before the first physics step.
    return qpos.at[SLIDE_QPOS].set(0.0), qvel, body_pos.at[env.tids["window"]].set(rand_vec)


def post_reset(env, d, rand_vec):
    return d.replace(qpos=d.qpos.at[SLIDE_QPOS].set(SLIDE_START))


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec, "obj_init_pos": rand_vec,
            "handle_init": d.site_xpos[env.tids["handle"]] + common.f32(HANDLE_INIT_OFFSET)}


def obj_obs(env, d):
    return jnp.concatenate([d.site_xpos[env.tids["handle"]], jnp.zeros(4, jnp.float32)])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerWindowCloseEnvV3."""
    return window_reward(env, d, tv, tv["handle_init"][0], REACH_SIGMOID)
