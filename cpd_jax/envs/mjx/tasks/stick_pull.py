"""stick-pull-v3 (metaworld/envs/sawyer_stick_pull_v3.py): grasp a stick, hook it into
the thermos handle and pull the thermos (slide joints in x, y) to a goal."""

import jax.numpy as jnp

from cpd_jax.envs.mjx import reward_utils as ru
from cpd_jax.envs.mjx.model_edit import TABLE, GeomSel, ModelEdits
from cpd_jax.envs.mjx.tasks import common, part2_common as p2

NAME = "stick-pull-v3"
XML = "sawyer_xyz/sawyer_stick_obj.xml"
HAND_INIT_POS = (0.0, 0.6, 0.2)
HAND_LOW, HAND_HIGH = (-0.5, 0.35, 0.05), (0.5, 1.0, 0.5)
OBJ_LOW, OBJ_HIGH = (-0.1, 0.55, 0.000), (0.0, 0.65, 0.001)
GOAL_LOW, GOAL_HIGH = (0.35, 0.45, 0.0199), (0.45, 0.55, 0.0201)
RESET_LOW, RESET_HIGH = OBJ_LOW + GOAL_LOW, OBJ_HIGH + GOAL_HIGH
MIN_STICK_GOAL_XY = 0.1
STICK_Z = 0.02  # init_config stick_init_pos z: stick and target z
STICK_QPOS = slice(9, 12)
STICK_QVEL = slice(9, 15)
THERMOS_QPOS = slice(16, 18)  # obj_slidex, obj_slidey
THERMOS_INIT_QPOS = (0.0, 0.09)
THERMOS_QVEL_ZEROED = slice(16, 18)  # sic: metaworld zeroes qvel[16:18] (= dof 16 only)
TARGET_RADIUS = 0.05
HANDLE_SUCCESS_DIST = 0.12
CONTAINER_OFFSET = (0.05, 0.0, 0.0)
YZ_SCALING = (1.0, 1.0, 2.0)

# Pads and claws hold the stick (box); the stick rests on the table and hooks the
# thermos handle (its 3 boxes: bar, upper and lower connector). The fingers also touch
# all three handle boxes while pulling (reference contact survey: claw/pad x bar and
# upper connector in ~1/5 of the steps): with fingers x lower connector only, the
# scripted policy succeeded in 1 of 20 episodes on the edited model (native MuJoCo),
# with fingers x all three in 20 of 20 (reference 0.96). Both the stick and the thermos bodies are unnamed: among the
# unnamed bodies' collision boxes the stick's is #0 and the handle's are #1-#3.
STICK = GeomSel(name="objGeom")
HANDLE_BOXES = [GeomSel(body=p2.UNNAMED_BODY, gtype="box", index=i) for i in (1, 2, 3)]
MODEL_EDITS = ModelEdits(
    pairs=p2.fingers_with(STICK, *HANDLE_BOXES) + [(STICK, TABLE)]
    + [(STICK, h) for h in HANDLE_BOXES])


def resolve_ids(ids):
    return {"stick": ids.body("stick"), "object": ids.body("object"),
            "insertion": ids.site("insertion"), "stick_end": ids.site("stick_end"),
            "leftpad": ids.body("leftpad"), "rightpad": ids.body("rightpad")}


def sample_rand_vec(key):
    return common.uniform_with_min_dist(key, RESET_LOW, RESET_HIGH, MIN_STICK_GOAL_XY)


def _stick_init(rand_vec):
    return jnp.stack([rand_vec[0], rand_vec[1], jnp.asarray(STICK_Z, jnp.float32)])


def reset_physics(env, qpos, qvel, body_pos, rand_vec):
    qpos = qpos.at[STICK_QPOS].set(_stick_init(rand_vec))
    qvel = qvel.at[STICK_QVEL].set(0.0)
    qpos = qpos.at[THERMOS_QPOS].set(common.f32(THERMOS_INIT_QPOS))
    return qpos, qvel.at[THERMOS_QVEL_ZEROED].set(0.0), body_pos


def reset_vars(env, d, rand_vec):
    return {"target_pos": jnp.stack([rand_vec[3], rand_vec[4],
                                     jnp.asarray(STICK_Z, jnp.float32)]),
            "stick_init_pos": _stick_init(rand_vec),
            # get_body_com("object"): the fixed parent body of the sliding thermos
            "obj_init_pos": d.xpos[env.tids["object"]]}


def obj_obs(env, d):
    ti = env.tids
    return jnp.concatenate([d.xpos[ti["stick"]],
                            common.quat_from_matrix_xyzw(d.xmat[ti["stick"]]),
                            d.site_xpos[ti["insertion"]], jnp.zeros(4, jnp.float32)])


def _inserted(handle, end_of_stick):
    return ((end_of_stick[0] >= handle[0]) & (jnp.abs(end_of_stick[1] - handle[1]) <= 0.040)
            & (jnp.abs(end_of_stick[2] - handle[2]) <= 0.060))


def reward(env, d, obs, action, tv):
    """compute_reward (v2) + evaluate_state of SawyerStickPullEnvV3."""
    tcp, stick, handle = env.tcp_center(d), obs[4:7], obs[11:14]
    end_of_stick = d.site_xpos[env.tids["stick_end"]]
    offset = common.f32(CONTAINER_OFFSET)
    container = handle + offset
    container_init = tv["obj_init_pos"] + offset
    target, stick_init = tv["target_pos"], tv["stick_init_pos"]
    yz = common.f32(YZ_SCALING)
    tcp_to_stick = jnp.linalg.norm(stick - tcp)
    handle_to_target = jnp.linalg.norm(handle - target)
    stick_in_place = ru.tolerance(jnp.linalg.norm((stick - container) * yz),
                                  (0.0, TARGET_RADIUS),
                                  jnp.linalg.norm((stick_init - container_init) * yz),
                                  "long_tail")
    stick_in_place_2 = ru.tolerance(jnp.linalg.norm(stick - target), (0.0, TARGET_RADIUS),
                                    jnp.linalg.norm(stick_init - target), "long_tail")
    container_in_place = ru.tolerance(jnp.linalg.norm(container - target), (0.0, TARGET_RADIUS),
                                      jnp.linalg.norm(tv["obj_init_pos"] - target), "long_tail")
    grasped = common.gripper_caging_reward(
        env, d, action, stick, tv["obj_init_pos"], tv["init_tcp"], obj_radius=0.014,
        pad_success_thresh=0.05, object_reach_radius=0.01, xz_thresh=0.01, high_density=True)
    grasp_success = (tcp_to_stick < 0.02) & (obs[3] > 0) & (stick[2] - 0.01 > stick_init[2])
    grasped = jnp.where(grasp_success, 1.0, grasped)
    both = ru.hamacher_product(grasped, stick_in_place)
    inserted = _inserted(handle, end_of_stick)
    r_ins = jnp.where(handle_to_target <= HANDLE_SUCCESS_DIST, 10.0,
                      1.0 + both + 5.0 + 2.0 * stick_in_place_2 + 1.0 * container_in_place)
    r_grasp = jnp.where(inserted, r_ins, 1.0 + both + 5.0 * stick_in_place)
    r = jnp.where(grasp_success, r_grasp, both)
    return r, (handle_to_target <= HANDLE_SUCCESS_DIST) & inserted
