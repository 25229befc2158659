"""coffee-pull-v3 (metaworld/envs/sawyer_coffee_pull_v3.py): grasp the mug under the
coffee machine and pull it to a goal on the table."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "coffee-pull-v3"
XML = "sawyer_xyz/sawyer_coffee.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = (-0.1, 0.55, -0.001), (0.1, 0.65, 0.001)
OBJ_LOW, OBJ_HIGH = (-0.05, 0.7, -0.001), (0.05, 0.75, 0.001)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_OBJ_GOAL_XY = 0.15  # reset_model resamples until |mug_xy - goal_xy| >= 0.15
MACHINE_OFFSET = (0.0, 0.22, 0.0)  # machine pos = mug pos + this
MUG_QPOS = slice(0, 3)  # the mug's free joint comes first in this model
MUG_QVEL_ZEROED = slice(9, 15)  # sic: metaworld's _set_obj_xyz zeroes qvel[9:15]
TARGET_SCALE = (2.0, 2.0, 1.0)
SUCCESS_DIST = 0.07

# The fingers grasp the mug body (cylinder #0 -> box of the same half-extents) and
# can touch the table; the mug stands on the table.
MUG = GeomSel(body="mug", gtype="cylinder", index=0)
MODEL_EDITS = ModelEdits(pairs=p2.fingers_with(MUG, TABLE) + [(MUG, TABLE)],
                         cylinders_to_box=(MUG,))


def resolve_ids(ids):
    return {"machine": ids.body("coffee_machine"), "obj": ids.body("obj"),
            "mug_geom": ids.geom("mug")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    mug = rand_vec[:3]
    body_pos = body_pos.at[env.tids["machine"]].set(mug + common.f32(MACHINE_OFFSET))
    return qpos.at[MUG_QPOS].set(mug), qvel.at[MUG_QVEL_ZEROED].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec[3:6], "obj_init_pos": rand_vec[:3]}


def obj_obs(env, d):
    return jnp.concatenate([d.xpos[env.tids["obj"]],
                            common.quat_from_matrix_xyzw(d.geom_xmat[env.tids["mug_geom"]])])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerCoffeePullEnvV3."""
    obj, target, scale = obs[4:7], tv["target_pos"], common.f32(TARGET_SCALE)
    target_to_obj = jnp.linalg.norm((obj - target) * scale)
    target_to_obj_init = jnp.linalg.norm((tv["obj_init_pos"] - target) * scale)
    in_place = ru.tolerance(target_to_obj, (0.0, 0.05), target_to_obj_init, "long_tail")
    tcp_opened = obs[3]
    tcp_to_obj = jnp.linalg.norm(obj - env.tcp_center(d))
    grasped = common.gripper_caging_reward(
        env, d, action, obj, tv["obj_init_pos"], tv["init_tcp"], object_reach_radius=0.04,
        obj_radius=0.02, pad_success_thresh=0.05, xz_thresh=0.05,
        desired_gripper_effort=0.7, medium_density=True)
    r = ru.hamacher_product(grasped, in_place)
    r = jnp.where((tcp_to_obj < 0.04) & (tcp_opened > 0), r + 1.0 + 5.0 * in_place, r)
    r = jnp.where(target_to_obj < 0.05, 10.0, r)
    return r, jnp.linalg.norm(obj - target) <= SUCCESS_DIST
