"""RunCheckpointer: bitwise round trips, a growing expert count, and every error path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from cpd_jax import checkpointing, distillation
from cpd_jax.configs import quickstart
from cpd_jax.errors import UserError
from cpd_jax.pipeline import init_student
from cpd_jax.student import num_experts


def _config(experts: int):
    c = quickstart.get_config()
    c.student.dim, c.student.num_blocks, c.student.num_heads = 16, 1, 2
    c.student.seq_len, c.student.num_experts = 4, experts
    return c


def _state(experts: int, seed: int = 0):
    """A DistillState after one AdamW step (non-trivial moments) + a replay dict."""
    config = _config(experts)
    _, params = init_student(config, jax.random.PRNGKey(seed))
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    state = distillation.DistillState(params=optax.apply_updates(params, updates),
                                      opt_state=opt_state, step=jnp.int32(1),
                                      key=jax.random.PRNGKey(seed + 7))
    replay = {"obs": np.random.default_rng(seed).normal(size=(3, 5, 39)).astype(np.float32),
              "task_id": np.array([0, 1, 1], np.int32)}
    return {"distill": state, "replay": replay}, config


def _metadata(config, stage):
    return {"stage": stage, "num_experts": config.student.num_experts,
            "config": config.to_dict(), "metrics": {"loss": np.float32(0.25)},
            "replay": {"episodes": [3, 5]}}


def _template_fn(metadata):
    """Rebuilds the abstract structure from the saved metadata alone (expert count grows)."""
    return jax.eval_shape(lambda: _state(metadata["num_experts"])[0])


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def states():
    return {e: _state(e) for e in (2, 3)}


def test_round_trip_bitwise_with_template(tmp_path, states):
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path / "ckpt", max_to_keep=3)
    assert ckpt.latest() is None and not (tmp_path / "ckpt").exists()  # reading creates nothing
    ckpt.save(1, tree, _metadata(config, stage=0))
    assert ckpt.latest() == 1
    restored, metadata = ckpt.restore(template_fn=_template_fn)
    _assert_trees_equal(restored, tree)
    assert isinstance(restored["distill"], distillation.DistillState)
    assert metadata["stage"] == 0 and metadata["num_experts"] == 2
    assert metadata["format_version"] == checkpointing.FORMAT_VERSION
    assert metadata["metrics"]["loss"] == 0.25
    assert metadata["config"]["tasks"] == list(config.tasks)


def test_growing_expert_count_raw_restore(tmp_path, states):
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    for step, experts in ((1, 2), (2, 3)):
        tree, config = states[experts]
        ckpt.save(step, tree, _metadata(config, stage=step - 1))
    # A fresh checkpointer (a restarted process) restores both without any template.
    fresh = checkpointing.RunCheckpointer(tmp_path)
    assert fresh.all_steps() == [1, 2]
    for step, experts in ((1, 2), (2, 3)):
        raw, metadata = fresh.restore(step)
        params = raw["distill"]["params"]
        assert num_experts(params) == experts == metadata["num_experts"]
        _assert_trees_equal(params, states[experts][0]["distill"].params)
        _assert_trees_equal(raw["replay"], states[experts][0]["replay"])
        assert isinstance(raw["replay"]["obs"], np.ndarray)  # numpy in, numpy out
        # optax states come back as lists, EmptyState as None (documented)
        adam = raw["distill"]["opt_state"][0]
        _assert_trees_equal(adam["mu"], states[experts][0]["distill"].opt_state[0].mu)
        typed, _ = fresh.restore(step, template_fn=_template_fn)
        _assert_trees_equal(typed, states[experts][0])


def test_max_to_keep(tmp_path, states):
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path, max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, tree, _metadata(config, stage=step))
    assert ckpt.all_steps() == [2, 3]
    with pytest.raises(ValueError, match="not after"):
        ckpt.save(3, tree, _metadata(config, stage=3))


def test_missing_directory_and_step(tmp_path, states):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        checkpointing.RunCheckpointer(missing).restore()
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path / "c")
    ckpt.save(1, tree, _metadata(config, 0))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint step 7 .*saved steps: \[1\]"):
        ckpt.restore(7)


def test_verify_config_names_differing_fields(states):
    _, config = states[2]
    metadata = checkpointing._normalise_json(_metadata(config, 0))
    checkpointing.verify_config(metadata, config.to_dict())  # tuples vs lists: no difference
    changed = _config(2)
    changed.distill.learning_rate = 0.5
    changed.tasks = ("reach-v3",)
    with pytest.raises(ValueError, match=r"2 field\(s\): distill.learning_rate, tasks"):
        checkpointing.verify_config(metadata, changed.to_dict())
    checkpointing.verify_config(metadata, changed.to_dict(),
                                ignore=("distill.learning_rate", "tasks"))


def test_corrupted_state_names_path(tmp_path, states):
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    step_dir = ckpt.save(1, tree, _metadata(config, 0))
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage" * 3)
    with pytest.raises(checkpointing.CorruptCheckpointError, match=str(step_dir / "state")):
        ckpt.restore(1)
    ckpt.save(2, tree, _metadata(config, 1))
    ckpt.save(3, tree, _metadata(config, 2))
    for f in (tmp_path / "3" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")  # truncated to nothing
    with pytest.raises(checkpointing.CorruptCheckpointError, match=str(tmp_path / "3")):
        ckpt.restore()
    restored, metadata = ckpt.restore(2, template_fn=_template_fn)  # earlier steps intact
    assert metadata["step_id"] == 2
    _assert_trees_equal(restored, tree)


def test_corrupted_metadata_names_path(tmp_path, states):
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    step_dir = ckpt.save(1, tree, _metadata(config, 0))
    files = [f for f in (step_dir / "metadata").rglob("*") if f.is_file()]
    assert files
    for f in files:
        f.write_text(f.read_text()[:10])  # truncated JSON
    with pytest.raises(checkpointing.CorruptCheckpointError, match=str(step_dir / "metadata")):
        ckpt.restore(1)


def test_failed_save_keeps_earlier_checkpoint(tmp_path, states, monkeypatch):
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    ckpt.save(1, tree, _metadata(config, 0))

    async def fail(*args, **kwargs):
        raise OSError("disk full (injected)")

    # The metadata item fails while (or after) the state item is written into the tmp dir.
    with monkeypatch.context() as m:
        m.setattr(ocp.JsonCheckpointHandler, "async_save", fail)
        with pytest.raises(Exception, match="disk full"):
            ckpt.save(2, states[3][0], _metadata(states[3][1], 1))
    assert ckpt.latest() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # no half-written step left
    fresh = checkpointing.RunCheckpointer(tmp_path)  # also after a restart
    assert fresh.all_steps() == [1]
    restored, metadata = fresh.restore(template_fn=_template_fn)
    _assert_trees_equal(restored, tree)
    # ... and the run can go on saving.
    fresh.save(2, states[3][0], _metadata(states[3][1], 1))
    assert fresh.restore(2)[1]["num_experts"] == 3


def test_unserialisable_metadata_is_rejected_before_writing(tmp_path, states):
    tree, config = states[2]
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    with pytest.raises(TypeError, match="JSON"):
        ckpt.save(1, tree, {"config": object()})
    assert ckpt.latest() is None


def test_orbax_info_lines_are_dropped_and_its_warnings_kept():
    import logging as std_logging

    def record(path, level):
        return std_logging.LogRecord("absl", level, path, 1, "msg", None, None)

    orbax_file = "/venv/lib/python3.11/site-packages/orbax/checkpoint/checkpoint_manager.py"
    assert checkpointing.is_orbax_chatter(record(orbax_file, std_logging.INFO))
    assert not checkpointing.is_orbax_chatter(record(orbax_file, std_logging.WARNING))
    assert not checkpointing.is_orbax_chatter(record("/repo/cpd_jax/pipeline.py",
                                                     std_logging.INFO))
    from absl import logging
    checkpointing.quiet_orbax_logs()
    checkpointing.quiet_orbax_logs()  # idempotent: one filter
    handler = logging.get_absl_handler()
    assert len([f for f in handler.filters if "orbax" in getattr(f, "__name__", "")]) == 1
    assert not handler.filter(record(orbax_file, std_logging.INFO))
    assert handler.filter(record(orbax_file, std_logging.ERROR))


def _with_zero_size_leaves():
    """Zero-size arrays (numpy and jax) in a dict, a NamedTuple and a flax dataclass,
    beside ordinary leaves (orbax itself refuses zero-size arrays)."""
    adam = optax.adam(1e-3).init({"w": jnp.zeros((0, 3)), "b": jnp.ones(2)})
    state = distillation.DistillState(params={"w": jnp.zeros((0, 4), jnp.bfloat16)},
                                      opt_state=adam, step=jnp.int32(3),
                                      key=jax.random.PRNGKey(1))
    replay = {"obs": np.zeros((0, 0, 0), np.float32), "success": np.zeros((0,), bool),
              "task_ids": np.arange(2, dtype=np.int32)}
    return {"replay": replay, "distill": state}


def _assert_same_leaves(restored, original, same_array_types=True):
    """Same leaves in flattening order: values, dtypes, shapes (and numpy vs jax)."""
    got, want = jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(original)
    assert len(got) == len(want)
    for x, y in zip(got, want):
        if same_array_types:
            assert isinstance(x, np.ndarray) == isinstance(y, np.ndarray), (type(x), type(y))
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_zero_size_leaves_round_trip_raw_and_with_template(tmp_path):
    tree = _with_zero_size_leaves()
    ckpt = checkpointing.RunCheckpointer(tmp_path)
    ckpt.save(1, tree, {})
    typed, _ = ckpt.restore(template_fn=lambda _: _with_zero_size_leaves())
    assert isinstance(typed["distill"], distillation.DistillState)
    _assert_same_leaves(typed, tree)
    # An abstract template restores every leaf as a jax array.
    abstract, _ = ckpt.restore(template_fn=lambda _: jax.eval_shape(_with_zero_size_leaves))
    _assert_same_leaves(abstract, tree, same_array_types=False)
    assert all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(abstract))
    # Raw: dataclasses and NamedTuples come back as dicts of fields, tuples as lists,
    # with the zero-size leaves where they were.
    raw, _ = checkpointing.RunCheckpointer(tmp_path).restore()
    _assert_same_leaves(raw["replay"], tree["replay"])
    assert raw["distill"]["params"]["w"].shape == (0, 4)
    assert raw["distill"]["params"]["w"].dtype == jnp.bfloat16
    adam_mu = raw["distill"]["opt_state"][0]["mu"]
    assert adam_mu["w"].shape == (0, 3) and adam_mu["b"].shape == (2,)


def test_check_format_names_both_formats_and_the_fix():
    checkpointing.check_format({"format": "run/v2"}, "run/v2", "ckpt", "fix it")
    with pytest.raises(UserError, match=r"^ckpt: checkpoint format 'teachers/v1' is not "
                                        r"'run/v2'; use another directory$"):
        checkpointing.check_format({"format": "teachers/v1"}, "run/v2", "ckpt",
                                   "use another directory")
    with pytest.raises(UserError, match="format None"):
        checkpointing.check_format({}, "run/v2", "ckpt", "fix it")


def test_save_tree_round_trip(tmp_path):
    tree = {"policy": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "count": np.asarray(3.5, np.float32)}
    checkpointing.save_tree(tmp_path / "policy", tree)
    checkpointing.save_tree(tmp_path / "policy", tree)  # replaces what is there
    _assert_same_leaves(checkpointing.restore_tree(tmp_path / "policy"), tree)
