"""TRAC: a parameter-free meta-optimizer for lifelong RL, as an optax transformation.

Muppidi, Zhang & Yang, "Fast TRAC: A Parameter-Free Optimizer for Lifelong Reinforcement
Learning", NeurIPS 2024 (arXiv 2405.16642); the update rule follows the authors' PyTorch
package (`trac_optimizer/trac.py`, github.com/ComputationalRobotics/TRAC).

TRAC keeps the parameters on a ray from a fixed reference point,

    theta_t = theta_ref + S_t * Delta_t,

where Delta_t accumulates the base optimizer's updates and the scale S_t = max(sum_b s_b, 0)
is tuned online by one erfi-potential "tuner" per discount beta_b. Per step, with g the raw
gradient at theta_t and u the base optimizer's update:

    delta_prev = (theta_t - theta_ref) / (sum(s) + eps)       # Delta_t recovered from theta
    h          = <g, delta_prev>                              # 1-d "gradient" w.r.t. S
    Delta      = delta_prev + u
    v_b        = beta_b^2 v_b + h^2                           # discounted variance
    sigma_b    = beta_b sigma_b - h                           # discounted (negative) sum
    s_b        = s_prev / erfi(1/sqrt2) * erfi(sigma_b / (sqrt2 sqrt(v_b) + eps))
    theta_t+1  = theta_ref + max(sum_b s_b, 0) * Delta

Initial state (as in the reference): s = 0, v = 0, sigma = 1e-8 (`SIGMA_INIT`), theta_ref =
the params passed to `init`, Delta = 0.

One deliberate difference in *how* (not what) is computed: the reference recovers Delta
from the params, (theta - theta_ref) / (sum(s) + eps). In float32 that is rounding noise
while S ~ s_prev = 1e-8 (the first tens of steps): theta - theta_ref is below the resolution
of theta. We store Delta in the state instead and use the identity theta - theta_ref =
S * Delta, i.e. delta_prev = Delta * S / (sum(s) + eps), which equals the reference's value
in exact arithmetic (including the reset to 0 when sum(s) <= 0 clips S to 0).

Caveats:
* Not for use under freezing masks: a leaf whose base update is zero still moves, because
  theta - theta_ref is rescaled by S_{t+1} / S_t every step. Use TRAC as the standalone
  baseline it is in the paper (Table 2 "Trac").
* erfi grows like exp(x^2); if the tuner's argument passes ~9.4 float32 overflows, S becomes
  inf and the params NaN. The reference raises ValueError there; here the NaN reaches the
  loss and `distillation.distill`'s non-finite guard stops the run.
"""

from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_BETAS = (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)
SIGMA_INIT = 1e-8  # the reference's initial sigma; makes the first tuner argument beta

# erfi(x) = 2/sqrt(pi) sum_n x^(2n+1) / (n! (2n+1)): all terms positive, so the series is
# accurate in float32 up to |x| = _SERIES_MAX with _SERIES_TERMS terms (the term ratio x^2/n
# is < 0.32 beyond n = 80 at x = 5). Above it the asymptotic expansion
# erfi(x) ~ exp(x^2) / (x sqrt(pi)) sum_k (2k-1)!! / (2x^2)^k is accurate to float32 with
# _ASYMPTOTIC_TERMS terms (at x = 5 the terms shrink until k ~ 2x^2 = 50).
_SERIES_MAX = 5.0
_SERIES_TERMS = 96
_ASYMPTOTIC_TERMS = 24


def erfi(x: jax.Array) -> jax.Array:
    """Imaginary error function, elementwise (float32 in, float32 out; inf past |x| ~ 9.4)."""
    x = jnp.asarray(x, jnp.float32)
    ax = jnp.abs(x)
    x2 = jnp.square(jnp.minimum(ax, _SERIES_MAX))

    def series_term(n, carry):
        term, total = carry  # term = x^(2n+1) / n!
        term = term * x2 / n
        return term, total + term / (2 * n + 1)

    xs = jnp.minimum(ax, _SERIES_MAX)
    _, series = jax.lax.fori_loop(1, _SERIES_TERMS, series_term, (xs, xs))
    series = series * (2.0 / np.sqrt(np.pi))

    big = jnp.maximum(ax, _SERIES_MAX)
    inv = 1.0 / (2.0 * jnp.square(big))

    def asymptotic_term(k, carry):
        term, total = carry  # term = (2k-1)!! / (2x^2)^k
        term = term * (2 * k - 1) * inv
        return term, total + term

    _, tail = jax.lax.fori_loop(1, _ASYMPTOTIC_TERMS, asymptotic_term,
                                (jnp.ones_like(big), jnp.ones_like(big)))
    asymptotic = jnp.exp(jnp.square(big)) / (big * np.sqrt(np.pi)) * tail
    return jnp.sign(x) * jnp.where(ax <= _SERIES_MAX, series, asymptotic)


