"""lever-pull-v3 (metaworld/envs/sawyer_lever_pull_v3.py): lift a lever (hinge about x)
to point straight up by pushing it from below."""

import jax.numpy as jnp
import numpy as np

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import HAND_PROXY, TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "lever-pull-v3"
XML = "sawyer_xyz/sawyer_lever_pull.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, -0.15), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH
RESET_LOW, RESET_HIGH = (-0.1, 0.7, 0.0), (0.1, 0.8, 0.0)
LEVER_RADIUS = 0.2
LEVER_QPOS = 9  # LeverAxis; the lever angle is -qpos
SHOULDER_SCALE = (4.0, 1.0, 4.0)
SHOULDER_OFFSET = (0.0, 0.055, 0.07)
SUCCESS_ANGLE_ERR = np.pi / 24

# The hand (right_hand mesh, margin 0) and the fingers push the handle sphere and the
# rod (cylinder #1 -> box) up from below; the fingers drag along the table on the way
# (HAND_LOW z = -0.15).
HANDLE = GeomSel(body="lever_link1", gtype="sphere")
ROD = GeomSel(body="lever_link1", gtype="cylinder", index=1)
# The hand mesh is replaced by the capsule stand-in HAND_PROXY (the mesh pair compiled out
# of memory; the lever touches the mesh's round side; capsule-sphere is cheap in MJX).
HAND = HAND_PROXY
MODEL_EDITS = ModelEdits(
    pairs=[(HAND, HANDLE), (HAND, ROD)] + p2.fingers_with(HANDLE, ROD, TABLE),
    cylinders_to_box=(ROD,),
    hand_proxy="capsule",
)


def resolve_ids(ids):
    return {"lever": ids.body("lever"), "lever_start": ids.site("leverStart"),
            "obj_geom": ids.geom("objGeom")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    return qpos, qvel, body_pos.at[env.tids["lever"]].set(rand_vec)


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec + jnp.array([0.12, 0.0, 0.25 + LEVER_RADIUS], jnp.float32),
            "lever_pos_init": rand_vec + jnp.array([0.12, -LEVER_RADIUS, 0.25], jnp.float32),
            "obj_init_pos": rand_vec}


def obj_obs(env, d):
    return jnp.concatenate([d.site_xpos[env.tids["lever_start"]],
                            common.quat_from_matrix_xyzw(d.geom_xmat[env.tids["obj_geom"]])])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerLeverPullEnvV3."""
    gripper, lever, target = obs[:3], obs[4:7], tv["target_pos"]
    scale, offset = common.f32(SHOULDER_SCALE), common.f32(SHOULDER_OFFSET)
    shoulder_to_lever = jnp.linalg.norm((gripper + offset - lever) * scale)
    shoulder_to_lever_init = jnp.linalg.norm((tv["init_tcp"] + offset - tv["lever_pos_init"]) * scale)
    ready_to_lift = ru.tolerance(shoulder_to_lever, (0.0, 0.02), shoulder_to_lever_init,
                                 "long_tail")
    lever_error = jnp.abs(-d.qpos[LEVER_QPOS] - np.pi / 2.0)
    obj_to_target = jnp.linalg.norm(lever - target)
    in_place_margin = jnp.linalg.norm(tv["lever_pos_init"] - target)
    in_place = ru.tolerance(obj_to_target, (0.0, 0.04), in_place_margin, "long_tail")
    return (10.0 * ru.hamacher_product(ready_to_lift, in_place),
            lever_error <= SUCCESS_ANGLE_ERR)
