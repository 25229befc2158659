"""Shipped configs and evaluation goals: every shipped config derives from
`default.get_config()` and passes the CLI's checks; held-out goals are disjoint from
training goals for every shipped config, an overlapping config is refused by name, and
the held-out goals are the ones `metaworld.MT50(seed=1)` draws."""

import importlib
import pathlib
import pickle

import numpy as np
import pytest

from cpd_jax import config_checks, parallel, pipeline
from cpd_jax.data import collection
from cpd_jax.configs import default, mt25_5stage_cpu
from cpd_jax.envs import MT25_TASKS
from cpd_jax.envs import variations as variations_lib
from cpd_jax.errors import UserError
from cpd_jax.evaluation import protocol

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "cpd_jax" / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def _load(name):
    return importlib.import_module(f"cpd_jax.configs.{name}").get_config()


def _field_names(config, prefix=""):
    """Dotted names of every leaf field of a ConfigDict."""
    names = set()
    for key, value in config.items():
        if hasattr(value, "items"):
            names |= _field_names(value, f"{prefix}{key}.")
        else:
            names.add(prefix + key)
    return names


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_shipped_config_derives_from_default_and_passes_checks(name):
    config = _load(name)
    missing = _field_names(default.get_config()) - _field_names(config)
    assert not missing, f"{name} lacks default.py fields {sorted(missing)}"
    config_checks.check_config(config)
    assert parallel.maybe_initialize_distributed(config) is False  # single host by default


def test_config_not_built_on_default_is_refused_by_field():
    config = default.get_config()
    del config.student
    with pytest.raises(UserError, match="no field student.dim.*default.py"):
        config_checks.check_config(config)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_shipped_config_evaluates_on_goals_it_never_trains_on(name):
    config = _load(name)
    if config.protocol == "teachers":
        pytest.skip("RL teachers train and are evaluated on the 50 training goals "
                    "(Meta-World+); their inherited student blocks are not read")
    assert config.eval.protocol == "heldout"
    train = set(protocol.train_variations(config.data, config.data.episodes_per_task))
    evals = protocol.eval_variations(config)
    assert train.isdisjoint(evals)
    assert max(train) < variations_lib.FIRST_HELDOUT <= min(evals)
    protocol.check_goal_split(config, list(config.tasks))  # by value, every task


def test_overlapping_config_fails_naming_the_overlap():
    c = mt25_5stage_cpu.get_config()  # trains on variations 0..49
    c.eval.first_variation = 40  # evaluates on 40..59
    with pytest.raises(protocol.GoalOverlapError, match=r"variations 40\.\.49"):
        protocol.check_goal_split(c, c.tasks[:1])


def test_overlap_is_refused_before_any_data_is_collected(tmp_path):
    from cpd_jax.continual import stages

    c = mt25_5stage_cpu.get_config()
    c.eval.first_variation = 0
    with pytest.raises(protocol.GoalOverlapError):
        stages.run_continual(c, tmp_path)
    with pytest.raises(protocol.GoalOverlapError):
        c.protocol = "joint"
        pipeline.train_and_evaluate(c, tmp_path)
    assert not (tmp_path / "data").exists()


def test_training_variations_stay_inside_the_training_goals():
    c = mt25_5stage_cpu.get_config()
    c.data.num_train_variations, c.data.episodes_per_task = 3, 7
    assert protocol.train_variations(c.data, 7) == [0, 1, 2, 0, 1, 2, 0]
    c.data.first_train_variation, c.data.num_train_variations = 45, 10
    with pytest.raises(ValueError, match="training goals inside 0..49"):
        protocol.train_variations(c.data, 7)


def test_metaworld_plus_protocol_uses_the_training_goals_and_says_so():
    c = mt25_5stage_cpu.get_config()
    c.eval.protocol, c.eval.episodes_per_task = "metaworld_plus", 50
    assert protocol.eval_variations(c) == list(range(50))
    protocol.check_goal_split(c, c.tasks[:1])  # overlap is the point of this protocol
    described = protocol.describe(c)
    assert described["protocol"] == "metaworld_plus"
    assert "Meta-World+" in described["description"]
    c.eval.protocol = "leaky"
    with pytest.raises(ValueError, match="leaky"):
        protocol.eval_variations(c)


def test_heldout_goals_are_metaworld_draws_separated_from_training_goals():
    """Independent reference: the held-out vectors start with the draws of
    metaworld.MT50(seed=1) that are >= 0.1 mm from every training goal and every earlier
    held-out goal, in order; the rest (later seeds) keep the same separation (brute
    force over all pairs)."""
    import metaworld

    vecs = variations_lib.all_rand_vecs()
    draws = {t: [] for t in MT25_TASKS}
    for task in metaworld.MT50(seed=1).train_tasks:
        if task.env_name in draws:
            draws[task.env_name].append(pickle.loads(task.data)["rand_vec"])
    for t in MT25_TASKS:
        expected = []
        for v in draws[t]:
            if all(np.abs(v - u).max() >= 1e-4 for u in list(vecs[t][:50]) + expected):
                expected.append(v)
        heldout = vecs[t][50:]
        np.testing.assert_array_equal(heldout[:len(expected)], np.stack(expected), err_msg=t)
        for i in range(len(expected), 50):
            others = np.concatenate([vecs[t][:50], heldout[:i]])
            assert np.abs(others - heldout[i]).max(-1).min() >= 1e-4, (t, i)


def test_rollouts_from_other_goals_are_refused(tmp_path):
    c = mt25_5stage_cpu.get_config()
    c.data.episodes_per_task = c.data.num_train_variations = 2
    traj = collection.collect_or_load(c, "reach-v3", tmp_path)
    assert traj.variations.tolist() == [0, 1]
    c.data.first_train_variation = 5
    with pytest.raises(ValueError, match="collected on variations 0..1"):
        collection.collect_or_load(c, "reach-v3", tmp_path)
