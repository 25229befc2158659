"""EWC and KL penalties against numpy: the diagonal Fisher of a linear model from its
analytic gradient, the EWC quadratic by hand, and the KL term's minimum at the anchor."""

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
