"""One stage of Algorithm 1 in isolation: the aux-loss schedule over a stage, the task
context's gradient at stage >= 2, the warm-started task encoder, routing shares."""

import jax
import numpy as np
import pytest

from cpd_jax import distillation
from cpd_jax.configs import mt25_5stage_cpu
from cpd_jax.continual import encoder as encoder_lib
from cpd_jax.continual import freezing, methods, stages
from cpd_jax.continual.methods import get_method
from cpd_jax.evaluation import routing_stats
from cpd_jax.student import growth, init_student, task_embedding
from cpd_jax.student.inputs import identity_obs_norm, student_inputs

L = 4


def _config():
    c = mt25_5stage_cpu.get_config()
    c.student.dim, c.student.num_blocks, c.student.num_experts, c.student.seq_len = 16, 1, 2, L
    c.distill.batch_size, c.distill.max_steps, c.distill.log_every = 16, 12, 1
    c.parallel.data_parallel = False
    return c


def _stage2(c, fake_trajectories, task="push-v3"):
    """Stage-1 params of the config's student, expanded for stage 2, and a source of
    `task`'s data."""
    _, params = init_student(c, jax.random.PRNGKey(0))
    num_old = growth.num_experts(params)
    params = growth.expand(params, 1, jax.random.PRNGKey(1), 0.01)
    source = distillation.make_window_source([fake_trajectories(task, n=4)], L)
    return params, num_old, source


def test_aux_lambda_at_step_k_of_a_stage_is_the_table_6_formula(fake_trajectories):
    """lambda_k = max(0.01 - decay * k, 1e-4) for k = 0.. over the whole stage: phase 2
    continues phase 1's count (the decay is raised so the floor is reached in 12 steps)."""
    c = _config()
    c.distill.aux_coef_decay = 1e-3
    params, num_old, source = _stage2(c, fake_trajectories)
    _, curve = stages.train_stage(c, get_method("ours"), params, num_old, 2, source,
                                  identity_obs_norm(), jax.random.PRNGKey(2))
    assert [m["phase"] for m in curve] == [1] * 6 + [2] * 6
    for k, m in enumerate(curve):  # the k-th step of the stage (0-based)
        assert m["step"] == k + 1
        assert m["aux_coef"] == pytest.approx(max(0.01 - 1e-3 * k, 1e-4), rel=1e-6)


def _train_push_at_stage_2(c, fake_trajectories):
    """(stage-2 params before, after) "ours" trains stage 2 on push-v3 (one-hot worker
    id 1; reach-v3, id 0, is the older task)."""
    params, num_old, source = _stage2(c, fake_trajectories, "push-v3")
    new, _ = stages.train_stage(c, get_method("ours"), params, num_old, 2, source,
                                identity_obs_norm(), jax.random.PRNGKey(2),
                                stage_tasks=("push-v3",))
    return params, new


@pytest.mark.parametrize("old_task_context", ["frozen", "trainable"])
def test_task_context_receives_gradient_at_stage_2_while_the_backbone_is_frozen(
        fake_trajectories, old_task_context):
    c = _config()
    c.continual.old_task_context = old_task_context
    params, new = _train_push_at_stage_2(c, fake_trajectories)
    ctx_before, ctx_after = params["task_context"]["kernel"], new["task_context"]["kernel"]
    assert np.abs(np.asarray(ctx_after[1] - ctx_before[1])).max() > 1e-3  # push learned
    if old_task_context == "frozen":  # reach (an older task's row): bitwise unchanged
        assert np.asarray(ctx_after[0]).tobytes() == np.asarray(ctx_before[0]).tobytes()
    else:  # reach has no data here: its row only feels AdamW's weight decay
        decay = (1 - c.distill.learning_rate * c.distill.weight_decay) ** c.distill.max_steps
        np.testing.assert_allclose(ctx_after[0], ctx_before[0] * decay, rtol=1e-5, atol=1e-7)
    for name in ("embed", "pos_embed", "action_head"):  # backbone: bitwise frozen
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(new[name])):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), name
    assert freezing.TASK_CONTEXT in freezing.trainable_labels(2, 1)
    assert freezing.TASK_CONTEXT in freezing.trainable_labels(5, 2)


