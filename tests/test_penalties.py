"""EWC, KL and isolation penalties against numpy: the diagonal Fisher of a linear model
from its analytic gradient, the EWC quadratic by hand, the KL term's minimum at the anchor,
and the isolation terms by a loop over tokens and layers."""

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.continual import penalties


class LinearModel:
    """A stand-in with the student's `apply` signature: actions = inputs @ w + b."""

    def apply(self, variables, inputs, valid):
        del valid
        p = variables["params"]
        return inputs @ p["w"] + p["b"], {"aux_loss": jnp.zeros(())}


def _batch(rng, b=3, length=4, f=5, a=2):
    valid = rng.random((b, length)) > 0.3
    valid[:, 0] = True
    return (rng.normal(size=(b, length, f)).astype(np.float32), valid,
            rng.normal(size=(b, length, a)).astype(np.float32))


def _params(rng, f=5, a=2):
    return {"w": rng.normal(size=(f, a)).astype(np.float32),
            "b": rng.normal(size=(a,)).astype(np.float32)}


def test_diagonal_fisher_is_the_mean_squared_analytic_gradient():
    rng = np.random.default_rng(0)
    params = _params(rng)
    batches = [_batch(rng) for _ in range(3)]
    got = penalties.diagonal_fisher(LinearModel(), params, batches)
    want_w, want_b = np.zeros((5, 2)), np.zeros(2)
    for x, valid, y in batches:
        # masked MSE = sum_valid (xw + b - y)^2 / (n_valid * A); its gradient by hand
        m = valid[..., None].astype(np.float64)
        r = (x.astype(np.float64) @ params["w"] + params["b"] - y) * m
        n = valid.sum() * y.shape[-1]
        gw = 2 * np.einsum("blf,bla->fa", x, r) / n
        gb = 2 * r.sum(axis=(0, 1)) / n
        want_w += gw ** 2 / len(batches)
        want_b += gb ** 2 / len(batches)
    np.testing.assert_allclose(got["w"], want_w, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got["b"], want_b, rtol=1e-4, atol=1e-7)


def test_ewc_penalty_is_half_coef_fisher_weighted_squared_distance():
    rng = np.random.default_rng(1)
    anchor, params, fisher = _params(rng), _params(rng), jax.tree.map(np.abs, _params(rng))
    got = penalties.ewc_penalty(anchor, fisher, coef=3.0)(params, None, None)
    want = 0.5 * 3.0 * sum(np.sum(fisher[k] * (params[k] - anchor[k]) ** 2) for k in params)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    assert float(penalties.ewc_penalty(anchor, fisher, 3.0)(anchor, None, None)) == 0.0


def test_kl_penalty_is_zero_with_zero_gradient_at_the_anchor_and_grows_away():
    rng = np.random.default_rng(2)
    model, anchor = LinearModel(), _params(rng)
    x, valid, _ = _batch(rng)
    pen = penalties.kl_penalty(model, anchor, coef=2.0)
    assert float(pen(anchor, x, valid)) == 0.0
    g = jax.grad(pen)(anchor, x, valid)
    assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(g))
    moved = dict(anchor, b=anchor["b"] + 0.5)
    # shifting every action mean by 0.5 costs coef * 0.25 (masked MSE of the means)
    np.testing.assert_allclose(float(pen(moved, x, valid)), 2.0 * 0.25, rtol=1e-5)


class FixedAuxModel:
    """A stand-in for the previous stage's student whose aux is given."""

    def __init__(self, aux):
        self.aux = aux

    def apply(self, variables, inputs, valid):
        del variables, valid
        return inputs, self.aux


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_isolation_penalty_matches_a_loop_over_tokens_and_layers():
    rng = np.random.default_rng(3)
    blocks, b, length, dim, e_old, e_new = 2, 3, 4, 5, 3, 2
    n = b * length
    valid = rng.random((b, length)) > 0.3
    valid[:, 0] = True
    task_id = np.array([7, 2, 7], np.int32)  # task 7 is old, task 2 new
    prev = {"router_probs": _softmax(rng.normal(size=(blocks, n, e_old))),
            "moe_inputs": rng.normal(size=(blocks, b, length, dim))}
    now = {"router_probs": _softmax(rng.normal(size=(blocks, n, e_old + e_new))),
           "moe_inputs": rng.normal(size=(blocks, b, length, dim))}
    coefs = (0.7, 0.3, 2.0)
    pen = penalties.isolation_penalty(FixedAuxModel(prev), {}, [7, 11], *coefs)
    got = float(pen({}, np.zeros((b, length, 1), np.float32), valid,
                    task_id=task_id, aux=jax.tree.map(jnp.asarray, now)))

    kl, to_new, drift, n_old, n_new = 0.0, 0.0, 0.0, 0, 0
    for i in range(b):
        for t in range(length):
            if not valid[i, t]:
                continue
            token = i * length + t
            for layer in range(blocks):
                p, q = prev["router_probs"][layer, token], now["router_probs"][layer, token]
                if task_id[i] == 7:
                    kl += np.sum(p * (np.log(p) - np.log(q[:e_old])))
                    diff = now["moe_inputs"][layer, i, t] - prev["moe_inputs"][layer, i, t]
                    drift += np.mean(diff ** 2)
                else:
                    to_new -= np.log(q[e_old:].sum())
            n_old += task_id[i] == 7
            n_new += task_id[i] != 7
    want = (coefs[0] * kl / (blocks * n_old) + coefs[1] * to_new / (blocks * n_new)
            + coefs[2] * drift / (blocks * n_old))
    np.testing.assert_allclose(got, want, rtol=1e-4)
