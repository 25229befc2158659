"""The continual stage loop: resumption is exact, eval-restore is bitwise, splits."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax import config_checks, evaluate_checkpoint
from cpd_jax.continual import stages
from cpd_jax.evaluation import closed_loop
from cpd_jax.student import Student, StudentSpec, num_experts
from tests.helpers import TINY_CONTINUAL_TASKS as TASKS
from tests.helpers import numpy_feature_scale, tiny_continual_config


def test_split_stages_partitions_the_stream():
    assert config_checks.split_stages(TASKS, (2, 1)) == [TASKS[:2], TASKS[2:]]
    with pytest.raises(ValueError, match="partition"):
        config_checks.split_stages(TASKS, (2, 2))


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_killed_after_stage_2_and_restarted_matches_uninterrupted(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    full = stages.run_continual(c, tmp_path / "full")
    stages.run_continual(c, tmp_path / "resumed", max_stages=2)
    partial = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert np.isnan(np.asarray(partial["R"], float)[2]).all()  # stage 3 not run yet
    resumed = stages.run_continual(c, tmp_path / "resumed")
    np.testing.assert_array_equal(np.asarray(full["R"], float), np.asarray(resumed["R"], float))
    assert full["num_experts"] == resumed["num_experts"] == 2 + 2 * 1  # grew at stages 2, 3
    # the stage logs survive the restart (they live in the checkpoint's metadata)
    for a, b in zip(full["stages"], resumed["stages"]):
        np.testing.assert_equal(a["phase_mse"], b["phase_mse"])  # NaN == NaN here
        np.testing.assert_equal(a["routing"], b["routing"])


def test_results_log_every_stage_and_name_the_evaluation_protocol(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    out = stages.run_continual(c, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["evaluation"]["protocol"] == "heldout"
    assert saved["evaluation"]["variations"] == [50, 51]
    assert "Evaluation protocol `heldout`" in (tmp_path / "accuracy_matrix.md").read_text()
    assert [len(s["phase_mse"]) for s in saved["stages"]] == [1, 2, 2]  # phases per stage
    seen = [["reach-v3"], ["reach-v3", "drawer-close-v3"], list(TASKS)]
    for log, tasks in zip(saved["stages"], seen):
        assert sorted(log["phase_mse"][-1]["mse"]) == sorted(tasks)  # held-out MSE per task
    assert saved["stages"][0]["routing"]["old_tasks_to_later_experts"] is None or np.isnan(
        saved["stages"][0]["routing"]["old_tasks_to_later_experts"])
    assert 0.0 <= saved["stages"][2]["routing"]["new_tasks_to_new_experts"] <= 1.0
    assert [s["num_experts"] for s in saved["stages"]] == [2, 3, 4]
    assert saved["summary"][2]["teacher_recovery"] == pytest.approx(
        np.nansum(out["R"][2]) / np.sum(out["teacher_success"]))


@pytest.mark.parametrize("method", ["ewc", pytest.param("kl", marks=pytest.mark.slow)])
def test_penalty_methods_resumed_after_stage_2_match_uninterrupted(tmp_path, shared_data,
                                                                   method):
    """EWC / KL anchor stage 3 on stage 2's student and data: a resumed run reloads that
    data from disk, an uninterrupted one keeps it in memory; the params must agree."""
    c = tiny_continual_config(method)
    c.data.dir = str(shared_data)
    full = stages.run_continual(c, tmp_path / "full")
    stages.run_continual(c, tmp_path / "resumed", max_stages=2)
    resumed = stages.run_continual(c, tmp_path / "resumed")
    for a, b in zip(jax.tree.leaves(full["state"].params),
                    jax.tree.leaves(resumed["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(full["R"], float), np.asarray(resumed["R"], float))


def test_restore_for_eval_gives_bitwise_the_same_actions(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    run = stages.run_continual(c, tmp_path, max_stages=2)["state"]
    config, params, obs_norm, meta, _ = evaluate_checkpoint.restore_student(
        tmp_path / "checkpoints")
    assert meta["stages_done"] == 2 and num_experts(params) == meta["num_experts"] == 3
    model = Student(StudentSpec.from_config(config.student))
    history = closed_loop.empty_history(3, 4, 39, 4, [0, 5, 6])
    for t in range(3):
        obs = jax.random.normal(jax.random.PRNGKey(t), (3, 39))
        history = closed_loop.push(history, obs, jnp.full((3, 4), 0.1 * t), jnp.ones(3))
    kind = config.student.task_context
    restored = closed_loop.student_policy(model, params, kind, obs_norm=obs_norm)(history)
    in_memory = closed_loop.student_policy(model, run.params, kind,
                                           obs_norm=run.obs_norm)(history)
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(in_memory))


def test_eval_mode_writes_results_for_the_seen_tasks(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    stages.run_continual(c, tmp_path / "run", max_stages=1)
    out = evaluate_checkpoint.run(c, tmp_path / "run" / "checkpoints", tmp_path / "eval")
    assert list(out["per_task"]) == ["reach-v3"]
    assert (tmp_path / "eval" / "eval_results.md").exists()
    # its success also reaches TensorBoard, at the checkpoint's gradient step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "eval" / "tb"))
    events.Reload()
    [scalar] = events.Scalars("eval/success/reach-v3")
    trained = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]
    assert scalar.step == sum(s["train_steps"] for s in trained) > 0
    assert scalar.value == pytest.approx(out["per_task"]["reach-v3"]["success_rate"])


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate_checkpoint.restore_student(tmp_path / "nowhere")


def test_mismatched_config_on_resume_is_refused(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    stages.run_continual(c, tmp_path, max_stages=1)
    c.student.dim = 32
    with pytest.raises(ValueError, match="dim"):
        stages.run_continual(c, tmp_path)


def test_run_writes_accuracy_matrix_and_routing_plots(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    stages.run_continual(c, tmp_path, max_stages=1)
    for name in ("results.json", "accuracy_matrix.md", "accuracy_matrix.png", "routing.json",
                 "report.md", "task_success.png", "train_curves.png"):
        assert (tmp_path / name).exists(), name
    report = (tmp_path / "report.md").read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):  # no dangling links
        assert (tmp_path / image).exists(), image
    routing = json.loads((tmp_path / "routing.json").read_text())
    assert routing["tasks"] == ["reach-v3"]
    np.testing.assert_allclose(np.sum(routing["fractions"], axis=-1), 1.0, rtol=1e-6)


def test_contrastive_task_context_trains_an_encoder_and_restores_it(tmp_path, shared_data):
    c = tiny_continual_config()
    c.data.dir = str(shared_data)
    c.student.task_context = "contrastive"
    c.continual.stage_sizes = (2, 1)
    c.task_encoder.steps, c.task_encoder.batch_size, c.task_encoder.hidden = 5, 32, (16,)
    out = stages.run_continual(c, tmp_path)
    assert out["state"].encoder is not None
    assert (tmp_path / "task_embedding_pca.png").exists()
    *_, encoder = evaluate_checkpoint.restore_student(tmp_path / "checkpoints")
    for a, b in zip(jax.tree.leaves(encoder), jax.tree.leaves(out["state"].encoder)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_fresh_student_per_stage_fits_its_own_obs_norm(tmp_path, shared_data):
    from cpd_jax.data import collection
    c = tiny_continual_config("independent")
    c.data.dir = str(shared_data)
    out = stages.run_continual(c, tmp_path, max_stages=2)
    obs = [collection.collect_or_load(c, t, shared_data).obs for t in TASKS[:2]]
    second = obs[1].reshape(-1, 39).astype(np.float64)
    np.testing.assert_allclose(out["state"].obs_norm.mean, second.mean(0), atol=1e-5)
    np.testing.assert_allclose(out["state"].obs_norm.std, numpy_feature_scale(second, 1e-2),
                               rtol=1e-4)
    first = obs[0].reshape(-1, 39)
    assert not np.allclose(out["state"].obs_norm.mean, first.mean(0), atol=1e-3)
