"""disassemble-v3 (metaworld/envs/sawyer_disassemble_peg_v3.py): grasp the wrench
(round nut with a handle) and lift it off the peg."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "disassemble-v3"
XML = "sawyer_xyz/sawyer_assembly_peg.xml"
HAND_INIT_POS = (0.0, 0.4, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, 0.05), (0.5, 1.0, 0.5)
OBJ_LOW, OBJ_HIGH = (0.0, 0.6, 0.025), (0.1, 0.75, 0.02501)
_GOAL_LOW, _GOAL_HIGH = (-0.1, 0.6, 0.1699), (0.1, 0.75, 0.1701)
RESET_LOW, RESET_HIGH = OBJ_LOW + _GOAL_LOW, OBJ_HIGH + _GOAL_HIGH
GOAL_LOW = (-0.1, 0.6, 0.1699 + 0.005)  # goal_space = goal range + (0, 0, 0.005)
GOAL_HIGH = (0.1, 0.75, 0.1701 + 0.005)
MIN_OBJ_GOAL_XY = 0.1  # reset_model resamples until |v[:2] - v[3:5]| >= 0.1
NUT_QPOS = slice(9, 12)
NUT_QVEL = slice(9, 15)
PEG_OFFSET = (0.0, 0.0, 0.03)  # peg body pos = obj_init_pos + this
TARGET_OFFSET = (0.0, 0.0, 0.15)
WRENCH_HANDLE_LENGTH = 0.02
HAND_RESET_SUBSTEPS = 50 * 5
IDEAL_QUAT = (0.707, 0.0, 0.0, 0.707)
# Solver iterations for the reset settle: how far the nut spins on the peg while it lands
# is solver sensitive (4/8: off by up to 0.11 in the quaternion; 20/20: exact natively).
SETTLE_SOLVER_ITERATIONS = 20
MT50_RESET_TABLE = True  # SawyerEnv keeps the reference's post-reset states of MT50

# The pads (and claws) pinch the wrench handle (box); the nut ring (8 capsules) rests on
# the table and slides up the peg (cylinder; capsule-cylinder is supported by MJX).
HANDLE = GeomSel(body="asmbly_peg", gtype="box")
RING = GeomSel(body="asmbly_peg", gtype="capsule")
PEG = GeomSel(body="peg", gtype="cylinder")
MODEL_EDITS = ModelEdits(
    pairs=p2.fingers_with(HANDLE) + [(RING, TABLE), (RING, PEG), (HANDLE, TABLE)])


def resolve_ids(ids):
    return {"peg": ids.body("peg"), "nut": ids.body("RoundNut"),
            "nut_center": ids.site("RoundNut"), "nut_obs": ids.site("RoundNut-8")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_OBJ_GOAL_XY)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    """The nut starts at its XML pose during the hand settle and lands on the peg that
    was already moved to this variation, so its orientation after reset depends on the
    variation: the settle is simulated (250 substeps, `part2_common.simulate_hand_reset`)
    instead of using the cached variation-0 state; then the nut is teleported."""
    body_pos = body_pos.at[env.tids["peg"]].set(rand_vec[:3] + common.f32(PEG_OFFSET))
    qpos, qvel = p2.simulate_hand_reset(env, body_pos, HAND_INIT_POS, HAND_RESET_SUBSTEPS,
                                        solver_iterations=SETTLE_SOLVER_ITERATIONS)
    qpos, qvel = qpos.at[NUT_QPOS].set(rand_vec[:3]), qvel.at[NUT_QVEL].set(0.0)
    # MT50 variations: the reference's own post-reset state (the simulated settle spins
    # the nut differently: up to 0.25 reset-obs error in MJX)
    qpos, qvel = p2.mt50_reset_lookup(env, rand_vec, qpos, qvel)
    return qpos, qvel, body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": rand_vec[:3] + common.f32(TARGET_OFFSET),
            "obj_init_pos": rand_vec[:3]}


def obj_obs(env, d):
    return jnp.concatenate([d.site_xpos[env.tids["nut_obs"]], d.xquat[env.tids["nut"]]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerNutDisassembleEnvV3."""
    hand, wrench, target = obs[:3], obs[4:7], tv["target_pos"]
    wrench_center = d.site_xpos[env.tids["nut_center"]]
    wrench_threshed = wrench.at[0].set(
        jnp.where(jnp.abs(wrench[0] - hand[0]) < WRENCH_HANDLE_LENGTH / 2.0, hand[0], wrench[0]))
    reward_quat = jnp.maximum(1.0 - jnp.linalg.norm(obs[7:11] - common.f32(IDEAL_QUAT)) / 0.4,
                              0.0)
    reward_grab = common.gripper_caging_reward(
        env, d, action, wrench_threshed, tv["obj_init_pos"], tv["init_tcp"],
        object_reach_radius=0.01, obj_radius=0.015, pad_success_thresh=0.02, xz_thresh=0.01,
        high_density=True)
    pos_error = target + jnp.array([0.0, 0.0, 0.1], jnp.float32) - wrench_center
    lifted = (wrench_center[2] > 0.02).astype(jnp.float32)
    in_place = 0.1 * lifted + 0.9 * ru.tolerance(jnp.linalg.norm(pos_error), (0.0, 0.02), 0.2,
                                                 "long_tail")
    r = (2.0 * reward_grab + 6.0 * in_place) * reward_quat
    success = obs[6] > target[2]
    return jnp.where(success, 10.0, r), success
