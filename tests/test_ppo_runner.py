"""PPO runner: checkpoint/resume, teacher export, PPOTeacher.action_mean, table; a
teacher loads without the PPO training code."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax import checkpointing
from cpd_jax.errors import UserError
from cpd_jax.envs import toy_envs
from cpd_jax.rl.ppo import export, networks, normalizer, runner
from cpd_jax.rl.ppo import train as ppo
from cpd_jax.teachers import ppo_teacher
from tests.helpers import runner_config, small_ppo_config


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(workdir, task):
    t = ppo_teacher.PPOTeacher.load(workdir, task)
    return t, jax.tree_util.tree_leaves(t.params)


def test_runner_exports_resumes_and_teacher_acts(tmp_path):
    quiet = lambda *a: None
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    table = runner.train_teachers(runner_config(4), full, log=quiet)
    assert "point-mass-east" in table and "point-mass-north" in table
    # "Killed" after the first chunk, then restarted with the full config.
    runner.train_teachers(runner_config(2), part, log=quiet)
    logs = []
    runner.train_teachers(runner_config(4), part, log=logs.append)
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
    teacher = ppo_teacher.PPOTeacher.load(full, "point-mass-east")
    env = toy_envs.PointMass().with_task(jnp.asarray(toy_envs.TOY_TASKS["point-mass-east"]))
    obs = np.asarray(jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 5)).obs)
    act = teacher.action_mean(obs)
    assert act.shape == (5, 2) and act.dtype == np.float32
    assert np.all(np.abs(act) <= 1.0)
    fns = ppo.make_ppo(runner_config(4).ppo, toy_envs.PointMass())
    c = runner_config(4).ppo
    mean, _ = fns.policy_apply(
        teacher.params, normalizer.normalize_obs(teacher.obs_stats, jnp.asarray(obs), c.obs_clip))
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
        runner.train_teachers(config, host, log=quiet)
    for task in ("point-mass-east", "point-mass-north"):
        for a, b in zip(_params(full, task)[1], _params(host, task)[1]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unknown_rollout_loop_is_named(tmp_path):
    config = runner_config(2)
    config.teachers.rollout_loop = "hots"
    with pytest.raises(ValueError, match="hots"):
        runner.train_teachers(config, str(tmp_path), log=lambda *a: None)


_LOAD_TEACHER_SCRIPT = textwrap.dedent("""
    import sys
    import ml_collections
    import numpy as np
    from cpd_jax.teachers import make_teacher
    config = ml_collections.ConfigDict({"kind": "ppo", "checkpoint_dir": sys.argv[1]})
    teacher = make_teacher(config, "point-mass-east")
    obs = np.linspace(-1.0, 1.0, 3 * teacher.metadata["obs_size"], dtype=np.float32)
    np.save(sys.argv[2], teacher.action_mean(obs.reshape(3, -1)))
    training = [m for m in ("cpd_jax.rl.ppo.train", "cpd_jax.rl.ppo.runner")
                if m in sys.modules]
    print("TRAINING_MODULES", training)
""")


def test_teacher_loads_without_the_training_code(tmp_path):
    """make_teacher(kind="ppo") loads and applies a saved teacher in a fresh process
    that never imports the PPO training modules."""
    c = small_ppo_config()
    env = toy_envs.PointMass()
    params = networks.make_policy(c, env.action_size).init(
        jax.random.PRNGKey(0), jnp.zeros((env.observation_size,)))
    stats = normalizer.RunningStats(mean=jnp.full((env.observation_size,), 0.5),
                                    var=jnp.full((env.observation_size,), 4.0),
                                    count=jnp.asarray(10.0))
    export.save_teacher(
        str(tmp_path / "teachers" / "point-mass-east"), params, stats,
        {"task": "point-mass-east", "obs_size": env.observation_size,
         "action_size": env.action_size, "ppo_config": c.to_dict()})
    out = subprocess.run([sys.executable, "-c", _LOAD_TEACHER_SCRIPT, str(tmp_path),
                          str(tmp_path / "act.npy")], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
                         timeout=300)
    assert "TRAINING_MODULES []" in out.stdout, out.stdout + out.stderr
    obs = np.linspace(-1.0, 1.0, 3 * env.observation_size, dtype=np.float32).reshape(3, -1)
    mean, _ = ppo.make_ppo(c, env).policy_apply(
        params, normalizer.normalize_obs(stats, jnp.asarray(obs), c.obs_clip))
    np.testing.assert_allclose(np.load(tmp_path / "act.npy"), np.tanh(mean),
                               rtol=1e-6, atol=1e-6)


def test_unreadable_training_state_says_what_to_do(tmp_path):
    """A state dir of another format, or one without readable metadata (as the
    layout of earlier versions), is refused in one line that says to delete it."""
    c = small_ppo_config()
    like = ppo.make_ppo(c, toy_envs.PointMass()).init(
        jax.random.PRNGKey(0), jnp.asarray(toy_envs.TOY_TASKS["point-mass-east"]))
    other = tmp_path / "other"
    checkpointing.RunCheckpointer(other).save(1, {"x": np.ones(2)}, {"format": "not-ppo"})
    with pytest.raises(UserError, match=r"'not-ppo' is not .*delete it"):
        runner.restore_state(str(other), like)
    old = tmp_path / "old"
    runner.save_state(str(old), 2, like, {})
    for f in (old / "2" / checkpointing.METADATA_ITEM).rglob("*"):
        if f.is_file():
            f.unlink()
    with pytest.raises(UserError, match=f"^{old}: .*delete it to train this group"):
        runner.restore_state(str(old), like)