def test_task_film_learns_the_new_tasks_row_and_keeps_old_rows_bitwise(fake_trajectories):
    """With student.task_film, stage 2 moves the new task's FiLM row (push) and leaves
    the old task's (reach) and the backbone bitwise as stage 1 left them."""
    c = _config()
    c.student.task_film = True
    params, new = _train_push_at_stage_2(c, fake_trajectories)
    before, after = (np.asarray(t["task_context"]["film_kernel"]) for t in (params, new))
    assert np.abs(after[1] - before[1]).max() > 1e-3
    assert after[0].tobytes() == before[0].tobytes()
    for name in ("embed", "pos_embed", "action_head", "ln_final"):
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(new[name])):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), name


def _separable(task, seed, fake_trajectories):
    traj = fake_trajectories(task, n=6, t=40, seed=seed)
    traj.obs[:] += 3.0 * seed  # each task its own observation region
    return traj


def test_warm_started_encoder_keeps_old_tasks_z_without_new_data(fake_trajectories):
    c = _config()
    c.task_encoder.steps, c.task_encoder.batch_size, c.task_encoder.hidden = 150, 64, (32,)
    old = [_separable(t, i, fake_trajectories) for i, t in enumerate(["reach-v3", "push-v3"])]
    encoder, drift = encoder_lib.train_encoder(c, old, jax.random.PRNGKey(0))
    assert drift == {}  # stage 1: no old task
    warm, drift = encoder_lib.train_encoder(c, old, jax.random.PRNGKey(1), previous=encoder,
                                       old_tasks=["reach-v3", "push-v3"])
    assert set(drift) == {"reach-v3", "push-v3"}
    assert max(drift.values()) < 0.02, drift  # mean 1 - cos(z_after, z_before)
    np.testing.assert_array_equal(warm["input_mean"], encoder["input_mean"])
    # the drift reported is the one measured independently on the same windows
    windows, ids = encoder_lib.encoder_windows(c, old)
    z0 = np.asarray(jax.jit(task_embedding.embed)(encoder, *windows))
    z1 = np.asarray(jax.jit(task_embedding.embed)(warm, *windows))
    cos = np.sum(z0 * z1, -1) / np.linalg.norm(z0, axis=-1) / np.linalg.norm(z1, axis=-1)
    np.testing.assert_allclose(drift["reach-v3"], np.mean(1 - cos[ids == 0]), atol=1e-5)


