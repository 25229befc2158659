"""Switch-style top-k routing and the paper's load-balancing loss (Eq. 2).

The router runs in float32 whatever the model's dtype (flaxformer's advice: routing
decisions are sensitive to rounding). Everything here is a pure function of arrays.
"""

import chex
import jax
import jax.numpy as jnp


@chex.dataclass(frozen=True)
class Routing:
    """Which experts each token goes to, and with what weight.

    expert_index: int32[N, k]   the k chosen experts per token, best first.
    gate_weights: float32[N, k] their probabilities renormalised to sum to 1.
    router_probs: float32[N, E] softmax of the router logits.
    """

    expert_index: jax.Array
    gate_weights: jax.Array
    router_probs: jax.Array


def route_top_k(router_logits: jax.Array, k: int) -> Routing:
    """Top-k routing of float[N, E] logits (k <= E)."""
    probs = jax.nn.softmax(router_logits.astype(jnp.float32), axis=-1)
    top_probs, top_index = jax.lax.top_k(probs, k)
    # Normalised weights (they sum to 1), but the normaliser is a stop-gradient: with a
    # differentiated normaliser a top-1 weight is p/p == 1 and the router would get no
    # gradient from the task loss at all (only from the aux loss). This way the value is
    # the normalised weight and the gradient is Switch's (d y / d p_i = expert_i(x) / sum).
    weights = top_probs / jax.lax.stop_gradient(jnp.sum(top_probs, axis=-1, keepdims=True))
    return Routing(expert_index=top_index.astype(jnp.int32), gate_weights=weights,
                   router_probs=probs)


def _summed_squared_deviation(x: jax.Array) -> jax.Array:
    """sum_e ((x_e - mean(x)) / mean(x))^2 over the E entries of float[E], i.e.
    E * CV(x)^2: Eq. (2) sums the squared coefficients of variation over the experts
    (a mean over experts would weaken the term by 1/E and more so as experts are added)."""
    mean = jnp.mean(x)
    return jnp.sum(jnp.square(x - mean)) / (mean**2 + 1e-10)


def expert_importance_and_load(routing: Routing, token_mask: jax.Array | None = None):
    """Per-expert importance (sum of router probs) and load (tokens assigned).

    token_mask: bool/float[N] or None; padded tokens do not count.
    Returns (importance float32[E], load float32[E]).
    """
    num_experts = routing.router_probs.shape[-1]
    mask = (jnp.ones(routing.router_probs.shape[:1]) if token_mask is None
            else token_mask.astype(jnp.float32))
    importance = jnp.sum(routing.router_probs * mask[:, None], axis=0)
    assigned = jax.nn.one_hot(routing.expert_index, num_experts).sum(axis=1)  # [N, E]
    load = jnp.sum(assigned * mask[:, None], axis=0)
    return importance, load


def load_balancing_loss(routing: Routing, token_mask: jax.Array | None = None) -> jax.Array:
    """Eq. (2): L_aux = (sum_e CV_e(importance)^2 + sum_e CV_e(load)^2) / 2, a float32
    scalar, with CV_e(x)^2 = ((x_e - mean x) / mean x)^2 summed over the E experts."""
    importance, load = expert_importance_and_load(routing, token_mask)
    return 0.5 * (_summed_squared_deviation(importance) + _summed_squared_deviation(load))