class TracState(NamedTuple):
    base_state: optax.OptState
    theta_ref: chex.ArrayTree  # the reference point (params at init)
    delta: chex.ArrayTree  # Delta: the accumulated base-optimizer updates (float32 leaves)
    s: jax.Array  # float32[num_betas] per-tuner scales
    variance: jax.Array  # float32[num_betas] discounted sums of h^2
    sigma: jax.Array  # float32[num_betas] discounted sums of -h
    count: jax.Array  # int32[] steps taken


def scale(state: TracState) -> jax.Array:
    """The current S = max(sum(s), 0) (for logging; 0 before the first step)."""
    return jnp.maximum(jnp.sum(state.s), 0.0)


def trac(base: optax.GradientTransformation, betas: Sequence[float] = DEFAULT_BETAS,
         s_prev: float = 1e-8, eps: float = 1e-8) -> optax.GradientTransformation:
    """Wraps `base` (e.g. `optax.adamw(lr)`) with TRAC. `update` needs `params`.

    betas: discounts of the tuners; s_prev: the initial scale (the tuners' "prior" wealth);
    eps: keeps the divisions finite. Returns updates such that
    `optax.apply_updates(params, updates) == theta_ref + S * Delta` (up to float rounding).
    """
    betas_arr = jnp.asarray(betas, jnp.float32)
    if betas_arr.ndim != 1 or not bool(jnp.all((betas_arr > 0) & (betas_arr < 1))):
        raise ValueError(f"betas must be a sequence of numbers in (0, 1), got {betas}")
    num = len(betas)
    # erfi(1/sqrt2) normalises the tuner so that s_b = s_prev at the argument 1/sqrt2.
    normaliser = float(erfi(jnp.float32(1.0 / np.sqrt(2.0))))

    def init_fn(params):
        return TracState(base_state=base.init(params),
                         theta_ref=jax.tree_util.tree_map(jnp.asarray, params),
                         delta=jax.tree_util.tree_map(
                             lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params),
                         s=jnp.zeros((num,), jnp.float32),
                         variance=jnp.zeros((num,), jnp.float32),
                         sigma=jnp.full((num,), SIGMA_INIT, jnp.float32),
                         count=jnp.zeros((), jnp.int32))

    def update_fn(grads, state: TracState, params=None):
        if params is None:
            raise ValueError("trac: update() needs the current params")
        base_updates, base_state = base.update(grads, state.base_state, params)
        old_sum = jnp.sum(state.s)
        # = (theta - theta_ref) / (sum(s) + eps) of the reference, without the cancellation.
        recover = jnp.maximum(old_sum, 0.0) / (old_sum + eps)
        delta_prev = jax.tree_util.tree_map(lambda d: d * recover, state.delta)
        h = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                               jax.tree_util.tree_leaves(delta_prev)))
        h = jnp.asarray(h, jnp.float32)
        delta = jax.tree_util.tree_map(lambda d, u: d + u.astype(jnp.float32), delta_prev,
                                       base_updates)
        variance = jnp.square(betas_arr) * state.variance + jnp.square(h)
        sigma = betas_arr * state.sigma - h
        s = (s_prev / normaliser) * erfi(sigma / (np.sqrt(2.0) * jnp.sqrt(variance) + eps))
        new_scale = jnp.maximum(jnp.sum(s), 0.0)
        updates = jax.tree_util.tree_map(lambda r, d, p: (r + new_scale * d - p).astype(p.dtype),
                                         state.theta_ref, delta, params)
        return updates, TracState(base_state=base_state, theta_ref=state.theta_ref,
                                  delta=delta, s=s,
                                  variance=variance, sigma=sigma, count=state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)
