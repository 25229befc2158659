"""dial-turn-v3 (metaworld/envs/sawyer_dial_turn_v3.py): turn a dial (hinge about z)
by pushing its head sideways."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "dial-turn-v3"
XML = "sawyer_xyz/sawyer_dial.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.1, 0.73, 0.0299), (0.1, 0.83, 0.0301)
RESET_LOW, RESET_HIGH = (-0.1, 0.7, 0.0), (0.1, 0.8, 0.0)
TARGET_OFFSET = (0.0, 0.03, 0.03)  # target = dial pos + this
PUSH_OFFSET = (0.05, 0.02, 0.09)  # dial_push_position = obj pos + this
DIAL_RADIUS = 0.05
DIAL_QPOS = 9  # knob_Joint_1
TARGET_RADIUS = 0.07
DIAL_REACH_RADIUS = 0.005

# The fingers push the dial head (the box on the rotating, unnamed inner body); the
# base cylinder is never touched by the scripted policy.
DIAL_HEAD = GeomSel(body=p2.UNNAMED_BODY, gtype="box")
MODEL_EDITS = ModelEdits(pairs=p2.fingers_with(DIAL_HEAD))


def resolve_ids(ids):
    return {"dial": ids.body("dial")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos, qvel, body_pos.at[env.tids["dial"]].set(rand_vec)


def _obj_pos(env, d):
    a = d.qpos[DIAL_QPOS]
    offset = DIAL_RADIUS * jnp.stack([jnp.sin(a), -jnp.cos(a), jnp.zeros_like(a)])
    return d.xpos[env.tids["dial"]] + offset


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec + common.f32(TARGET_OFFSET), "obj_init_pos": rand_vec,
            "dial_push_position": _obj_pos(env, d) + common.f32(PUSH_OFFSET)}


def obj_obs(env, d):
    return jnp.concatenate([_obj_pos(env, d), d.xquat[env.tids["dial"]]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerDialTurnEnvV3 (uses the unclipped
    object position, like metaworld's `_get_pos_objects()` call)."""
    obj = _obj_pos(env, d)
    push_pos = obj + common.f32(PUSH_OFFSET)
    tcp, target = env.tcp_center(d), tv["target_pos"]
    target_to_obj = jnp.linalg.norm(obj - target)
    target_to_obj_init = jnp.linalg.norm(tv["dial_push_position"] - target)
    in_place = ru.tolerance(target_to_obj, (0.0, TARGET_RADIUS),
                            jnp.abs(target_to_obj_init - TARGET_RADIUS), "long_tail")
    tcp_to_obj = jnp.linalg.norm(push_pos - tcp)
    tcp_to_obj_init = jnp.linalg.norm(tv["dial_push_position"] - tv["init_tcp"])
    reach = ru.tolerance(tcp_to_obj, (0.0, DIAL_REACH_RADIUS),
                         jnp.abs(tcp_to_obj_init - DIAL_REACH_RADIUS), "gaussian")
    reach = ru.hamacher_product(reach, jnp.clip(action[-1], 0.0, 1.0))
    return 10.0 * ru.hamacher_product(reach, in_place), target_to_obj <= TARGET_RADIUS
