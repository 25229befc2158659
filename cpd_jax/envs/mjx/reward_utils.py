"""jax.numpy port of `metaworld.utils.reward_utils` (the dm_control tolerance family).

Only the pieces the MT10 v3 rewards use. Every function works on scalars (float32[])
and keeps metaworld's branch structure with `jnp.where` so it can run under `jit`.
"""

import jax.numpy as jnp

_DEFAULT_VALUE_AT_MARGIN = 0.1


def _sigmoid(x, value_at_1: float, sigmoid: str):
    """Maps distance-in-margins x >= 0 to (0, 1]; 1 at x == 0 (metaworld `_sigmoids`)."""
    if sigmoid == "gaussian":
        scale = jnp.sqrt(-2.0 * jnp.log(value_at_1))
        return jnp.exp(-0.5 * (x * scale) ** 2)
    if sigmoid == "long_tail":
        scale = jnp.sqrt(1.0 / value_at_1 - 1.0)
        return 1.0 / ((x * scale) ** 2 + 1.0)
    if sigmoid == "reciprocal":
        scale = 1.0 / value_at_1 - 1.0
        return 1.0 / (jnp.abs(x) * scale + 1.0)
    if sigmoid == "linear":
        scaled = x * (1.0 - value_at_1)
        return jnp.where(jnp.abs(scaled) < 1.0, 1.0 - scaled, 0.0)
    raise ValueError(f"sigmoid {sigmoid!r} not ported")


def tolerance(x, bounds=(0.0, 0.0), margin=0.0, sigmoid: str = "gaussian",
              value_at_margin: float = _DEFAULT_VALUE_AT_MARGIN):
    """1 inside [lower, upper], decaying with distance/margin outside (metaworld `tolerance`).

    `margin` may be a traced scalar; margin == 0 gives a hard 0/1 step as in metaworld.
    """
    lower, upper = bounds
    in_bounds = jnp.logical_and(lower <= x, x <= upper)
    safe_margin = jnp.where(margin == 0, 1.0, margin)  # avoid 0/0 in the unused branch
    d = jnp.where(x < lower, lower - x, x - upper) / safe_margin
    soft = jnp.where(in_bounds, 1.0, _sigmoid(d, value_at_margin, sigmoid))
    hard = jnp.where(in_bounds, 1.0, 0.0)
    return jnp.where(margin == 0, hard, soft)


def hamacher_product(a, b):
    """(a b) / (a + b - a b), 0 where the denominator is 0 (metaworld `hamacher_product`)."""
    denom = a + b - a * b
    return jnp.where(denom > 0, a * b / jnp.where(denom > 0, denom, 1.0), 0.0)


def rect_prism_tolerance(curr, zero, one):
    """Product of per-axis fractions if `curr` is in the prism spanned by zero/one, else 1."""
    lo, hi = jnp.minimum(zero, one), jnp.maximum(zero, one)
    in_prism = jnp.all((lo <= curr) & (curr <= hi))
    scale = jnp.prod((curr - zero) / (one - zero))
    return jnp.where(in_prism, scale, 1.0)
