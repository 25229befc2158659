"""Student Transformer: causal masking, padding, expert count read off the params."""

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.student import Student, StudentSpec, num_experts

SPEC = StudentSpec(dim=32, num_blocks=2, num_heads=2, num_experts=3, seq_len=8)


def _init(spec=SPEC, features=55):
    model = Student(spec)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, spec.seq_len, features))
    valid = jnp.ones((4, spec.seq_len), bool)
    return model, model.init(jax.random.PRNGKey(1), x, valid)["params"], x, valid


def test_changing_a_future_observation_does_not_change_earlier_outputs():
    model, params, x, valid = _init()
    y, _ = model.apply({"params": params}, x, valid)
    x2 = x.at[:, 5].set(100.0)
    y2, _ = model.apply({"params": params}, x2, valid)
    np.testing.assert_array_equal(y[:, :5], y2[:, :5])
    assert not np.allclose(y[:, 5:], y2[:, 5:])


def test_padded_steps_do_not_influence_valid_outputs():
    model, params, x, _ = _init()
    valid = jnp.arange(SPEC.seq_len)[None].repeat(4, 0) >= 3  # 3 steps of left padding
    y, _ = model.apply({"params": params}, x, valid)
    y2, _ = model.apply({"params": params}, x.at[:, :3].set(-7.0), valid)
    np.testing.assert_allclose(y[:, 3:], y2[:, 3:], atol=1e-6)


def test_outputs_shapes_and_expert_count_from_params():
    model, params, x, valid = _init()
    y, aux = model.apply({"params": params}, x, valid)
    assert y.shape == (4, SPEC.seq_len, 4)
    assert aux["expert_index"].shape == (SPEC.num_blocks, 4 * SPEC.seq_len, 1)
    assert np.isfinite(aux["aux_loss"])
    assert num_experts(params) == 3
    assert set(params["block_0"]["moe"]) == {"gate_0", "gate_1", "gate_2",
                                             "expert_0", "expert_1", "expert_2"}


FILM_SPEC = StudentSpec(dim=32, num_blocks=2, num_heads=2, num_experts=3, seq_len=8,
                        task_film=True)


def _onehot_inputs(tasks, num_tasks=3):
    """float[B, L, 39 + num_tasks]: random observations, task b's one-hot context."""
    obs = jax.random.normal(jax.random.PRNGKey(2), (len(tasks), FILM_SPEC.seq_len, 39))
    context = jnp.broadcast_to(jax.nn.one_hot(jnp.asarray(tasks), num_tasks)[:, None],
                               (len(tasks), FILM_SPEC.seq_len, num_tasks))
    return jnp.concatenate([obs, context], -1), jnp.ones((len(tasks), FILM_SPEC.seq_len), bool)


def test_task_film_starts_as_the_identity_on_the_same_params():
    x, valid = _onehot_inputs([0, 1, 2, 1])
    film_model, plain_model = Student(FILM_SPEC), Student(SPEC)
    film_params = film_model.init(jax.random.PRNGKey(1), x, valid)["params"]
    plain_params = plain_model.init(jax.random.PRNGKey(1), x, valid)["params"]
    film_kernel = film_params["task_context"]["film_kernel"]
    assert film_kernel.shape == (3, 2 * FILM_SPEC.num_blocks + 1, 2, FILM_SPEC.dim)
    np.testing.assert_array_equal(film_kernel, 0.0)
    without = {**film_params, "task_context": {"kernel": film_params["task_context"]["kernel"]}}
    jax.tree.map(np.testing.assert_array_equal, without, plain_params)
    np.testing.assert_array_equal(film_model.apply({"params": film_params}, x, valid)[0],
                                  plain_model.apply({"params": plain_params}, x, valid)[0])


def test_a_task_film_row_moves_only_its_tasks_actions_by_the_affine_map():
    """Task 1's FiLM at the final norm with scale -1 and shift v makes its normalised
    features exactly v, so its actions are the head's affine map of v (numpy); task 0's
    and task 2's actions stay bitwise."""
    x, valid = _onehot_inputs([0, 1, 2])
    model = Student(FILM_SPEC)
    params = model.init(jax.random.PRNGKey(1), x, valid)["params"]
    v = np.linspace(-1.0, 1.0, FILM_SPEC.dim, dtype=np.float32)
    kernel = params["task_context"]["film_kernel"]
    kernel = kernel.at[1, -1, 0].set(-1.0).at[1, -1, 1].set(v)
    moved = {**params, "task_context": {**params["task_context"], "film_kernel": kernel}}
    before = np.asarray(model.apply({"params": params}, x, valid)[0])
    after = np.asarray(model.apply({"params": moved}, x, valid)[0])
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    head = params["action_head"]
    expected = v @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(after[1], np.broadcast_to(expected, after[1].shape),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(after[1], before[1])
