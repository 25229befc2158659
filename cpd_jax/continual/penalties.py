"""Penalties anchored at the previous stage's student: EWC (diagonal Fisher) and KL (the
baselines), and isolation terms (an extension of ours: old tasks keep their routes and
their MoE inputs, new tasks go to the new experts).

Each returns `penalty_fn(params, inputs float32[B, L, F], valid bool[B, L], *,
task_id int32[B], aux) -> float32[]` for `distillation.make_train_step(...,
penalty_fn=...)`, where aux is the student's aux dict of the same forward pass.
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

    def penalty(params, inputs, valid, **_):
        del inputs, valid
        terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)),
                             params, anchor_params, fisher)
        return 0.5 * coef * sum(jax.tree.leaves(terms))

    return penalty


def kl_penalty(model, anchor_params, coef: float):
    """coef * KL(pi_old || pi) on the current batch. Both policies are Gaussians with the
    same fixed std around their action means, so the KL is proportional to the squared
    distance of the means: we use the masked MSE between old and new means."""

    def penalty(params, inputs, valid, **_):
        new, _ = model.apply({"params": params}, inputs, valid)
        old, _ = model.apply({"params": anchor_params}, inputs, valid)
        return coef * distillation.masked_mse(new, jax.lax.stop_gradient(old), valid)

    return penalty


def isolation_penalty(anchor_model, anchor_params, old_task_ids, anchor_coef: float,
                      new_coef: float = 0.0, feature_coef: float = 0.0):
    """Terms that keep old tasks isolated at a stage >= 2 (extensions of ours), computed
    on the aux of the current forward pass, averaged over layers and over the (valid)
    tokens they apply to:

    anchor_coef * KL(p_prev || p) on old tasks' tokens, where p_prev are the previous
      stage's student's router probabilities float32[blocks, N, E_old] on the same inputs
      and p the current ones restricted to those experts (the new experts' probabilities
      enter through the softmax normaliser): an old task's tokens stay on the experts that
      served it, and away from the new ones;
    new_coef * -log(sum of p over the new experts) on this stage's tasks' tokens: the new
      experts take the new tasks (with top-1, a token goes to a new expert as soon as
      their mass exceeds any old expert's), instead of the old experts that phase 2 would
      then retrain;
    feature_coef * mean squared difference between the current and the previous student's
      MoE-layer inputs float32[blocks, B, L, dim] on old tasks' tokens: with a trainable
      backbone, what the old (frozen) experts and the router read for an old task stays
      where it was, while the backbone is free to change for the new tasks' tokens.

    old_task_ids: MT25 ids of the tasks introduced in earlier stages (the replay's tasks).
    """
    old = jnp.asarray(old_task_ids, jnp.int32)

    def penalty(params, inputs, valid, *, task_id, aux, **_):
        del params  # the gradient reaches them through aux (same forward pass)
        _, prev = jax.lax.stop_gradient(anchor_model.apply({"params": anchor_params},
                                                           inputs, valid))
        p_prev = prev["router_probs"]
        num_old = p_prev.shape[-1]
        p_now = aux["router_probs"]
        log_now = jnp.log(p_now[..., :num_old] + 1e-9)
        kl = jnp.sum(p_prev * (jnp.log(p_prev + 1e-9) - log_now), -1)  # [blocks, N]
        to_new = -jnp.log(jnp.sum(p_now[..., num_old:], -1) + 1e-9)  # [blocks, N]
        drift = jnp.mean(jnp.square(aux["moe_inputs"] - prev["moe_inputs"]), -1)
        drift = drift.reshape(drift.shape[0], -1)  # [blocks, N]
        is_old = jnp.repeat(jnp.isin(task_id, old), valid.shape[1])
        tokens = valid.reshape(-1)
        mean = lambda x, m: jnp.sum(x * m) / (x.shape[0] * jnp.maximum(jnp.sum(m), 1.0))
        old_tokens = (tokens & is_old).astype(kl.dtype)
        return (anchor_coef * mean(kl, old_tokens)
                + new_coef * mean(to_new, (tokens & ~is_old).astype(kl.dtype))
                + feature_coef * mean(drift, old_tokens))

    return penalty
