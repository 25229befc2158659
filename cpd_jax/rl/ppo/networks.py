"""PPO teacher networks (policy, MLP critic) and the tanh-squashed Gaussian policy
distribution. `make_policy` is the one policy network training builds and a loaded
teacher (`cpd_jax.teachers.ppo_teacher`) applies.

Networks are flax modules used as `(init, apply)` pairs (brax style). The policy
outputs a pre-tanh Gaussian (mean from one MLP, log-std from a separate MLP "head",
as garage's GaussianMLPPolicy with `std_share_network=False`); actions are
`tanh(u)` with `u ~ N(mean, std)`.
"""

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh, "relu": jax.nn.relu, "silu": jax.nn.silu}

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


class MLP(nn.Module):
    """Plain MLP: hidden layers with `activation`, a linear output of size `out`."""

    hidden: Sequence[int]
    out: int
    activation: str = "tanh"
    out_scale: float = 1.0  # scale of the last layer's init (small => near-zero output)
    out_bias: float = 0.0  # constant init of the last layer's bias

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for h in self.hidden:
            x = act(nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)))(x))
        return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(self.out_scale),
                        bias_init=nn.initializers.constant(self.out_bias))(x)


class GaussianPolicy(nn.Module):
    """obs float32[..., D] -> (mean float32[..., A], log_std float32[..., A]) of u."""

    action_size: int
    hidden: Sequence[int]
    std_hidden: Sequence[int]
    activation: str
    init_std: float
    min_std: float
    max_std: float
    mean_out_scale: float

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = MLP(self.hidden, self.action_size, self.activation,
                   out_scale=self.mean_out_scale, name="mean")(obs)
        # The std head starts at init_std everywhere (zero kernel init scale on the
        # output layer would freeze gradients to the hidden layers, so use a small one).
        log_std = MLP(self.std_hidden, self.action_size, self.activation,
                      out_scale=self.mean_out_scale, out_bias=math.log(self.init_std),
                      name="log_std")(obs)
        log_std = jnp.clip(log_std, math.log(self.min_std), math.log(self.max_std))
        return mean, log_std


def make_policy(ppo_config, action_size: int) -> GaussianPolicy:
    """The policy network of `ppo_config` (the `ppo` ConfigDict, or the copy of it a
    trained teacher's metadata keeps): training and the loaded teacher build it here,
    so a teacher always applies the network it was trained with."""
    c = ppo_config
    return GaussianPolicy(
        action_size=action_size, hidden=tuple(c.policy_hidden),
        std_hidden=tuple(c.std_hidden), activation=c.activation, init_std=c.init_std,
        min_std=c.min_std, max_std=c.max_std, mean_out_scale=c.policy_out_scale)


class Critic(nn.Module):
    """obs float32[..., D] -> value float32[...]."""

    hidden: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden, 1, self.activation)(obs)[..., 0]


def gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log N(u; mean, diag(exp(log_std)^2)); inputs float32[..., A] -> float32[...]."""
    z = (u - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z * z - log_std - 0.5 * _LOG_2PI, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """sum_i log |d tanh(u_i) / du_i| = sum_i log(1 - tanh(u_i)^2), float32[..., A] ->
    float32[...]. Written as 2 (log 2 - u - softplus(-2u)), which stays finite where
    tanh(u) rounds to +-1 (the naive form gives log 0 there)."""
    return jnp.sum(2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log density of the action a = tanh(u) at a = tanh(u), by change of variables:
    log p_a(a) = log N(u) - log |det da/du|. float32[..., A] -> float32[...].

    Taking the pre-tanh sample u (not a) avoids atanh of actions that round to +-1.
    In the PPO ratio the Jacobian term cancels (same u under old and new policy)."""
    return gaussian_log_prob(u, mean, log_std) - tanh_log_det_jacobian(u)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of the pre-tanh Gaussian, float32[..., A] -> float32[...]. (The squashed
    distribution's entropy has no closed form; this is the usual surrogate.)"""
    return jnp.sum(log_std + 0.5 * (_LOG_2PI + 1.0), axis=-1)
