"""Regularisation baselines: EWC (diagonal Fisher) and KL to the previous student.

Each returns `penalty_fn(params, inputs float32[B, L, F], valid bool[B, L]) -> float32[]`
for `distillation.make_train_step(..., penalty_fn=...)`.
"""

import jax
import jax.numpy as jnp

from cpd_jax import distillation


def diagonal_fisher(model, params, batches, aux_coef=0.0):
    """Empirical diagonal Fisher of the distillation loss: mean over `batches` of the
    squared minibatch gradient (a cheap stand-in for per-sample squared gradients).

    batches: list of (inputs float32[B, L, F], valid bool[B, L], targets float32[B, L, A]).
    """

    def loss(p, inputs, valid, targets):
        predicted, aux = model.apply({"params": p}, inputs, valid)
        return distillation.masked_mse(predicted, targets, valid) + aux_coef * aux["aux_loss"]

    grad = jax.jit(jax.grad(loss))
    total = jax.tree.map(jnp.zeros_like, params)
    for inputs, valid, targets in batches:
        g = grad(params, inputs, valid, targets)
        total = jax.tree.map(lambda t, x: t + x * x, total, g)
    return jax.tree.map(lambda t: t / len(batches), total)


def ewc_penalty(anchor_params, fisher, coef: float):
    """coef/2 * sum_i F_i (theta_i - theta*_i)^2 (Kirkpatrick et al. 2017)."""

    def penalty(params, inputs, valid):
        del inputs, valid
        terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)),
                             params, anchor_params, fisher)
        return 0.5 * coef * sum(jax.tree.leaves(terms))

    return penalty


def kl_penalty(model, anchor_params, coef: float):
    """coef * KL(pi_old || pi) on the current batch. Both policies are Gaussians with the
    same fixed std around their action means, so the KL is proportional to the squared
    distance of the means: we use the masked MSE between old and new means."""

    def penalty(params, inputs, valid):
        new, _ = model.apply({"params": params}, inputs, valid)
        old, _ = model.apply({"params": anchor_params}, inputs, valid)
        return coef * distillation.masked_mse(new, jax.lax.stop_gradient(old), valid)

    return penalty
