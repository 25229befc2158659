"""Helpers shared by the task modules (pure jax)."""

import jax
import jax.numpy as jnp
import numpy as np

# How many candidates the bounded rejection sampler draws (Meta-World loops until the
# object-goal distance rule holds; with these ranges a candidate fails < 50% of the
# time, so 16 draws all fail with probability < 2e-5, and then the last one is used).
REJECTION_CANDIDATES = 16


def uniform(key, low, high):
    """float32[d] uniform in the box [low, high]."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    return jax.random.uniform(key, low.shape, jnp.float32, low, high)


def uniform_with_min_dist(key, low, high, min_dist: float, a=slice(0, 2), b=slice(3, 5)):
    """Like `uniform` but rejects draws with |v[a] - v[b]| < min_dist (bounded loop)."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    cands = jax.random.uniform(key, (REJECTION_CANDIDATES,) + low.shape, jnp.float32, low, high)
    ok = jnp.linalg.norm(cands[:, a] - cands[:, b], axis=-1) >= min_dist
    first_ok = jnp.where(jnp.any(ok), jnp.argmax(ok), REJECTION_CANDIDATES - 1)
    return cands[first_ok]


def quat_from_matrix_xyzw(m):
    """float32[4] (x, y, z, w): scipy `Rotation.from_matrix(m).as_quat()` incl. its sign
    convention (the largest of diag/trace decides which component is built first)."""
    m = m.reshape(3, 3)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    decision = jnp.stack([m[0, 0], m[1, 1], m[2, 2], tr])
    choice = jnp.argmax(decision)
    cands = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        q = [None] * 4
        q[i] = 1.0 - tr + 2.0 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[k] = m[k, i] + m[i, k]
        q[3] = m[k, j] - m[j, k]
        cands.append(jnp.stack(q))
    cands.append(jnp.stack([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1.0 + tr]))
    q = jnp.stack(cands)[choice]
    return q / jnp.linalg.norm(q)


def f32(x):
    return jnp.asarray(np.asarray(x, np.float64), jnp.float32)
