"""PPO's loss pieces as pure functions: generalised advantage estimation, garage's
linear feature baseline (features and ridge fit), and the clipped PPO surrogate of one
minibatch (`ppo_loss`). `cpd_jax.rl.ppo.train.make_ppo` assembles them into training.

Episode ends (the env's `done` or the time limit `episode_length`) are treated as
terminal in GAE, as garage/rllab do with a time-feature linear baseline (the time
features make the truncated return predictable). See BUILD_NOTES.md, appendix D.
"""

import math

import jax
import jax.numpy as jnp

from cpd_jax.rl.ppo import networks

# ------------------------------------------------------------------------------- GAE


def compute_gae(rewards: jax.Array, values: jax.Array, dones: jax.Array,
                last_value: jax.Array, gamma: float, lam: float
                ) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a rollout.

    rewards, values, dones: float32[T, B] (dones[t] = 1: the episode ended after step
    t, so step t does not bootstrap from values[t + 1]); last_value: float32[B], the
    value of the observation after the last step.
    Returns (advantages, returns = advantages + values), both float32[T, B].
    With lam = 1 the returns are the discounted Monte-Carlo returns (bootstrapped
    with last_value where the rollout cuts an episode).
    """
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
    not_done = 1.0 - dones
    deltas = rewards + gamma * next_values * not_done - values

    def backward(carry, xs):
        delta, nd = xs
        adv = delta + gamma * lam * nd * carry
        return adv, adv

    _, adv = jax.lax.scan(backward, jnp.zeros_like(last_value), (deltas, not_done),
                          reverse=True)
    return adv, adv + values


# ------------------------------------------------------------------ linear baseline


def linear_baseline_features(obs: jax.Array, t: jax.Array, feature_clip: float,
                             time_scale: float) -> jax.Array:
    """garage/rllab LinearFeatureBaseline features.

    obs float32[..., D] (normalised obs), t int32[...] (step within the episode) ->
    float32[..., 2D + 4]: [o, o^2, t/s, (t/s)^2, (t/s)^3, 1] with o = clip(obs) and
    s = time_scale."""
    o = jnp.clip(obs, -feature_clip, feature_clip)
    tt = (t.astype(jnp.float32) / time_scale)[..., None]
    return jnp.concatenate([o, o * o, tt, tt**2, tt**3, jnp.ones_like(tt)], axis=-1)


def fit_linear_baseline(features: jax.Array, targets: jax.Array,
                        ridge: float) -> jax.Array:
    """Ridge least squares: argmin_w |F w - y|^2 + ridge |w|^2.

    features float32[N, F], targets float32[N] -> coefficients float32[F].
    Solved as an ordinary least squares problem on the augmented system
    [F; sqrt(ridge) I] w = [y; 0] (SVD-based lstsq), which is better conditioned in
    float32 than garage's normal equations (F^T F + ridge I) w = F^T y -- the same
    minimiser."""
    n_feat = features.shape[-1]
    a = jnp.concatenate([features, math.sqrt(ridge) * jnp.eye(n_feat, dtype=features.dtype)])
    b = jnp.concatenate([targets, jnp.zeros((n_feat,), targets.dtype)])
    coeffs, _, _, _ = jnp.linalg.lstsq(a, b)
    # garage retries with a larger ridge on NaN; here a non-finite fit keeps zeros
    # (value 0 = plain returns as advantages) rather than poisoning training.
    return jnp.where(jnp.all(jnp.isfinite(coeffs)), coeffs, jnp.zeros_like(coeffs))


# -------------------------------------------------------------------------- PPO loss


def ppo_loss(params, mb: dict, policy, critic, config) -> tuple[jax.Array, dict]:
    """The clipped PPO surrogate of one minibatch minus the entropy bonus, plus the
    value loss when the baseline is the MLP `critic` (None: the linear baseline, which
    is fitted outside the gradient).

    params: {'policy': ..., 'critic': ...}; mb: {'obs' (normalised) float32[M, D],
    'u' (pre-tanh action) [M, A], 'log_prob' [M] (of the rollout's policy), 'adv' [M],
    'ret' [M]}; policy, critic: the flax modules (`networks.make_policy`,
    `networks.Critic`); config: the `ppo` ConfigDict (clip_eps, entropy_coef,
    value_coef). Returns (loss float32[], metrics dict of float32[]).
    """
    c = config
    mean, log_std = policy.apply(params["policy"], mb["obs"])
    log_prob = networks.tanh_gaussian_log_prob(mb["u"], mean, log_std)
    ratio = jnp.exp(log_prob - mb["log_prob"])
    adv = mb["adv"]
    pg_loss = -jnp.mean(jnp.minimum(
        ratio * adv, jnp.clip(ratio, 1.0 - c.clip_eps, 1.0 + c.clip_eps) * adv))
    entropy = jnp.mean(networks.gaussian_entropy(log_std))
    loss = pg_loss - c.entropy_coef * entropy
    v_loss = jnp.zeros(())
    if critic is not None:
        v_loss = 0.5 * jnp.mean((critic.apply(params["critic"], mb["obs"]) - mb["ret"])**2)
        loss = loss + c.value_coef * v_loss
    approx_kl = jnp.mean((ratio - 1.0) - jnp.log(ratio))  # k3 estimator, >= 0
    clip_frac = jnp.mean((jnp.abs(ratio - 1.0) > c.clip_eps).astype(jnp.float32))
    return loss, {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy,
                  "approx_kl": approx_kl, "clip_frac": clip_frac,
                  "std": jnp.mean(jnp.exp(log_std))}
