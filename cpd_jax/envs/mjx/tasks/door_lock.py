"""door-lock-v3 (metaworld/envs/sawyer_door_lock_v3.py): turn the lock lever on a safe
door down (hinge about y).

Reset is not the base's cached hand reset: with the door in some places (e.g.
variation 0) the fingers hit the lock while the hand settles, so the post-reset lock
angle and arm state depend on the variation (`scratch` survey: 16 of the 50 MT50
variations). `reset_physics` therefore re-simulates Meta-World's second
`reset_model` in MJX: from `mj_resetData` (qpos0), 50 x 5 substeps holding the mocap at
HAND_INIT_POS with gripper ctrl (-1, 1), then the 5 extra `mj_step`s door-lock's
`reset_model` does after moving the door. That is 255 substeps per reset (about 51
env steps; ~10% on a 500-step episode).
"""

import jax
import jax.numpy as jnp
from mujoco import mjx

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import HAND_PROXY, TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "door-lock-v3"
XML = "sawyer_xyz/sawyer_door_lock.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.40, -0.15), (0.5, 1.0, 0.5)
GOAL_LOW, GOAL_HIGH = HAND_LOW, HAND_HIGH
RESET_LOW, RESET_HIGH = (-0.1, 0.8, 0.15), (0.1, 0.85, 0.15)
TARGET_OFFSET = (0.0, -0.04, -0.1)  # target = lock_link pos after reset + this
LOCK_LENGTH = 0.1
TCP_SCALE = (0.25, 1.0, 0.5)
SUCCESS_DIST = 0.02
HAND_RESET_SUBSTEPS = 50 * 5  # SawyerXYZEnv._reset_hand: 50 x frame_skip
EXTRA_SUBSTEPS = 5  # door-lock's reset_model: frame_skip x mj_step after moving the door
MT50_RESET_TABLE = True  # SawyerEnv keeps the reference's post-reset states of MT50

# The fingers (and the hand) push the lock lever (lock_link box) down; they also touch
# the lock's base block (door_link box #0) and the table (HAND_LOW z = -0.15).
LOCK = GeomSel(body="lock_link", gtype="box")
LOCK_BASE = GeomSel(body="door_link", gtype="box", index=0)
# The hand mesh pushes the lock with its end: the capsule stand-in HAND_PROXY replaces it
# (mesh pairs are too costly for MJX, `model_edit.HAND_PROXY`; a box stand-in's native box-box
# contacts do not fit MJX's 4 per pair in `mjx.put_data`).
HAND = HAND_PROXY
MODEL_EDITS = ModelEdits(pairs=[(HAND, LOCK)] + p2.fingers_with(LOCK, LOCK_BASE, TABLE),
                         hand_proxy="capsule")


def resolve_ids(ids):
    return {"door": ids.body("door"), "door_link": ids.body("door_link"),
            "lock_link": ids.body("lock_link"), "lock_start": ids.site("lockStartLock"),
            "leftpad": ids.body("leftpad")}


def sample_rand_vec(key):
    return common.uniform(key, RESET_LOW, RESET_HIGH)


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    body_pos = body_pos.at[env.tids["door"]].set(rand_vec)
    m = env.mx.replace(body_pos=body_pos)
    # The episode model runs without Euler damping (base ModelEdits), but from qpos0 the
    # arm then barely moves in 255 substeps; Meta-World's reset (implicit damping) gets
    # the hand to the mocap. The settle therefore runs with Euler damping on.
    m = m.replace(opt=m.opt.replace(
        disableflags=m.opt.disableflags & ~mjx.DisableBit.EULERDAMP))
    d0 = env._data0
    d = mjx.make_data(m).replace(
        qpos=jnp.asarray(env.mj_model.qpos0, d0.qpos.dtype),
        mocap_pos=d0.mocap_pos.at[0].set(common.f32(HAND_INIT_POS)),
        mocap_quat=d0.mocap_quat, ctrl=jnp.array([-1.0, 1.0], d0.ctrl.dtype))
    d, _ = jax.lax.scan(lambda dd, _: (mjx.step(m, dd), None), d, None,
                        length=HAND_RESET_SUBSTEPS + EXTRA_SUBSTEPS)
    # MT50 variations: the reference's own post-reset state (exact); others: simulated
    qpos, qvel = p2.mt50_reset_lookup(env, rand_vec, d.qpos, d.qvel)
    return qpos, qvel, body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": d.xpos[env.tids["lock_link"]] + common.f32(TARGET_OFFSET),
            "obj_init_pos": rand_vec}


def obj_obs(env, d):
    return jnp.concatenate([d.site_xpos[env.tids["lock_start"]],
                            d.xquat[env.tids["door_link"]]])


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerDoorLockEnvV3. metaworld's
    `init_left_pad` is a live view of the left pad's xpos, so the 'initial' distance
    is the current one."""
    obj, scale = obs[4:7], common.f32(TCP_SCALE)
    tcp = d.xpos[env.tids["leftpad"]]
    tcp_to_obj = jnp.linalg.norm((obj - tcp) * scale)
    obj_to_target = jnp.abs(tv["target_pos"][2] - obj[2])
    near_lock = ru.tolerance(tcp_to_obj, (0.0, 0.01), tcp_to_obj, "long_tail")
    lock_pressed = ru.tolerance(obj_to_target, (0.0, 0.005), LOCK_LENGTH, "long_tail")
    r = 2.0 * ru.hamacher_product(jnp.maximum(obs[3], 0.0), near_lock) + 8.0 * lock_pressed
    return r, obj_to_target <= SUCCESS_DIST
