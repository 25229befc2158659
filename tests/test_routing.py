"""Top-k routing, the Eq. (2) aux loss, and MoE dispatch, against hand/numpy values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.student import routing
from cpd_jax.student.moe import MoE, dispatch_slots


def test_aux_loss_matches_hand_computed_value():
    # 4 tokens, 2 experts. probs rows: softmax of these logits.
    logits = jnp.log(jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]]))
    r = routing.route_top_k(logits, k=1)
    # importance = column sums = [2.6, 1.4]; mean 2: sum_e ((x_e - 2) / 2)^2 = 2 * 0.09
    # load (top-1 counts) = [3, 1]; mean 2: sum_e ((x_e - 2) / 2)^2 = 2 * 0.25
    np.testing.assert_allclose(routing.load_balancing_loss(r), 0.5 * (0.18 + 0.5), rtol=1e-5)


def test_aux_loss_ignores_masked_tokens():
    logits = jnp.log(jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]]))
    r = routing.route_top_k(logits, k=1)
    masked = routing.load_balancing_loss(r, jnp.array([1, 0, 1, 0]))
    # importance [1.2, 0.8] -> 2 * cv^2 = 0.08; load [1, 1] -> 0
    np.testing.assert_allclose(masked, 0.5 * 0.08, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_sends_each_token_to_exactly_k_experts_with_weights_summing_to_one(k):
    logits = jax.random.normal(jax.random.PRNGKey(k), (50, 6))
    r = routing.route_top_k(logits, k)
    idx = np.asarray(r.expert_index)
    assert idx.shape == (50, k)
    assert all(len(set(row)) == k for row in idx)
    np.testing.assert_allclose(np.asarray(r.gate_weights).sum(-1), 1.0, rtol=1e-6)
    # the chosen experts are the k most probable ones
    np.testing.assert_array_equal(np.sort(idx, -1),
                                  np.sort(np.argsort(-np.asarray(logits), -1)[:, :k], -1))


def test_dispatch_slots_count_per_expert_and_drop_past_capacity():
    idx = jnp.array([[0], [1], [0], [0], [1]])
    slot, kept = dispatch_slots(idx, num_experts=2, capacity=2)
    np.testing.assert_array_equal(slot[:, 0], [0, 0, 1, 2, 1])
    np.testing.assert_array_equal(kept[:, 0], [True, True, True, False, True])


def _numpy_moe(params, x, k):
    """Brute force: every token through its chosen experts, weighted."""
    e_count = sum(1 for n in params if n.startswith("expert_"))
    kernel = np.stack([params[f"gate_{e}"]["kernel"] for e in range(e_count)], 1)
    bias = np.stack([params[f"gate_{e}"]["bias"] for e in range(e_count)])
    logits = x @ kernel + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.zeros_like(x)
    for n in range(x.shape[0]):
        top = np.argsort(-probs[n])[:k]
        w = probs[n, top] / probs[n, top].sum()
        for e, we in zip(top, w):
            p = params[f"expert_{e}"]
            h = np.asarray(jax.nn.gelu(x[n] @ p["w_in"] + p["b_in"]))
            out[n] += we * (h @ p["w_out"] + p["b_out"])
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_moe_without_drops_equals_per_token_loop(k):
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12, 8)))
    layer = MoE(num_experts=4, hidden=16, top_k=k)
    params = jax.device_get(layer.init(jax.random.PRNGKey(1), x)["params"])
    y, _, _ = layer.apply({"params": params}, x)
    np.testing.assert_allclose(y, _numpy_moe(params, x, k), atol=1e-5)


def test_top_1_router_gets_gradient_from_the_task_loss():
    """A normalised top-1 weight is constant 1; the router must still learn (Switch)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    layer = MoE(num_experts=4, hidden=16, top_k=1)
    params = layer.init(jax.random.PRNGKey(1), x)["params"]

    def task_loss(p):
        y, _, _ = layer.apply({"params": p}, x)
        return jnp.sum(y ** 2)

    grads = jax.grad(task_loss)(params)
    gate_grad = sum(float(jnp.abs(grads[f"gate_{e}"]["kernel"]).sum()) for e in range(4))
    assert gate_grad > 1e-4
