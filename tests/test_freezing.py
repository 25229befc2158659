"""Freezing with optax: labels, schedules, and bitwise-frozen leaves across phases."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
import pytest
from flax import traverse_util

from cpd_jax import distillation
from cpd_jax.continual import freezing as fz
from cpd_jax.student import growth
from cpd_jax.student.transformer import Student, StudentSpec

SPEC = StudentSpec(dim=16, num_blocks=1, num_heads=2, num_experts=3, top_k=1,
                   mlp_multiplier=2, seq_len=4)
LR, WD, STEPS = 1e-2, 0.1, 20


@functools.lru_cache(maxsize=1)
def _params():
    x = jnp.ones((2, 4, 39 + 3))  # observation + a 3-wide task context
    return Student(SPEC).init(jax.random.key(0), x, jnp.ones((2, 4), bool))["params"]


def _flat(tree):
    return traverse_util.flatten_dict(tree)


def _train(params, opt, state, key, steps=STEPS, apply=None):
    """`steps` AdamW steps on random gradients (the optimizer is what is under test)."""
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def step(params, state, key):
        # one RNG call for the whole tree keeps the compile small
        grads = unravel(jax.random.normal(key, flat.shape))
        updates, state = opt.update(grads, state, params)
        new = optax.apply_updates(params, updates) if apply is None else apply(params, updates)
        return new, state

    for i in range(steps):
        params, state = step(params, state, jax.random.fold_in(key, i))
    return params, state


def _check(before, after, labels, trainable):
    fb, fa, fl = _flat(before), _flat(after), _flat(labels)
    for path, label in fl.items():
        a, b = np.asarray(fa[path]), np.asarray(fb[path])
        if label in trainable:
            assert not np.array_equal(a, b), f"trainable {'/'.join(path)} ({label}) unchanged"
        else:  # bitwise: compare the raw bytes, so -0.0 vs 0.0 or NaN payloads would show
            assert a.tobytes() == b.tobytes(), f"frozen {'/'.join(path)} ({label}) moved"


def test_labels():
    params = growth.expand(_params(), 2, jax.random.key(1), 0.01)
    labels = _flat(fz.label_params(params, num_old_experts=3))
    assert labels[("embed", "kernel")] == fz.BACKBONE
    assert labels[("pos_embed",)] == fz.BACKBONE
    assert labels[("block_0", "attn", "query", "kernel")] == fz.BACKBONE
    assert labels[("block_0", "ln_moe", "scale")] == fz.BACKBONE
    assert labels[("ln_final", "bias")] == fz.BACKBONE
    assert labels[("action_head", "kernel")] == fz.BACKBONE
    assert labels[("block_0", "moe", "gate_4", "bias")] == fz.GATE
    assert labels[("block_0", "moe", "gate_2", "kernel")] == fz.OLD_GATE
    assert labels[("block_0", "moe", "expert_2", "w_in")] == fz.OLD_EXPERT
    assert labels[("block_0", "moe", "expert_3", "b_out")] == fz.NEW_EXPERT
    assert labels[("task_context", "kernel")] == fz.TASK_CONTEXT
    stage1 = set(_flat(fz.label_params(params, 0)).values())
    assert stage1 == {fz.BACKBONE, fz.TASK_CONTEXT, fz.GATE, fz.NEW_EXPERT}


def test_schedules():
    B, C, O, N = fz.BACKBONE, fz.TASK_CONTEXT, fz.OLD_EXPERT, fz.NEW_EXPERT
    G = {fz.GATE, fz.OLD_GATE}  # the whole router
    assert fz.trainable_labels(1, 1) == {B, C, O, N} | G
    # §4.5: backbone frozen for good; the task context trains in every phase
    assert fz.trainable_labels(2, 1) == {C, N} | G
    assert fz.trainable_labels(3, 2) == {C, O, N}
    # Algorithm 1, line 19: shared layers and old experts train again in phase 2
    assert fz.trainable_labels(2, 1, backbone="phase2") == {C, N} | G
    assert fz.trainable_labels(2, 2, backbone="phase2") == {B, C, O, N}
    # No Shared-Frozen ablation
    assert fz.trainable_labels(2, 1, backbone="trainable") == {B, C, N} | G
    assert fz.trainable_labels(2, 2, backbone="trainable") == {B, C, O, N}
    assert fz.trainable_labels(2, 1, freeze_gating=False) == {C, O, N} | G
    # old experts frozen for good, with their router columns
    assert fz.trainable_labels(2, 1, old_experts="frozen") == {C, fz.GATE, N}
    assert fz.trainable_labels(2, 2, old_experts="frozen") == {C, N}
    assert fz.phases(1) == (1,) and fz.phases(2) == (1, 2) and fz.phases(2, False) == (1,)
    with pytest.raises(ValueError):
        fz.trainable_labels(2, 2, freeze_gating=False)
    with pytest.raises(ValueError):
        fz.trainable_labels(1, 2)
    with pytest.raises(ValueError, match="continual.backbone"):
        fz.trainable_labels(2, 1, backbone="sometimes")
    with pytest.raises(ValueError, match="two phases"):
        fz.trainable_labels(2, 1, backbone="phase2", freeze_gating=False)


@functools.lru_cache(maxsize=1)
def _stage1():
    """Stage 1 (everything trains), shared by the schedule tests."""
    params = _params()
    opt = fz.make_optimizer(params, 0, stage=1, phase=1, learning_rate=LR, weight_decay=WD)
    trained, state = _train(params, opt, opt.init(params), jax.random.key(0))
    return trained, state


def test_stage1_everything_trains():
    trained, _ = _stage1()
    _check(_params(), trained, fz.label_params(_params(), 0), fz.trainable_labels(1, 1))


@pytest.mark.parametrize("backbone,freeze_gating,old_experts", [
    ("frozen", True, "phase2"), ("trainable", True, "phase2"), ("phase2", True, "phase2"),
    ("frozen", False, "phase2"), ("frozen", True, "frozen")])
def test_frozen_leaves_bitwise_unchanged_through_stages(backbone, freeze_gating, old_experts):
    """Stage 1 (all train) -> expand -> every phase of stage 2, each phase with its own
    optimizer and fresh state, as the stage loop does: frozen leaves are bitwise
    unchanged after 20 AdamW steps, trainable ones all move."""
    key = jax.random.key(42)
    trained, _ = _stage1()
    num_old = growth.num_experts(trained)
    params = growth.expand(trained, 2, jax.random.key(7), 0.01)
    labels = fz.label_params(params, num_old)
    schedule = dict(backbone=backbone, freeze_gating=freeze_gating, old_experts=old_experts)
    for phase in fz.phases(2, freeze_gating):
        opt = fz.make_optimizer(params, num_old, 2, phase, LR, WD, **schedule)
        trainable = fz.trainable_labels(2, phase, **schedule)
        before = params
        params, _ = _train(params, opt, opt.init(params), jax.random.fold_in(key, phase))
        _check(before, params, labels, trainable)


def test_custom_apply_updates_returns_frozen_leaf_itself():
    params = _params()
    params = {**params, "ln_final": {**params["ln_final"], "bias": -jnp.zeros(SPEC.dim)}}
    opt = fz.make_optimizer(params, 0, 2, 1, LR, WD)
    frozen = fz.frozen_mask(params, 0, fz.trainable_labels(2, 1))
    trained, _ = _train(params, opt, opt.init(params), jax.random.key(0), steps=3,
                        apply=functools.partial(distillation.apply_updates, frozen=frozen))
    # -0.0 survives (optax.apply_updates would give +0.0 = -0.0 + 0.0)
    assert np.signbit(np.asarray(trained["ln_final"]["bias"])).all()
    _check(params, trained, fz.label_params(params, 0), fz.trainable_labels(2, 1))


def test_frozen_rows_of_the_task_context_stay_bitwise_while_the_others_train():
    params = _params()  # task_context kernel float[3, 16]
    rows = np.array([False, True, False])  # only row 1 may train
    opt = fz.make_optimizer(params, 0, 2, 1, LR, WD)
    frozen = fz.frozen_mask(params, 0, fz.trainable_labels(2, 1), context_rows=rows)
    np.testing.assert_array_equal(frozen["task_context"]["kernel"], ~rows[:, None])
    trained, _ = _train(params, opt, opt.init(params), jax.random.key(0), steps=3,
                        apply=functools.partial(distillation.apply_updates, frozen=frozen))
    before, after = (np.asarray(t["task_context"]["kernel"]) for t in (params, trained))
    assert before[[0, 2]].tobytes() == after[[0, 2]].tobytes()
    assert not np.array_equal(before[1], after[1])


def test_negative_control_masking_grads_is_not_enough():
    """Why set_to_zero: zeroing a leaf's gradient under a shared AdamW still moves it
    (weight decay, and momentum from when it was trainable)."""
    params = _params()
    opt = optax.adamw(LR, weight_decay=WD)
    ones = jax.tree.map(jnp.ones_like, params)
    _, state = opt.update(ones, opt.init(params), params)  # a trainable phase
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, state, params)  # "frozen" by a zero gradient
    assert any(float(jnp.max(jnp.abs(u))) > 0 for u in jax.tree.leaves(updates))


def test_real_loss_step_on_expanded_student():
    """End to end: expand, rebuild the student, stage-2 phase-1 optimizer, jitted MSE
    steps with real gradients: the backbone and old experts stay bitwise unchanged."""
    import dataclasses

    params = growth.expand(_params(), 2, jax.random.key(3), 0.01)
    spec = dataclasses.replace(SPEC, num_experts=growth.num_experts(params))
    model = Student(spec)
    x = jax.random.normal(jax.random.key(4), (8, 4, 39 + 3))
    valid = jnp.ones((8, 4), bool)
    target = jnp.tanh(jax.random.normal(jax.random.key(5), (8, 4, 4)))
    opt = fz.make_optimizer(params, 3, 2, 1, LR, WD)
    frozen = fz.frozen_mask(params, 3, fz.trainable_labels(2, 1))

    @jax.jit
    def step(params, state):
        def loss_fn(p):
            actions, aux = model.apply({"params": p}, x, valid)
            return jnp.mean((actions - target) ** 2) + 0.01 * aux["aux_loss"]
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return distillation.apply_updates(params, updates, frozen), state, loss

    state = opt.init(params)
    new = params
    for _ in range(3):
        new, state, loss = step(new, state)
    assert np.isfinite(float(loss))
    # with weight decay every trainable leaf moves even without routed tokens
    # (new experts are noisy copies, so no trainable leaf is exactly zero)
    _check(params, new, fz.label_params(params, 3), fz.trainable_labels(2, 1))


def test_frozen_rows_of_the_task_film_stay_bitwise_while_the_others_train():
    spec = dataclasses.replace(SPEC, task_film=True)
    x = jnp.ones((2, 4, 39 + 3))
    params = Student(spec).init(jax.random.key(0), x, jnp.ones((2, 4), bool))["params"]
    rows = np.array([True, False, True])  # rows 0 and 2 may train
    opt = fz.make_optimizer(params, 0, 2, 1, LR, WD)
    frozen = fz.frozen_mask(params, 0, fz.trainable_labels(2, 1), context_rows=rows)
    assert frozen["task_context"]["film_kernel"].shape == (3, 1, 1, 1)
    trained, _ = _train(params, opt, opt.init(params), jax.random.key(0), steps=3,
                        apply=functools.partial(distillation.apply_updates, frozen=frozen))
    for name in ("kernel", "film_kernel"):
        before, after = (np.asarray(t["task_context"][name]) for t in (params, trained))
        assert before[1].tobytes() == after[1].tobytes()
        assert not np.array_equal(before[[0, 2]], after[[0, 2]])
