"""faucet-open-v3 (metaworld/envs/sawyer_faucet_open_v3.py): swing the faucet handle
(hinge about z) to the +x side. `faucet_close` reuses this module's pieces."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "faucet-open-v3"
XML = "sawyer_xyz/sawyer_faucet.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, -0.15), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH
RESET_LOW, RESET_HIGH = (-0.05, 0.8, 0.0), (0.05, 0.85, 0.0)
HANDLE_LENGTH = 0.175
TARGET_SIGN = +1.0  # target = faucet pos + (sign * HANDLE_LENGTH, 0, 0.125)
TARGET_Z = 0.125
HANDLE_SITE = "handleStartOpen"
OBJ_SITE_OFFSET = (0.0, 0.0, -0.01)  # _get_pos_objects: site + this
REWARD_OBJ_OFFSET = (-0.04, 0.0, 0.03)  # compute_reward: obj = obs[4:7] + this
TARGET_RADIUS = 0.07
FAUCET_REACH_RADIUS = 0.01

# The fingers push the handle capsule and can scrape the table (the hand may go below
# the table top: HAND_LOW z = -0.15); the handle can hit the scene's retaining wall.
HANDLE = GeomSel(body="faucet_link2", gtype="capsule")
RETAINING_WALL = GeomSel(body="RetainingWall", gtype="box", index=1)
MODEL_EDITS = ModelEdits(pairs=p2.fingers_with(HANDLE, TABLE) + [(HANDLE, RETAINING_WALL)])


def resolve_ids(ids, handle_site=HANDLE_SITE):
    return {"faucet": ids.body("faucetBase"), "handle": ids.site(handle_site)}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos, qvel, body_pos.at[env.tids["faucet"]].set(rand_vec)


def reset_vars(env, d, rand_vec, sign=TARGET_SIGN):
    target = rand_vec + jnp.array([sign * HANDLE_LENGTH, 0.0, TARGET_Z], jnp.float32)
    return {"target_pos": target, "obj_init_pos": rand_vec}


def obj_obs(env, d):
    return jnp.concatenate([d.site_xpos[env.tids["handle"]] + common.f32(OBJ_SITE_OFFSET),
                            d.xquat[env.tids["faucet"]]])


def reward(env, d, obs, action, tv, obj_offset=REWARD_OBJ_OFFSET):
    """compute_reward (v2) + evaluate_state of SawyerFaucetOpenEnvV3 / CloseEnvV3."""
    obj = obs[4:7] + common.f32(obj_offset)
    tcp, target = env.tcp_center(d), tv["target_pos"]
    target_to_obj = jnp.linalg.norm(obj - target)
    target_to_obj_init = jnp.linalg.norm(tv["obj_init_pos"] - target)
    in_place = ru.tolerance(target_to_obj, (0.0, TARGET_RADIUS),
                            jnp.abs(target_to_obj_init - TARGET_RADIUS), "long_tail")
    tcp_to_obj = jnp.linalg.norm(obj - tcp)
    tcp_to_obj_init = jnp.linalg.norm(tv["obj_init_pos"] - tv["init_tcp"])
    reach = ru.tolerance(tcp_to_obj, (0.0, FAUCET_REACH_RADIUS),
                         jnp.abs(tcp_to_obj_init - FAUCET_REACH_RADIUS), "gaussian")
    success = target_to_obj <= TARGET_RADIUS
    r = jnp.where(success, 10.0, 2.0 * (2.0 * reach + 3.0 * in_place))
    return r, success
