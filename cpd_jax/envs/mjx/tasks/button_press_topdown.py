"""button-press-topdown-v3 (metaworld/envs/sawyer_button_press_topdown_v3.py)."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "button-press-topdown-v3"
XML = "sawyer_xyz/sawyer_button_press_topdown.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH
RESET_LOW, RESET_HIGH = (-0.1, 0.8, 0.115), (0.1, 0.9, 0.115)
BUTTON_OFFSET = (0.0, 0.0, 0.193)  # _get_pos_objects: button body + this
SUCCESS_DIST = 0.024  # success if |target_z - obj_z| <= 0.024
NEAR_BUTTON_BOUND = 0.01
PRESSED_BOUND = 0.005
CLOSE_ENOUGH = 0.03  # press reward only counts when tcp within 0.03 of the button

# The button's cap (the widest cylinder, r = 0.043) is what the closed fingers press.
BUTTON_CAP = GeomSel(body="button", gtype="cylinder", index=2)
MODEL_EDITS = ModelEdits(pairs=pads_with(BUTTON_CAP), cylinders_to_box=(BUTTON_CAP,))


def resolve_ids(ids):
    return {"box": ids.body("box"), "button": ids.body("button"), "hole": ids.site("hole"),
            "button_start": ids.site("buttonStart")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos, qvel, body_pos.at[env.tids["box"]].set(rand_vec)


def reset_vars(env, d, rand_vec):
    target = d.site_xpos[env.tids["hole"]]
    return {"target_pos": target, "obj_init_pos": rand_vec,
            "obj_to_target_init": jnp.abs(target[2] - d.site_xpos[env.tids["button_start"]][2])}


def obj_obs(env, d):
    b = env.tids["button"]
    return jnp.concatenate([d.xpos[b] + common.f32(BUTTON_OFFSET), d.xquat[b]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerButtonPressTopdownEnvV3."""
    tcp_to_obj, obj_to_target, near_button, pressed = common.button_press_terms(
        env, d, obs, tv, 2, NEAR_BUTTON_BOUND, PRESSED_BOUND, tv["obj_to_target_init"])
    tcp_closed = 1.0 - obs[3]
    r = 5.0 * ru.hamacher_product(tcp_closed, near_button)
    r = r + jnp.where(tcp_to_obj <= CLOSE_ENOUGH, 5.0 * pressed, 0.0)
    return r, obj_to_target <= SUCCESS_DIST