def test_routing_shares_by_hand():
    # 3 tasks (stages 0, 0, 1), 2 layers, experts born at stages [0, 0, 1]
    birth = routing_stats.expert_birth_stages([2, 3])
    np.testing.assert_array_equal(birth, [0, 0, 1])
    frac = np.array([[[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [0.0, 0.4, 0.6]],
                     [[0.9, 0.0, 0.1], [0.5, 0.5, 0.0], [0.2, 0.0, 0.8]]])
    shares = routing_stats.stage_routing_shares(frac, np.array([0, 0, 1]), birth, stage=1)
    assert shares["new_tasks_to_new_experts"] == pytest.approx((0.6 + 0.8) / 2)
    assert shares["old_tasks_to_later_experts"] == pytest.approx((0.0 + 0.2 + 0.1 + 0.0) / 4)
    first = routing_stats.stage_routing_shares(frac[:, :2, :2], np.array([0, 0]), [0, 0], 0)
    assert np.isnan(first["new_tasks_to_new_experts"])
    assert np.isnan(first["old_tasks_to_later_experts"])


def test_one_task_first_stage_with_contrastive_context_is_refused_before_any_work(tmp_path):
    c = mt25_5stage_cpu.get_config()
    c.student.task_context = "contrastive"
    c.continual.stage_sizes = (1, 4, 5, 5, 5, 5)
    with pytest.raises(ValueError, match="at least two tasks"):
        stages.run_continual(c, tmp_path)
    assert not (tmp_path / "data").exists()


def _previous(c, fake_trajectories, calls):
    """The stage-1 student as the anchor of stage 2, its data loader counting calls."""
    model, params = init_student(c, jax.random.PRNGKey(0))

    def data():
        calls.append(1)
        return [fake_trajectories("reach-v3", n=4)]

    return methods.Previous(model=model, params=params, obs_norm=identity_obs_norm(),
                            old_task_ids=[0], data=data), params


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_each_method_builds_its_own_penalty_and_loads_old_data_only_for_ewc(
        fake_trajectories, name):
    """The stage loop only asks the method: EWC (and only EWC) reads the previous
    stage's data, once; an anchored penalty is 0 at the anchor and positive away from it;
    no method has a penalty at stage 1."""
    c = _config()
    c.continual.fisher_batches = 2
    method, calls = methods.get_method(name), []
    previous, params = _previous(c, fake_trajectories, calls)
    assert method.penalty(c, None, jax.random.PRNGKey(3)) is None
    penalty_fn = method.penalty(c, previous, jax.random.PRNGKey(3))
    assert len(calls) == (1 if name == "ewc" else 0)
    assert (penalty_fn is None) == (name not in ("ewc", "kl"))
    if penalty_fn is None:
        return
    source = distillation.make_window_source(previous.data(), L)
    history, _ = distillation.sample_batch(jax.random.PRNGKey(4), source, 8)
    inputs = student_inputs(c.student.task_context, history, None, previous.obs_norm)
    at = lambda p: float(penalty_fn(p, inputs, history.valid, task_id=history.task_id,
                                    aux={}))
    moved = jax.tree.map(lambda x: x + 0.05, params)
    assert at(params) == pytest.approx(0.0, abs=1e-6)
    assert at(moved) > 1e-4


def test_feature_anchor_sees_old_tasks_backbone_drift_only(fake_trajectories):
    """ours with continual.feature_anchor_coef: 0 at the previous student, positive once
    the backbone moves, blind to the new task's windows, and its gradient reaches the
    backbone through the forward pass's aux (the value itself: test_penalties)."""
    c = _config()
    c.continual.feature_anchor_coef = 1.0
    previous, params = _previous(c, fake_trajectories, [])
    penalty_fn = methods.get_method("ours").penalty(c, previous, jax.random.PRNGKey(3))
    source = distillation.make_window_source(
        [fake_trajectories("reach-v3", n=4), fake_trajectories("push-v3", n=4, seed=1)], L)
    history, _ = distillation.sample_batch(jax.random.PRNGKey(4), source, 16)
    is_new = np.asarray(history.task_id) != 0
    assert is_new.any() and not is_new.all()

    def at(p, inputs):
        _, aux = previous.model.apply({"params": p}, inputs, history.valid)
        return penalty_fn(p, inputs, history.valid, task_id=history.task_id, aux=aux)

    inputs = student_inputs(c.student.task_context, history, None, previous.obs_norm)
    kernel = params["embed"]["kernel"]  # a shift equal over features would be undone by
    noise = 0.05 * np.random.default_rng(5).normal(size=kernel.shape)  # the LayerNorm
    moved = dict(params, embed=dict(params["embed"], kernel=kernel + noise))
    assert float(at(params, inputs)) == 0.0
    assert float(at(moved, inputs)) > 1e-4
    other_new_rows = np.where(is_new[:, None, None], inputs + 1.0, inputs)
    assert float(at(moved, other_new_rows)) == pytest.approx(float(at(moved, inputs)))
    grad = jax.grad(at)(moved, inputs)
    assert float(np.abs(grad["embed"]["kernel"]).max()) > 0.0


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_each_method_builds_its_own_phase_optimizer(name):
    """Freezing methods train stage 2 in two phases with a frozen mask that keeps the
    backbone; the others in one phase without a mask; TRAC wraps AdamW in its state."""
    c = _config()
    method = methods.get_method(name)
    _, params = init_student(c, jax.random.PRNGKey(0))
    assert method.phases(c, 2) == ((1, 2) if method.freeze else (1,))
    tx, frozen = method.optimizer(c, params, 2, 2, 1, 10, 0)
    assert (frozen is not None) == method.freeze
    if frozen is not None:
        assert all(jax.tree.leaves(frozen["embed"]))
    wrapped = any(type(s).__name__ == "TracState" for s in jax.tree.leaves(
        tx.init(params), is_leaf=lambda s: type(s).__name__ == "TracState"))
    assert wrapped == (name == "trac")
