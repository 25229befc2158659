"""The Sawyer base env as pure functions: `reset(key, rand_vec) -> State`,
`step(State, action) -> State`, matching `metaworld.sawyer_xyz_env.SawyerXYZEnv`.

What is reproduced (see BUILD_NOTES.md, appendix A, for what is not):
* mocap position control: mocap += clip(action[:3], -1, 1) * ACTION_SCALE, clipped to
  the task's mocap box; mocap quat fixed to (1, 0, 1, 0); gripper ctrl [a, -a];
* FRAME_SKIP physics substeps (a `lax.scan`, so the step is compiled once);
* the 39-d obs: hand xyz, normalised finger distance, object pos+quat padded to 14,
  the previous step's unclipped 18 current values, the goal; clipped to the
  observation space like `SawyerXYZEnv.step` (not at reset, like metaworld);
* 500-step truncation, reward and `success` from the task module.

Meta-World's reset (two `reset_model` calls, each with a 250-substep hand reset) does
not depend on the task variation for the joints the hand reset moves, so it is
simulated once per task on the host with native MuJoCo (the metaworld env itself,
`reset_cache.hand_reset_state`) and only the variation-dependent part (object qpos,
fixture body positions, goal) is applied inside `jit`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from cpd_jax.envs.mjx import model_edit, reset_cache
from cpd_jax.envs.mjx.tasks import registry
from cpd_jax.envs.tasks import MAX_EPISODE_STEPS, OBS_DIM

FRAME_SKIP = 5  # SawyerXYZEnv default
ACTION_SCALE = 1.0 / 100  # SawyerXYZEnv default
MOCAP_QUAT = np.array([1.0, 0.0, 1.0, 0.0])  # set_xyz_action fixes the mocap orientation
GRIPPER_NORM = 0.1  # fingers are at most ~0.1 m apart; obs[3] = dist / 0.1 clipped to [0, 1]
CURR_OBS_DIM = 18  # hand 3 + gripper 1 + objects 14
OBJ_OBS_DIM = 14  # two (pos, quat) slots
# SawyerXYZEnv._HAND_SPACE: bounds of the hand position in the observation space.
HAND_SPACE_LOW = np.array([-0.525, 0.348, -0.0525])
HAND_SPACE_HIGH = np.array([0.525, 1.025, 0.7])


@struct.dataclass
class State:
    """One env. Batched states carry a leading [B] axis on every leaf.

    data: the mjx.Data after the last step; body_pos: float32[nbody, 3] this env's
    body positions (fixtures moved by reset); obs: float32[39] (clipped); curr_obs:
    float32[18] this step's unclipped current frame (becomes the previous-frame half of
    the next obs); reward: float32[]; done, truncated: bool[] (done == truncated:
    Meta-World never terminates); step_count: int32[]; task_vars: dict of per-episode
    constants (goal, initial object position, ...); info: dict with success float32[];
    rng: PRNG key for the next auto-reset.
    """

    data: mjx.Data
    body_pos: jax.Array
    obs: jax.Array
    curr_obs: jax.Array
    reward: jax.Array
    done: jax.Array
    truncated: jax.Array
    step_count: jax.Array
    task_vars: dict
    info: dict
    rng: jax.Array


class Ids:
    """Static MuJoCo ids (python ints) that obs and rewards index with."""

    def __init__(self, m: mujoco.MjModel):
        self.m = m

    def body(self, name: str) -> int:
        i = mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_BODY, name)
        if i < 0:
            raise KeyError(f"no body {name!r}")
        return i

    def site(self, name: str) -> int:
        i = mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_SITE, name)
        if i < 0:
            raise KeyError(f"no site {name!r}")
        return i

    def geom(self, name: str) -> int:
        i = mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_GEOM, name)
        if i < 0:
            raise KeyError(f"no geom {name!r}")
        return i


class SawyerEnv:
    """A Meta-World v3 task on MJX. Build on the host (model edits, reset cache, ids);
    `reset` / `step` are pure and jit/vmap-able."""

    def __init__(self, task_name: str, edits_override: dict | None = None):
        self.name = task_name
        self.task = registry.get_task(task_name)
        edits = self.task.MODEL_EDITS
        if edits_override:
            import dataclasses
            edits = dataclasses.replace(edits, **edits_override)
        self.mj_model = model_edit.build_model(self.task.XML, edits)
        self.mx = mjx.put_model(self.mj_model)
        self.ids = Ids(self.mj_model)
        t = self.task
        self.hand_init_pos = np.asarray(t.HAND_INIT_POS, np.float64)
        self.mocap_low = np.asarray(getattr(t, "MOCAP_LOW", t.HAND_LOW), np.float64)
        self.mocap_high = np.asarray(getattr(t, "MOCAP_HIGH", t.HAND_HIGH), np.float64)
        self.obs_low = np.concatenate([HAND_SPACE_LOW, [-1.0], np.full(OBJ_OBS_DIM, -np.inf),
                                       HAND_SPACE_LOW, [-1.0], np.full(OBJ_OBS_DIM, -np.inf),
                                       t.GOAL_LOW]).astype(np.float32)
        self.obs_high = np.concatenate([HAND_SPACE_HIGH, [1.0], np.full(OBJ_OBS_DIM, np.inf),
                                        HAND_SPACE_HIGH, [1.0], np.full(OBJ_OBS_DIM, np.inf),
                                        t.GOAL_HIGH]).astype(np.float32)
        self.hand_id = self.ids.body("hand")
        self.rclaw_id, self.lclaw_id = self.ids.body("rightclaw"), self.ids.body("leftclaw")
        self.ree_id = self.ids.site("rightEndEffector")
        self.lee_id = self.ids.site("leftEndEffector")
        self.tids = t.resolve_ids(self.ids)  # task-specific ids
        cache = reset_cache.hand_reset_state(task_name)
        self.init_tcp = cache["init_tcp"]
        d0 = mjx.make_data(self.mx)
        self._data0 = d0.replace(
            qpos=jnp.asarray(cache["qpos"], jnp.float32),
            qvel=jnp.asarray(cache["qvel"], jnp.float32),
            mocap_pos=jnp.asarray(cache["mocap_pos"], jnp.float32),
            mocap_quat=jnp.asarray(cache["mocap_quat"], jnp.float32),
            ctrl=jnp.asarray(cache["ctrl"], jnp.float32))
        self._body_pos0 = jnp.asarray(self.mj_model.body_pos, jnp.float32)
        # Tasks with a variation-dependent hand settle: the reference's own post-reset
        # states of the 50 MT50 variations (see reset_cache.mt50_reset_states).
        self.mt50_resets = None
        if getattr(t, "MT50_RESET_TABLE", False):
            self.mt50_resets = {k: jnp.asarray(v, jnp.float32)
                                for k, v in reset_cache.mt50_reset_states(task_name).items()}

    # ---- observation ---------------------------------------------------------------
    def tcp_center(self, d: mjx.Data) -> jax.Array:
        """float32[3]: midpoint of the two finger end-effector sites."""
        return 0.5 * (d.site_xpos[self.ree_id] + d.site_xpos[self.lee_id])

    def curr_obs(self, d: mjx.Data) -> jax.Array:
        """float32[18]: hand xyz, gripper opening in [0, 1], objects' pos+quat padded."""
        hand = d.xpos[self.hand_id]
        gap = jnp.linalg.norm(d.xpos[self.rclaw_id] - d.xpos[self.lclaw_id])
        gripper = jnp.clip(gap / GRIPPER_NORM, 0.0, 1.0)
        objs = self.task.obj_obs(self, d)
        objs = jnp.pad(objs, (0, OBJ_OBS_DIM - objs.shape[0]))
        return jnp.concatenate([hand, gripper[None], objs]).astype(jnp.float32)

    # ---- reset ---------------------------------------------------------------------
    def sample_rand_vec(self, key: jax.Array) -> jax.Array:
        """float32[d]: a training variation from the task's `_random_reset_space`
        (with the task's rejection rule, e.g. object-goal xy distance >= 0.15)."""
        return self.task.sample_rand_vec(key)

    def reset(self, key: jax.Array, rand_vec: jax.Array) -> State:
        """State at the start of an episode of the variation `rand_vec` (float[d])."""
        rand_vec = jnp.asarray(rand_vec, jnp.float32)
        d = self._data0
        qpos, qvel, body_pos = self.task.reset_physics(self, d.qpos, d.qvel,
                                                        self._body_pos0, rand_vec)
        m = self.mx.replace(body_pos=body_pos)
        d = mjx.forward(m, d.replace(qpos=qpos, qvel=qvel))
        task_vars = self.task.reset_vars(self, d, rand_vec)
        task_vars["init_tcp"] = jnp.asarray(self.init_tcp, jnp.float32)
        curr = self.curr_obs(d)
        obs = jnp.concatenate([curr, curr, task_vars["target_pos"]])  # reset obs: unclipped
        if hasattr(self.task, "post_reset"):  # qpos edits metaworld makes after its last forward
            d = self.task.post_reset(self, d, rand_vec)
        zero = jnp.zeros((), jnp.float32)
        return State(data=d, body_pos=body_pos, obs=obs, curr_obs=curr, reward=zero,
                     done=jnp.zeros((), bool), truncated=jnp.zeros((), bool),
                     step_count=jnp.zeros((), jnp.int32), task_vars=task_vars,
                     info={"success": zero}, rng=key)

    def reset_random(self, key: jax.Array) -> State:
        """Reset to a freshly sampled training variation."""
        k1, k2 = jax.random.split(key)
        return self.reset(k2, self.sample_rand_vec(k1))

    # ---- step ----------------------------------------------------------------------
    def physics_step(self, m: mjx.Model, d: mjx.Data, action: jax.Array) -> mjx.Data:
        """Applies action float32[4] and runs FRAME_SKIP substeps, then kinematics so
        positions match `mj_forward` (metaworld calls it before reading the obs)."""
        delta = jnp.clip(action[:3], -1.0, 1.0) * ACTION_SCALE
        mocap = jnp.clip(d.mocap_pos[0] + delta, self.mocap_low, self.mocap_high)
        d = d.replace(mocap_pos=d.mocap_pos.at[0].set(mocap),
                      mocap_quat=d.mocap_quat.at[0].set(jnp.asarray(MOCAP_QUAT, d.mocap_quat.dtype)),
                      ctrl=jnp.stack([action[3], -action[3]]).astype(d.ctrl.dtype))
        d, _ = jax.lax.scan(lambda dd, _: (mjx.step(m, dd), None), d, None, length=FRAME_SKIP)
        if getattr(self.task, "NEEDS_CONTACT_FORCES", False):
            return mjx.forward(m, d)
        return mjx.kinematics(m, d)

    def step(self, state: State, action: jax.Array) -> State:
        """One env step with action float32[4]. Does not auto-reset (see wrappers)."""
        action = jnp.asarray(action, jnp.float32)
        m = self.mx.replace(body_pos=state.body_pos)
        d = self.physics_step(m, state.data, action)
        curr = self.curr_obs(d)
        obs = jnp.concatenate([curr, state.curr_obs, state.task_vars["target_pos"]])
        obs = jnp.clip(obs, self.obs_low, self.obs_high)
        reward, success = self.task.reward(self, d, obs, action, state.task_vars)
        step_count = state.step_count + 1
        truncated = step_count >= MAX_EPISODE_STEPS
        return state.replace(data=d, obs=obs, curr_obs=curr,
                             reward=jnp.asarray(reward, jnp.float32), done=truncated,
                             truncated=truncated, step_count=step_count,
                             info={**state.info, "success": jnp.asarray(success, jnp.float32)})

    # ---- helpers for tests: physics state -> obs/reward without stepping ------------
    def state_from_physics(self, qpos, qvel, mocap_pos, body_pos, task_vars,
                           prev_curr=None) -> tuple[mjx.Data, jax.Array]:
        """(data after mj_forward, clipped obs float32[39]) for a recorded physics state."""
        m = self.mx.replace(body_pos=jnp.asarray(body_pos, jnp.float32))
        d = self._data0.replace(qpos=jnp.asarray(qpos, jnp.float32),
                                qvel=jnp.asarray(qvel, jnp.float32),
                                mocap_pos=jnp.asarray(mocap_pos, jnp.float32))
        d = mjx.forward(m, d)
        curr = self.curr_obs(d)
        prev = curr if prev_curr is None else jnp.asarray(prev_curr, jnp.float32)
        obs = jnp.concatenate([curr, prev, task_vars["target_pos"]])
        return d, jnp.clip(obs, self.obs_low, self.obs_high)


def make_env(task_name: str, **kwargs: Any) -> SawyerEnv:
    return SawyerEnv(task_name, **kwargs)
