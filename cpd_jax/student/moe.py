"""Switch-style Mixture-of-Experts feed-forward layer whose experts are separate subtrees.

Parameter layout (what growth and freezing rely on; see `cpd_jax.student.params`):

    moe/
      gate_0/{kernel: f32[D], bias: f32[]}   router column of expert 0
      ...
      expert_0/{w_in: [D, H], b_in: [H], w_out: [H, D], b_out: [D]}
      ...

so adding an expert adds `gate_E` and `expert_E`, and an optax mask can freeze an
expert or the gate by its path. The number of experts is read off the params.

Dispatch: tokens are scattered into a per-expert buffer of `capacity` slots
(`capacity_factor * N * k / E`, Switch Transformer). capacity_factor <= 0 means no
token is ever dropped (capacity = N), which makes every token's output independent
of the rest of the batch; the CPU configs use that.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpd_jax.student import routing as routing_lib


class Expert(nn.Module):
    """One expert's FFN weights (returned, not applied: the MoE applies all at once)."""

    dim: int
    hidden: int

    @nn.compact
    def __call__(self):
        init = nn.initializers.lecun_normal()
        return (self.param("w_in", init, (self.dim, self.hidden)),
                self.param("b_in", nn.initializers.zeros, (self.hidden,)),
                self.param("w_out", init, (self.hidden, self.dim)),
                self.param("b_out", nn.initializers.zeros, (self.dim,)))


class GateColumn(nn.Module):
    """One expert's router column: logit_e(x) = x . kernel + bias."""

    dim: int

    @nn.compact
    def __call__(self):
        return (self.param("kernel", nn.initializers.normal(0.02), (self.dim,)),
                self.param("bias", nn.initializers.zeros, ()))


def expert_capacity(num_tokens: int, num_experts: int, k: int, capacity_factor: float) -> int:
    """Slots per expert; all tokens fit when capacity_factor <= 0."""
    if capacity_factor <= 0:
        return num_tokens
    return min(num_tokens, max(1, math.ceil(capacity_factor * num_tokens * k / num_experts)))


def dispatch_slots(expert_index: jax.Array, num_experts: int, capacity: int):
    """Slot of each (token, choice) in its expert's buffer; tokens past capacity drop.

    expert_index: int32[N, k]. Returns (slot int32[N, k], kept bool[N, k]). Choices are
    served in priority order: all first choices before any second choice (Switch).
    """
    n, k = expert_index.shape
    flat = expert_index.T.reshape(-1)  # [k*N], first choices first
    onehot = jax.nn.one_hot(flat, num_experts, dtype=jnp.int32)
    position = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)
    kept = position < capacity
    return position.reshape(k, n).T, kept.reshape(k, n).T


class MoE(nn.Module):
    """Top-k Switch MoE FFN over float[N, D] tokens.

    Returns (y float[N, D], routing, aux_loss float32[]).
    """

    num_experts: int
    hidden: int
    top_k: int = 1
    capacity_factor: float = 0.0

    @nn.compact
    def __call__(self, x, token_mask=None):
        n, dim = x.shape
        gates = [GateColumn(dim, name=f"gate_{e}")() for e in range(self.num_experts)]
        kernel = jnp.stack([g[0] for g in gates], axis=1).astype(jnp.float32)  # [D, E]
        bias = jnp.stack([g[1] for g in gates]).astype(jnp.float32)  # [E]
        routing = routing_lib.route_top_k(x.astype(jnp.float32) @ kernel + bias, self.top_k)

        experts = [Expert(dim, self.hidden, name=f"expert_{e}")() for e in range(self.num_experts)]
        w_in, b_in, w_out, b_out = (jnp.stack(w) for w in zip(*experts))  # leading axis E

        capacity = expert_capacity(n, self.num_experts, self.top_k, self.capacity_factor)
        slot, kept = dispatch_slots(routing.expert_index, self.num_experts, capacity)
        # Dropped choices write to a scratch slot `capacity` that is sliced away.
        slot = jnp.where(kept, slot, capacity)
        token = jnp.broadcast_to(jnp.arange(n)[:, None], slot.shape)
        buffer = jnp.zeros((self.num_experts, capacity + 1, dim), x.dtype)
        buffer = buffer.at[routing.expert_index, slot].set(x[token])[:, :capacity]
        h = nn.gelu(jnp.einsum("ecd,edh->ech", buffer, w_in) + b_in[:, None])
        out = jnp.einsum("ech,ehd->ecd", h, w_out) + b_out[:, None]  # [E, C, D]
        out = jnp.pad(out, ((0, 0), (0, 1), (0, 0)))  # scratch slot reads zeros
        picked = out[routing.expert_index, slot]  # [N, k, D]
        weights = routing.gate_weights * kept
        y = jnp.einsum("nkd,nk->nd", picked, weights.astype(x.dtype))
        return y, routing, routing_lib.load_balancing_loss(routing, token_mask)
