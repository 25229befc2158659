"""TRAC against an independent float64 numpy implementation of the published update rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special

from cpd_jax.continual import trac as trac_lib

BETAS = trac_lib.DEFAULT_BETAS
LR, WD = 0.1, 1e-2
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # optax.adamw defaults
S_PREV, EPS, SIGMA0 = 1e-8, 1e-8, 1e-8
# Toy quadratic: loss = 0.5 * sum(a * (theta - c)^2) over a two-leaf parameter tree.
A = {"b": np.array([2.0, 0.5]), "w": np.array([[1.0, 3.0], [0.7, 1.5]])}
C = {"b": np.array([-1.0, 2.0]), "w": np.array([[1.0, -2.0], [0.5, 3.0]])}
THETA0 = {"b": np.array([0.3, -0.2]), "w": np.array([[0.1, 0.0], [-0.4, 0.2]])}


def _loss(theta):
    return sum(0.5 * np.sum(A[k] * (theta[k] - C[k]) ** 2) for k in A)


def _grad(theta):
    return {k: A[k] * (theta[k] - C[k]) for k in A}


def numpy_trac(num_steps):
    """Plain loops in float64: AdamW base, TRAC meta-step. Returns (params, scale) per step."""
    keys = sorted(A)
    theta = {k: THETA0[k].copy() for k in keys}
    ref = {k: THETA0[k].copy() for k in keys}
    m = {k: np.zeros_like(theta[k]) for k in keys}
    v = {k: np.zeros_like(theta[k]) for k in keys}
    betas = np.array(BETAS)
    s, var, sigma = np.zeros(len(betas)), np.zeros(len(betas)), np.full(len(betas), SIGMA0)
    norm = scipy.special.erfi(1 / np.sqrt(2))
    out = []
    for t in range(1, num_steps + 1):
        g = _grad(theta)
        h = 0.0
        new_theta = {}
        deltas = {}
        for k in keys:
            m[k] = ADAM_B1 * m[k] + (1 - ADAM_B1) * g[k]
            v[k] = ADAM_B2 * v[k] + (1 - ADAM_B2) * g[k] ** 2
            mhat, vhat = m[k] / (1 - ADAM_B1 ** t), v[k] / (1 - ADAM_B2 ** t)
            u = -LR * (mhat / (np.sqrt(vhat) + ADAM_EPS) + WD * theta[k])
            d_prev = (theta[k] - ref[k]) / (s.sum() + EPS)
            h += np.sum(g[k] * d_prev)
            deltas[k] = d_prev + u
        var = betas ** 2 * var + h ** 2
        sigma = betas * sigma - h
        s = S_PREV / norm * scipy.special.erfi(sigma / (np.sqrt(2) * np.sqrt(var) + EPS))
        scale = max(s.sum(), 0.0)
        for k in keys:
            new_theta[k] = ref[k] + scale * deltas[k]
        theta = new_theta
        out.append(({k: theta[k].copy() for k in keys}, scale))
    return out


def jax_trac(num_steps):
    tx = trac_lib.trac(optax.adamw(LR, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=WD),
                       betas=BETAS, s_prev=S_PREV, eps=EPS)
    a = jax.tree_util.tree_map(jnp.float32, A)
    c = jax.tree_util.tree_map(jnp.float32, C)
    loss = lambda p: sum(0.5 * jnp.sum(a[k] * (p[k] - c[k]) ** 2) for k in a)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    params = jax.tree_util.tree_map(jnp.float32, THETA0)
    state = tx.init(params)
    out = []
    for _ in range(num_steps):
        params, state = step(params, state)
        out.append((jax.device_get(params), float(trac_lib.scale(state))))
    return out


def test_erfi_matches_scipy():
    x = np.linspace(-9.0, 9.0, 721).astype(np.float32)
    np.testing.assert_allclose(trac_lib.erfi(jnp.asarray(x)), scipy.special.erfi(x.astype(float)),
                               rtol=2e-5, atol=1e-7)


@pytest.fixture(scope="module")
def trajectories():
    # 60 steps: the scale stays ~1e-8 for ~20 steps, then the tuners take off (erfi grows
    # like exp(t/2)) and the params move; the comparison covers both regimes.
    return numpy_trac(60), jax_trac(60)


def test_matches_numpy_reference(trajectories):
    ref, got = trajectories
    for t, ((p_ref, s_ref), (p_got, s_got)) in enumerate(zip(ref, got)):
        np.testing.assert_allclose(s_got, s_ref, rtol=1e-3, atol=1e-12, err_msg=f"scale, step {t}")
        for k in p_ref:
            np.testing.assert_allclose(p_got[k], p_ref[k], rtol=1e-3, atol=1e-5,
                                       err_msg=f"params[{k}], step {t}")
    assert ref[-1][1] > 1e-2  # the tuners really did take off within the compared steps


def test_reduces_toy_loss(trajectories):
    _, got = trajectories
    assert _loss(got[-1][0]) < 0.5 * _loss(THETA0)


def test_state_starts_at_reference_and_needs_params():
    tx = trac_lib.trac(optax.adam(LR))
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    assert float(trac_lib.scale(state)) == 0.0
    np.testing.assert_array_equal(state.theta_ref["w"], params["w"])
    with pytest.raises(ValueError, match="params"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="betas"):
        trac_lib.trac(optax.adam(LR), betas=(0.9, 1.0))
