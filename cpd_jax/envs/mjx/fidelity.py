"""Eager fidelity checks of the MJX port against the `metaworld` package, with no MJX
step compiled: physics states recorded in the reference env (scripted policy) are run
through native `mj_forward` on our edited model and handed to the port's jnp obs and
reward code via `mjx.put_data`; resets run the task's reset eagerly. Used by
`tests/test_mjx_part2.py` and `benchmarks/mjx_exact_check.py`.
"""

import functools

import jax.numpy as jnp
import numpy as np

from cpd_jax.envs import reference, variations
from cpd_jax.envs.mjx import host_reset, sawyer


@functools.lru_cache(maxsize=None)
def get_env(task):
    return sawyer.SawyerEnv(task)


def eager_reset(env, rand_vec):
    """(obs float32[39], body_pos, task_vars) of `env.reset` with native mj_forward."""
    st = host_reset.host_reset_state(env, rand_vec)
    return st.obs, st.body_pos, st.task_vars


def eager_step_outputs(env, rec, body_pos, tv):
    """(clipped obs, reward, success) of our port at a recorded reference state."""
    d = host_reset.native_mjx_data(env, rec["qpos"], rec["qvel"], rec["mocap_pos"], body_pos)
    curr = env.curr_obs(d)
    obs = jnp.concatenate([curr, jnp.asarray(rec["prev"], jnp.float32), tv["target_pos"]])
    obs = jnp.clip(obs, env.obs_low, env.obs_high)
    r, s = env.task.reward(env, d, obs, jnp.asarray(rec["action"], jnp.float32), tv)
    return np.asarray(obs), float(r), bool(s)


def policy(task):
    from metaworld.policies import ENV_POLICY_MAP
    return ENV_POLICY_MAP[task]()


def record_reference(task, variation, steps):
    """Scripted policy in metaworld; physics + outputs at the steps in `steps`."""
    env = reference.make_metaworld_env(task)
    reference.set_variation(env, task, variation)
    obs, _ = env.reset()
    pol, recs = policy(task), []
    for t in range(max(steps) + 1):
        a = np.clip(pol.get_action(obs), -1, 1)
        prev = env._prev_obs.copy()
        obs, r, _, _, info = env.step(a)
        if t in steps:
            d = env.data
            recs.append(dict(t=t, qpos=d.qpos.copy(), qvel=d.qvel.copy(),
                             mocap_pos=d.mocap_pos.copy(), prev=prev, action=a,
                             obs=obs.copy(), reward=float(r), success=bool(info["success"])))
    return recs


def reward_port_errors(task, variations_=(0, 1), steps=range(0, 500, 5)):
    """(max obs err, max reward err, success mismatches, #recorded successes)."""
    env = get_env(task)
    steps = set(steps)
    obs_errs, r_errs, mism, n_succ = [0.0], [0.0], [], 0
    for v in variations_:
        _, body_pos, tv = eager_reset(env, variations.rand_vec(task, v))
        for rec in record_reference(task, v, steps):
            obs, r, s = eager_step_outputs(env, rec, body_pos, tv)
            obs_errs.append(float(np.abs(obs - rec["obs"]).max()))
            r_errs.append(abs(r - rec["reward"]))
            n_succ += rec["success"]
            if s != rec["success"]:
                mism.append((v, rec["t"], r, rec["reward"]))
    return max(obs_errs), max(r_errs), mism, n_succ


def reset_obs_error(task, variations_=range(5)):
    env = get_env(task)
    ref = reference.make_metaworld_env(task)
    errs = []
    for v in variations_:
        reference.set_variation(ref, task, v)
        ref_obs, _ = ref.reset()
        obs, _, _ = eager_reset(env, variations.rand_vec(task, v))
        errs.append(float(np.abs(np.asarray(obs) - ref_obs).max()))
    return max(errs)
