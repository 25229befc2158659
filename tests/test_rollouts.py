"""Rollouts: collection through the env API and a lossless disk round trip."""

import json

import numpy as np
import pytest

from cpd_jax.data import rollouts
from cpd_jax.envs import make_env
from cpd_jax.teachers.scripted import ScriptedTeacher


@pytest.fixture(scope="module")
def drawer_rollouts():
    env = make_env("reference", ["drawer-close-v3"] * 2)
    return rollouts.collect(env, ScriptedTeacher("drawer-close-v3"), [0, 5],
                            noise_std=0.1, seed=3, num_steps=120)


def test_collected_shapes_and_labels(drawer_rollouts):
    t = drawer_rollouts
    assert t.obs.shape == (2, 120, 39) and t.actions.shape == (2, 120, 4)
    assert t.rewards.shape == t.success.shape == (2, 120)
    np.testing.assert_array_equal(t.lengths, [120, 120])
    np.testing.assert_array_equal(t.variations, [0, 5])
    # labels are the teacher's clean means at the stored observations
    np.testing.assert_allclose(ScriptedTeacher("drawer-close-v3").action_mean(t.obs[0]),
                               t.actions[0], atol=1e-6)
    assert t.task_id == 5


def test_round_trip_through_disk_is_exact(tmp_path, drawer_rollouts):
    rollouts.save(tmp_path, drawer_rollouts, {"teacher": "scripted"})
    back = rollouts.load(tmp_path, "drawer-close-v3")
    for name in ("obs", "actions", "rewards", "success", "lengths", "variations"):
        a, b = getattr(drawer_rollouts, name), getattr(back, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    meta = json.loads((tmp_path / "drawer-close-v3.json").read_text())
    assert meta["format"] == rollouts.FORMAT and meta["teacher"] == "scripted"


def test_load_names_missing_task_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="reach-v3"):
        rollouts.load(tmp_path, "reach-v3")


def test_teacher_of_another_task_is_refused():
    env = make_env("reference", ["reach-v3"])
    with pytest.raises(ValueError, match="drawer-close-v3"):
        rollouts.collect(env, ScriptedTeacher("drawer-close-v3"), [0], num_steps=1)
