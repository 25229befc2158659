"""button-press-wall-v3 (metaworld/envs/sawyer_button_press_wall_v3.py): press a
horizontal button (it slides along +y) behind a low wall."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "button-press-wall-v3"
XML = "sawyer_xyz/sawyer_button_press_wall.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH
RESET_LOW, RESET_HIGH = (-0.05, 0.85, 0.1149), (0.05, 0.9, 0.1151)
BUTTON_OFFSET = (0.0, -0.193, 0.0)  # _get_pos_objects: button body + this
BUTTON_QPOS = 9  # the button's slide joint; reset_model sets it to 0
SUCCESS_DIST = 0.03  # success if |target_y - obj_y| <= 0.03
NEAR_BUTTON_BOUND = 0.01
PRESSED_BOUND = 0.005
FAR_DIST = 0.07  # beyond this tcp-button distance only the reach term counts

# The scripted policy presses the cap (cylinder #2, r = 0.043) and then the rod
# (cylinder #1) with the fingertips while the claws slide along the front face of the
# box's upper block (box #0); a claw can brush the wall on the way. Button-vs-box
# contacts are lateral only (the button is on a slide joint) and are dropped.
BUTTON_CAP = GeomSel(body="button", gtype="cylinder", index=2)
BUTTON_ROD = GeomSel(body="button", gtype="cylinder", index=1)
BOX_TOP = GeomSel(body="buttonbox", gtype="box", index=0)
WALL = GeomSel(body=p2.UNNAMED_BODY, gtype="box")
MODEL_EDITS = ModelEdits(
    pairs=p2.fingers_with(BUTTON_CAP, BUTTON_ROD, BOX_TOP, WALL),
    cylinders_to_box=(BUTTON_CAP, BUTTON_ROD),
)


def resolve_ids(ids):
    return {"box": ids.body("box"), "button": ids.body("button"), "hole": ids.site("hole"),
            "button_start": ids.site("buttonStart")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    body_pos = body_pos.at[env.tids["box"]].set(rand_vec)
    return qpos.at[BUTTON_QPOS].set(0.0), qvel.at[BUTTON_QPOS].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    target = d.site_xpos[env.tids["hole"]]
    return {"target_pos": target, "obj_init_pos": rand_vec,
            "obj_to_target_init": jnp.abs(target[1] - d.site_xpos[env.tids["button_start"]][1])}


def obj_obs(env, d):
    b = env.tids["button"]
    return jnp.concatenate([d.xpos[b] + common.f32(BUTTON_OFFSET), d.xquat[b]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerButtonPressWallEnvV3."""
    tcp_to_obj, obj_to_target, near_button, pressed = common.button_press_terms(
        env, d, obs, tv, 1, NEAR_BUTTON_BOUND, PRESSED_BOUND, tv["obj_to_target_init"])
    far = 2.0 * ru.hamacher_product((1.0 - obs[3]) / 2.0, near_button)
    near = 2.0 + 2.0 * (1.0 + obs[3]) + 4.0 * pressed ** 2
    r = jnp.where(tcp_to_obj > FAR_DIST, far, near)
    return r, obj_to_target <= SUCCESS_DIST
