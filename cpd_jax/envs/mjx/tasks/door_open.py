"""door-open-v3 (metaworld/envs/sawyer_door_v3.py): pull a hinged door open by its handle."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits, pads_with
from cpd_jax.envs.mjx.tasks import common

NAME = "door-open-v3"
XML = "sawyer_xyz/sawyer_door_pull.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.3, 0.4, 0.1499), (-0.2, 0.5, 0.1501)
RESET_LOW, RESET_HIGH = (0.0, 0.85, 0.15), (0.1, 0.95, 0.15)
TARGET_OFFSET = (-0.3, -0.45, 0.0)
DOOR_QPOS, DOOR_QVEL = 9, 9
SUCCESS_X = 0.08  # success if |handle_x - target_x| <= 0.08
POS_THRESHOLD = 0.12  # _reward_pos "threshold"
HANDLE_TO_DOOR = (-0.05, 0.0, 0.0)
HAND_TO_DOOR = (0.05, 0.03, -0.01)

HANDLE = GeomSel(body="door_link", gtype="cylinder")
DOOR_PANEL = GeomSel(body="door_link", gtype="box")
FRAME_POST = GeomSel(body="doorlockB", gtype="box", index=0)
MODEL_EDITS = ModelEdits(
    # Fingers pull the handle (4 cylinders -> boxes); the panel stops at the frame post.
    pairs=pads_with(HANDLE, claws=True) + [(DOOR_PANEL, FRAME_POST)],
    cylinders_to_box=(HANDLE,),
)


def resolve_ids(ids):
    return {"door": ids.body("door"), "handle": ids.geom("handle")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    qpos, qvel = qpos.at[DOOR_QPOS].set(0.0), qvel.at[DOOR_QVEL].set(0.0)
    return qpos, qvel, body_pos.at[env.tids["door"]].set(rand_vec)


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec + common.f32(TARGET_OFFSET), "obj_init_pos": rand_vec}


def obj_obs(env, d):
    h = env.tids["handle"]
    return jnp.concatenate([d.geom_xpos[h], common.quat_from_matrix_xyzw(d.geom_xmat[h])])


def _reward_pos(obs, theta):
    hand, door = obs[:3], obs[4:7] + common.f32(HANDLE_TO_DOOR)
    radius = jnp.linalg.norm(hand[:2] - door[:2])
    floor = jnp.where(radius <= POS_THRESHOLD, 0.0,
                      0.04 * jnp.log(jnp.maximum(radius - POS_THRESHOLD, 1e-12)) + 0.4)
    above_floor = jnp.where(hand[2] >= floor, 1.0,
                            ru.tolerance(floor - hand[2], (0.0, 0.01), floor / 2.0, "long_tail"))
    in_place = ru.tolerance(jnp.linalg.norm(hand - door - common.f32(HAND_TO_DOOR)),
                            (0.0, POS_THRESHOLD / 2.0), 0.5, "long_tail")
    ready = ru.hamacher_product(above_floor, in_place)
    door_angle = -theta
    opened = 0.2 * (theta < -jnp.pi / 90.0) + 0.8 * ru.tolerance(
        jnp.pi / 2.0 + jnp.pi / 6 - door_angle, (0.0, 0.5), jnp.pi / 3.0, "long_tail")
    return ready, opened


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerDoorEnvV3."""
    theta = d.qpos[DOOR_QPOS]
    grab = (jnp.clip(action[3], -1, 1) + 1.0) / 2.0
    ready, opened = _reward_pos(obs, theta)
    r = 2.0 * ru.hamacher_product(ready, grab) + 8.0 * opened
    success = jnp.abs(obs[4] - tv["target_pos"][0]) <= SUCCESS_X
    return jnp.where(success, 10.0, r), success
