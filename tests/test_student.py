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
