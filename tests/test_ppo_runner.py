"""PPO runner: checkpoint/resume, teacher export, PPOTeacher.action_mean, table."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.configs import teachers_ppo_cpu
from cpd_jax.teachers import ppo, ppo_runner, toy_envs
from tests.test_ppo import small_config


def runner_config(total_evals: int):
    config = teachers_ppo_cpu.get_config()
    config.ppo = small_config(total_evals)  # same compiled functions as test_ppo.py
    config.teachers.tasks = ("point-mass-east", "point-mass-north")
    config.teachers.evals_per_chunk = 2
    return config


def _params(workdir, task):
    t = ppo_runner.PPOTeacher.load(workdir, task)
    return t, jax.tree_util.tree_leaves(t.params)


def test_runner_exports_resumes_and_teacher_acts(tmp_path):
    quiet = lambda *a: None
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    table = ppo_runner.train_teachers(runner_config(4), full, log=quiet)
    assert "point-mass-east" in table and "point-mass-north" in table
    # "Killed" after the first chunk, then restarted with the full config.
    ppo_runner.train_teachers(runner_config(2), part, log=quiet)
    logs = []
    ppo_runner.train_teachers(runner_config(4), part, log=logs.append)
    assert any("resumed at eval period 2" in line for line in logs), logs
    for task in ("point-mass-east", "point-mass-north"):
        t_full, p_full = _params(full, task)
        _, p_part = _params(part, task)
        for a, b in zip(p_full, p_part):
            np.testing.assert_array_equal(a, b)
        meta = t_full.metadata
        assert meta["env_steps"] == 4 * 2 * 16 * 25 and meta["task"] == task
        curve = json.load(open(os.path.join(full, "teachers", task, "curve.json")))
        with open(os.path.join(part, "teachers", task, "curve.json")) as f:
            assert json.load(f) == curve
        assert len(curve["eval_success"]) == 4
        assert os.path.getsize(os.path.join(full, "teachers", task, "curve.png")) > 0
    # action_mean = tanh(mean(normalised obs)), float32[B, A], deterministic.
    teacher = ppo_runner.PPOTeacher.load(full, "point-mass-east")
    env = toy_envs.PointMass().with_task(jnp.asarray(toy_envs.TOY_TASKS["point-mass-east"]))
    obs = np.asarray(jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 5)).obs)
    act = teacher.action_mean(obs)
    assert act.shape == (5, 2) and act.dtype == np.float32
    assert np.all(np.abs(act) <= 1.0)
    fns = ppo.make_ppo(runner_config(4).ppo, toy_envs.PointMass())
    c = runner_config(4).ppo
    mean, _ = fns.policy_apply(teacher.params,
                               ppo.normalize_obs(teacher.obs_stats, jnp.asarray(obs), c.obs_clip))
    np.testing.assert_allclose(act, np.tanh(np.asarray(mean)), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(act, teacher.action_mean(obs))
    with open(os.path.join(full, "teachers", "success_table.md")) as f:
        assert f.read().startswith("| task | final success")
    # The host loop (teachers.rollout_loop="host"), stopped after one chunk and
    # resumed, ends where the scanned run ends.
    host = str(tmp_path / "host")
    for total_evals in (2, 4):
        config = runner_config(total_evals)
        config.teachers.rollout_loop = "host"
        ppo_runner.train_teachers(config, host, log=quiet)
    for task in ("point-mass-east", "point-mass-north"):
        for a, b in zip(_params(full, task)[1], _params(host, task)[1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unknown_rollout_loop_is_named(tmp_path):
    config = runner_config(2)
    config.teachers.rollout_loop = "hots"
    with pytest.raises(ValueError, match="hots"):
        ppo_runner.train_teachers(config, str(tmp_path), log=lambda *a: None)
