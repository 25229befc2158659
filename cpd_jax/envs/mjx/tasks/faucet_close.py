"""faucet-close-v3 (metaworld/envs/sawyer_faucet_close_v3.py): swing the faucet handle
to the -x side. Same model, reward and contacts as `faucet_open` except the reset range,
the handle site, the target side and no offset on the object in the reward."""

from cpd_jax.envs.mjx.tasks import faucet_open as _fo
from cpd_jax.envs.mjx.tasks import common

NAME = "faucet-close-v3"
XML = _fo.XML
HAND_INIT_POS = _fo.HAND_INIT_POS
HAND_LOW, HAND_HIGH = _fo.HAND_LOW, _fo.HAND_HIGH
GOAL_LOW, GOAL_HIGH = _fo.GOAL_LOW, _fo.GOAL_HIGH
RESET_LOW, RESET_HIGH = (-0.1, 0.8, 0.0), (0.1, 0.85, 0.0)
TARGET_SIGN = -1.0
HANDLE_SITE = "handleStartClose"
REWARD_OBJ_OFFSET = (0.0, 0.0, 0.0)
MODEL_EDITS = _fo.MODEL_EDITS
reset_physics = _fo.reset_physics
obj_obs = _fo.obj_obs


def resolve_ids(ids):
    return _fo.resolve_ids(ids, HANDLE_SITE)


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_vars(env, d, rand_vec):
    return _fo.reset_vars(env, d, rand_vec, TARGET_SIGN)


def reward(env, d, obs, action, tv):
    return _fo.reward(env, d, obs, action, tv, REWARD_OBJ_OFFSET)
