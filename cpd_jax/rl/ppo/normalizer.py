"""Observation normaliser of the PPO teachers: running mean/variance, applied as
(obs - mean) / std, clipped. Training updates it; a loaded teacher applies it."""

import flax.struct as struct
import jax
import jax.numpy as jnp


@struct.dataclass
class RunningStats:
    """Running mean/variance of observations (Chan et al. parallel update).

    mean, var: float32[D]; count: float32[] (starts at a tiny epsilon so the
    first update is well defined)."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init_running_stats(size: int) -> RunningStats:
    return RunningStats(mean=jnp.zeros((size,), jnp.float32),
                        var=jnp.ones((size,), jnp.float32),
                        count=jnp.asarray(1e-4, jnp.float32))


def update_running_stats(stats: RunningStats, x: jax.Array) -> RunningStats:
    """Folds the batch x float32[N, D] into `stats`."""
    n = jnp.asarray(x.shape[0], jnp.float32)
    b_mean = jnp.mean(x, axis=0)
    b_var = jnp.var(x, axis=0)
    total = stats.count + n
    delta = b_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + b_var * n + delta**2 * stats.count * n / total
    return RunningStats(mean=mean, var=m2 / total, count=total)


def normalize_obs(stats: RunningStats, obs: jax.Array, clip: float,
                  enabled: bool = True) -> jax.Array:
    """(obs - mean) / std, clipped to [-clip, clip]; obs float32[..., D]."""
    if not enabled:
        return obs
    return jnp.clip((obs - stats.mean) * jax.lax.rsqrt(stats.var + 1e-8), -clip, clip)
