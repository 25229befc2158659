"""drawer-close-v3 (metaworld/envs/sawyer_drawer_close_v3.py): push an open drawer shut."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "drawer-close-v3"
XML = "sawyer_xyz/sawyer_drawer.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH  # goal_space = hand box
RESET_LOW, RESET_HIGH = (-0.1, 0.9, 0.0), (0.1, 0.9, 0.0)
MAX_DIST = 0.15  # drawer starts open by this much (slide joint qpos = -MAX_DIST)
TARGET_RADIUS = 0.05
SUCCESS_SLACK = 0.015  # success if obj-target <= TARGET_RADIUS + 0.015
HANDLE_REACH_RADIUS = 0.005
DRAWER_QPOS = 9
HANDLE_OFFSET = (0.0, -0.16, 0.05)  # _get_pos_objects: drawer_link + this
TARGET_OFFSET = (0.0, -0.16, 0.09)  # _target_pos: drawer body pos + this

DRAWER_BACK = GeomSel(body="drawer_link", gtype="box", index=1)
CASE_BACK = GeomSel(body="drawercase_link", gtype="box", index=2)
MODEL_EDITS = ModelEdits(
    # The policy pushes the handle (3 capsules) and the drawer front with the fingers;
    # the drawer's back wall hitting the case's back wall is what stops it when closed
    # (the slide joint limit alone is too soft against the mocap weld).
    pairs=pads_with(GeomSel(body="drawer_link", gtype="capsule"),
                    GeomSel(body="drawer_link", gtype="box", index=0))
    + [(DRAWER_BACK, CASE_BACK)],
)


def resolve_ids(ids):
    return {"drawer": ids.body("drawer"), "drawer_link": ids.body("drawer_link")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    body_pos = body_pos.at[env.tids["drawer"]].set(rand_vec)
    return qpos.at[DRAWER_QPOS].set(-MAX_DIST), qvel, body_pos


def _obj_pos(env, d):
    return d.xpos[env.tids["drawer_link"]] + common.f32(HANDLE_OFFSET)


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec + common.f32(TARGET_OFFSET), "obj_init_pos": _obj_pos(env, d)}


def obj_obs(env, d):
    return jnp.concatenate([_obj_pos(env, d), jnp.zeros(4, jnp.float32)])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerDrawerCloseEnvV3."""
    obj, tcp, target = obs[4:7], env.tcp_center(d), tv["target_pos"]
    target_to_obj = jnp.linalg.norm(obj - target)
    target_to_obj_init = jnp.linalg.norm(tv["obj_init_pos"] - target)
    in_place = ru.tolerance(target_to_obj, (0.0, TARGET_RADIUS),
                            jnp.abs(target_to_obj_init - TARGET_RADIUS), "long_tail")
    tcp_to_obj = jnp.linalg.norm(obj - tcp)
    tcp_to_obj_init = jnp.linalg.norm(tv["obj_init_pos"] - tv["init_tcp"])
    reach = ru.tolerance(tcp_to_obj, (0.0, HANDLE_REACH_RADIUS),
                         jnp.abs(tcp_to_obj_init - HANDLE_REACH_RADIUS), "gaussian")
    gripper_closed = jnp.clip(action[-1], 0.0, 1.0)
    reach = ru.hamacher_product(reach, gripper_closed)
    success = target_to_obj <= TARGET_RADIUS + SUCCESS_SLACK
    r = jnp.where(success, 1.0, ru.hamacher_product(reach, in_place))
    return 10.0 * r, success
