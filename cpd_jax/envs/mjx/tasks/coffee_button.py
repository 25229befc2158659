"""coffee-button-v3 (metaworld/envs/sawyer_coffee_button_v3.py): push the coffee
machine's button (a slide joint along +y) with the hand."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import HAND_PROXY, TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "coffee-button-v3"
XML = "sawyer_xyz/sawyer_coffee.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.4, 0.05), (0.5, 1.0, 0.5)
MAX_DIST = 0.03  # button travel
RESET_LOW, RESET_HIGH = (-0.1, 0.8, -0.001), (0.1, 0.9, 0.001)
GOAL_LOW = (-0.1 - 0.001, 0.8 - 0.22 + MAX_DIST, -0.001 + 0.299)
GOAL_HIGH = (0.1 + 0.001, 0.9 - 0.22 + MAX_DIST, 0.001 + 0.301)
MUG_OFFSET = (0.0, -0.22, 0.0)  # mug qpos = machine pos + this
BUTTON_OFFSET = (0.0, -0.22, 0.3)  # target = machine pos + this + (0, MAX_DIST, 0)
MUG_QPOS = slice(0, 3)  # the mug's free joint comes first in this model
MUG_QVEL_ZEROED = slice(9, 15)  # sic: metaworld's _set_obj_xyz zeroes qvel[9:15]
SUCCESS_DIST = 0.02
NEAR_BUTTON_BOUND = 0.05
PRESSED_BOUND = 0.005

# The hand itself pushes the button with the end of its mesh. Mesh pairs are too costly
# for MJX (`model_edit.HAND_PROXY`), so the hand is the capsule stand-in HAND_PROXY (the
# box stand-in scripts as well natively, but native box-box yields more contacts than
# MJX's 4 per pair, so recorded native states would not fit `mjx.put_data`); the fingers
# rest on the frame block below the button (box #3); the mug only needs to stand on the
# table.
BUTTON = GeomSel(body="cmbutton", gtype="cylinder")
HAND = HAND_PROXY
FRAME_LOW = GeomSel(body="cm_link", gtype="box", index=3)
MUG = GeomSel(body="mug", gtype="cylinder", index=0)
MODEL_EDITS = ModelEdits(
    pairs=[(HAND, BUTTON), (MUG, TABLE)] + p2.fingers_with(FRAME_LOW, BUTTON),
    cylinders_to_box=(BUTTON, MUG),
    hand_proxy="capsule",
)


def resolve_ids(ids):
    return {"machine": ids.body("coffee_machine"), "button_start": ids.site("buttonStart")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    body_pos = body_pos.at[env.tids["machine"]].set(rand_vec)
    qpos = qpos.at[MUG_QPOS].set(rand_vec + common.f32(MUG_OFFSET))
    return qpos, qvel.at[MUG_QVEL_ZEROED].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    target = rand_vec + common.f32(BUTTON_OFFSET) + jnp.array([0.0, MAX_DIST, 0.0], jnp.float32)
    return {"target_pos": target, "obj_init_pos": rand_vec}


def obj_obs(env, d):
    return jnp.concatenate([d.site_xpos[env.tids["button_start"]],
                            jnp.array([1.0, 0.0, 0.0, 0.0], jnp.float32)])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerCoffeeButtonEnvV3."""
    tcp_to_obj, obj_to_target, near_button, pressed = common.button_press_terms(
        env, d, obs, tv, 1, NEAR_BUTTON_BOUND, PRESSED_BOUND, MAX_DIST)
    tcp_closed = jnp.maximum(obs[3], 0.0)
    r = 2.0 * ru.hamacher_product(tcp_closed, near_button)
    r = r + jnp.where(tcp_to_obj <= NEAR_BUTTON_BOUND, 8.0 * pressed, 0.0)
    return r, obj_to_target <= SUCCESS_DIST
