"""MJX port of the 15 MT25 tasks outside MT10 vs the `metaworld` package.

Reward / success / obs ports are checked on physics states recorded in the reference
env *without compiling MJX*: the recorded qpos/qvel/mocap are run through native
`mj_forward` on our edited model and handed to the (pure jnp) obs and reward code via
`mjx.put_data`, so only `mj_forward` itself (MuJoCo's job, tested upstream) is not
MJX's. Reset obs is checked the same way (the task's `reset_physics` / `reset_vars`
run eagerly). The closed-loop scripted-policy check compiles the full batched step and
is `slow` except for one cheap task.
"""

import os

import numpy as np
import pytest

CACHE = os.environ.get("CPD_JAX_CACHE", os.path.expanduser("~/.cache/cpd_jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax_cc"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cpd_jax.envs import variations  # noqa: E402
from cpd_jax.envs.mjx import host_reset  # noqa: E402
from cpd_jax.envs.mjx.fidelity import (get_env, reset_obs_error,  # noqa: E402
                                       reward_port_errors)
from cpd_jax.envs.mjx.tasks import registry  # noqa: E402
from cpd_jax.teachers import scripted  # noqa: E402

PART2_TASKS = (
    "button-press-wall-v3", "button-press-topdown-wall-v3", "coffee-button-v3",
    "dial-turn-v3", "faucet-open-v3", "faucet-close-v3", "door-lock-v3", "lever-pull-v3",
    "coffee-pull-v3", "sweep-into-v3", "pick-out-of-hole-v3", "pick-place-wall-v3",
    "basketball-v3", "stick-pull-v3", "disassemble-v3",
)
PORTED = tuple(t for t in PART2_TASKS if t in registry.ported_tasks())
# Default run: the eager (no MJX compile) reward/reset checks on a few tasks covering
# each kind of port (button, fixture moved per episode, hinge, grasp + caging reward);
# everything else, and every closed-loop check (each compiles a full MJX step), runs
# with `-m slow`.
QUICK_TASKS = ("button-press-wall-v3", "dial-turn-v3", "faucet-open-v3", "coffee-pull-v3")
# door-lock's / disassemble's reset simulates the hand settle in MJX (one scan compile)
# even in the eager path (the MT50 table lookup then replaces its result)
NEEDS_MJX_RESET = ("door-lock-v3", "disassemble-v3")
# Known reset-obs gaps, {task: reason} (xfail).
KNOWN_RESET_GAPS: dict[str, str] = {}
REWARD_TOL = 1e-4
RESET_OBS_TOL = 1e-3
SUCCESS_SLACK = 0.10


# ---- closed loop ---------------------------------------------------------------------
def scripted_success(task, n_episodes):
    """Fraction of variations 0..n-1 the scripted policy solves in MJX (closed loop)."""
    env = get_env(task)
    step = jax.jit(jax.vmap(env.step))
    rvs = np.stack([variations.rand_vec(task, v) for v in range(n_episodes)])
    st = host_reset.host_reset_states(env, rvs)
    states = [st]

    def env_step(actions):
        states[0] = step(states[0], jnp.asarray(actions))
        return np.asarray(states[0].obs), np.asarray(states[0].info["success"]) > 0

    ever = scripted.closed_loop_success(task, np.asarray(st.obs), env_step)
    return float(ever.mean())


# ---- tests --------------------------------------------------------------------------
def _params(quick):
    return [t for t in quick if t in PORTED and t not in NEEDS_MJX_RESET] + [
        pytest.param(t, marks=pytest.mark.slow) for t in PORTED
        if t not in quick or t in NEEDS_MJX_RESET]


@pytest.mark.parametrize("task", _params(QUICK_TASKS))
def test_reward_port_exact(task):
    obs_err, r_err, mism, n_succ = reward_port_errors(task)
    assert obs_err < REWARD_TOL, f"obs from physics max err {obs_err}"
    assert r_err < REWARD_TOL, f"reward max err {r_err}"
    assert not mism, f"success differs at {mism[:5]}"
    assert n_succ > 0, "no recorded state was a success: the check is vacuous"


def _reset_params(quick):
    return [p if not (getattr(p, "values", (p,))[0] in KNOWN_RESET_GAPS) else pytest.param(
        p.values[0], marks=list(p.marks) + [pytest.mark.xfail(
            reason=KNOWN_RESET_GAPS[p.values[0]], strict=False)]) for p in _params(quick)]


@pytest.mark.parametrize("task", _reset_params(QUICK_TASKS))
def test_reset_obs_matches_reference(task):
    err = reset_obs_error(task)
    assert err < RESET_OBS_TOL, f"reset obs err {err}"


@pytest.mark.parametrize("task", PORTED)
def test_model_edits_compile_for_mjx(task):
    """The edited model is accepted by mjx.put_model (no unsupported geom pair)."""
    env = get_env(task)
    assert env.mj_model.npair > 0
    assert env.mx is not None


@pytest.mark.parametrize("task,n", [pytest.param(t, 20, marks=pytest.mark.slow) for t in PORTED])
def test_scripted_policy_success(task, n, scripted_reference):
    ref = scripted_reference[task]
    got = scripted_success(task, n)
    print(f"{task}: scripted success MJX {got:.2f} vs reference {ref:.2f} ({n} episodes)")
    assert got >= ref - SUCCESS_SLACK


def test_mt50_reset_lookup():
    """An MT50 rand_vec selects the table's post-reset state; any other one keeps the
    simulated state."""
    import types

    from cpd_jax.envs.mjx.tasks import part2_common as p2

    rvs = jnp.asarray([[0.0, 0.6, 0.02], [0.1, 0.7, 0.02]], jnp.float32)
    tab = {"rand_vec": rvs, "qpos": jnp.asarray([[1.0, 1.0], [2.0, 2.0]]),
           "qvel": jnp.asarray([[10.0], [20.0]])}
    env = types.SimpleNamespace(mt50_resets=tab)
    sim_qpos, sim_qvel = jnp.asarray([-1.0, -1.0]), jnp.asarray([-10.0])
    qpos, qvel = p2.mt50_reset_lookup(env, rvs[1], sim_qpos, sim_qvel)
    assert qpos.tolist() == [2.0, 2.0] and qvel.tolist() == [20.0]
    qpos, qvel = p2.mt50_reset_lookup(env, rvs[1] + 1e-3, sim_qpos, sim_qvel)
    assert qpos.tolist() == [-1.0, -1.0] and qvel.tolist() == [-10.0]
