"""Switch-style Mixture-of-Experts feed-forward layer whose experts are separate subtrees.

Parameter layout (what growth and freezing rely on; see `cpd_jax.student.params`):

    moe/
      gate_0/{kernel: f32[D], bias: f32[]}   router column of expert 0
      ...
      expert_0/{w_in: [D, H], b_in: [H], w_out: [H, D], b_out: [D]}
      ...

so adding an expert adds `gate_E` and `expert_E`, and an optax mask can freeze an
expert or the gate by its path. The number of experts is read off the params.

Dispatch, two paths:

* capacity_factor > 0 (Switch Transformer): tokens are scattered into a per-expert
  buffer of `capacity = capacity_factor * N * k / E` slots; choices past capacity are
  dropped (`buffer_dispatch`).
* capacity_factor <= 0 (the default; the CPU configs use it): no token is ever dropped,
  so every token's output is independent of the rest of the batch. A buffer would need
  capacity N for every expert, i.e. E FFNs over all N tokens (E/k times the routed
  work), so this path instead packs the N*k (token, choice) pairs expert by expert into blocks of
  `block_size` rows, each block belonging to one expert, and runs one batched matmul
  over the blocks (`block_dispatch`): ~(N*k + E*block_size) rows of FFN work instead of
  E*N. `jax.lax.ragged_dot` would express the same thing, but in jax 0.6.2 only TPU has
  a grouped lowering; on CPU/GPU it masks the lhs to [E, M, K] and does the dense dot,
  which measured as slow as the buffer
  (`python benchmarks/student_throughput.py --sections moe`).
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


def _ffn(x, w_in, b_in, w_out, b_out):
    """Batched expert FFN: x[G, R, D] through group g's weights w_in[G, D, H], b_in[G, H],
    w_out[G, H, D], b_out[G, D]. Returns [G, R, D]."""
    h = nn.gelu(jnp.einsum("grd,gdh->grh", x, w_in) + b_in[:, None])
    return jnp.einsum("grh,ghd->grd", h, w_out) + b_out[:, None]


def buffer_dispatch(x, expert_index, gate_weights, experts, capacity: int):
    """Switch capacity dispatch: y[N, D] = sum_k w_nk * FFN_{e_nk}(x_n) over kept choices.

    x: float[N, D]; expert_index: int32[N, k]; gate_weights: float32[N, k]; experts:
    (w_in[E, D, H], b_in[E, H], w_out[E, H, D], b_out[E, D]). Each expert gets a buffer
    of `capacity` rows, computed whether filled or not; choices past capacity are dropped
    (contribute 0). With capacity = N nothing drops and the cost is E FFNs over N rows:
    the old no-drop path, kept callable for benchmarks/student_throughput.py.
    """
    n, dim = x.shape
    num_experts = experts[0].shape[0]
    slot, kept = dispatch_slots(expert_index, num_experts, capacity)
    # Dropped choices write to a scratch slot `capacity` that is sliced away.
    slot = jnp.where(kept, slot, capacity)
    token = jnp.broadcast_to(jnp.arange(n)[:, None], slot.shape)
    buffer = jnp.zeros((num_experts, capacity + 1, dim), x.dtype)
    buffer = buffer.at[expert_index, slot].set(x[token])[:, :capacity]
    out = _ffn(buffer, *experts)  # [E, C, D]
    out = jnp.pad(out, ((0, 0), (0, 1), (0, 0)))  # scratch slot reads zeros
    picked = out[expert_index, slot]  # [N, k, D]
    weights = gate_weights * kept
    return jnp.einsum("nkd,nk->nd", picked, weights.astype(x.dtype))


# Fewer, larger blocks amortise each block's weight read (a block's matmul streams its
# expert's D x H weights once); smaller blocks waste fewer padding rows (up to E *
# (block - 1)). Measured (jitted forward+backward; BUILD_NOTES): 64 was best for
# dim 64 / hidden 256 at E = 4..12, 128 for dim 256 / hidden 1024 at E = 8, 13.
# Our reading: larger weights need longer blocks to
# amortise their reads; the switch sits between the two sizes measured, at 256 KB of f32
# per weight matrix.
_SMALL_EXPERT_WEIGHTS = 64 * 1024  # D * H elements


def default_block_size(dim: int, hidden: int) -> int:
    """Rows per block of `block_dispatch` for experts of [dim, hidden] weights."""
    return 64 if dim * hidden <= _SMALL_EXPERT_WEIGHTS else 128


def block_dispatch(x, expert_index, gate_weights, experts, block_size: int):
    """Exact no-drop dispatch: y[N, D] = sum_k w_nk * FFN_{e_nk}(x_n), for every choice.

    x: float[N, D]; expert_index: int32[N, k]; gate_weights: float32[N, k]; experts:
    (w_in[E, D, H], b_in[E, H], w_out[E, H, D], b_out[E, D]).

    The M = N*k (token, choice) pairs are laid out expert by expert, each expert's run
    padded to a multiple of `block_size` rows B, so every block of B rows belongs to one
    expert; a batched matmul runs each block through its expert's weights. All shapes
    are static: the number of blocks is the worst case over routings,
    floor((M + E*(B-1)) / B) (each expert wastes < B rows), so the FFN work is
    <= M + E*(B-1) rows whatever the routing, versus E*N for `buffer_dispatch` at
    capacity N. Unused padding rows read zeros, and their outputs are never gathered, so
    they get zero cotangents: values and gradients equal the per-token computation.
    """
    n, dim = x.shape
    k = expert_index.shape[1]
    num_experts = experts[0].shape[0]
    pairs = n * k
    block = max(1, min(block_size, pairs))  # a block longer than all pairs only pads
    num_blocks = (pairs + num_experts * (block - 1)) // block

    # rank of each pair within its expert (capacity N: nothing drops)
    rank, _ = dispatch_slots(expert_index, num_experts, n)
    counts = jnp.zeros((num_experts,), jnp.int32).at[expert_index].add(1)
    padded = (counts + block - 1) // block * block
    run_end = jnp.cumsum(padded)  # [E] end row of each expert's padded run
    row = run_end[expert_index] - padded[expert_index] + rank  # [N, k], distinct rows
    # Expert of each block: the run containing its first row. Blocks past the last run
    # (the worst case was not reached) hold only padding; clip them to a valid expert.
    block_expert = jnp.minimum(
        jnp.searchsorted(run_end, jnp.arange(num_blocks) * block, side="right"),
        num_experts - 1)

    # Gather rather than scatter x into the rows: row -> source token, token n (one past
    # the end) being a zero row for padding.
    token = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, k))
    source = jnp.full((num_blocks * block,), n, jnp.int32).at[row].set(token)
    x_rows = jnp.concatenate([x, jnp.zeros((1, dim), x.dtype)])[source]
    out = _ffn(x_rows.reshape(num_blocks, block, dim),
               *(w[block_expert] for w in experts))  # [blocks, B, D]
    picked = out.reshape(num_blocks * block, dim)[row]  # [N, k, D]
    return jnp.einsum("nkd,nk->nd", picked, gate_weights.astype(x.dtype))


class MoE(nn.Module):
    """Top-k Switch MoE FFN over float[N, D] tokens (token_mask bool/float[N] or None:
    padded tokens are still computed but do not count in the aux loss).

    Returns (y float[N, D], routing, aux_loss float32[]).

    block_size: rows per block of the no-drop dispatch (`block_dispatch`); None picks
    `default_block_size(dim, hidden)`. Only speed depends on it, never the values.
    """

    num_experts: int
    hidden: int
    top_k: int = 1
    capacity_factor: float = 0.0
    block_size: int | None = None

    @nn.compact
    def __call__(self, x, token_mask=None):
        n, dim = x.shape
        gates = [GateColumn(dim, name=f"gate_{e}")() for e in range(self.num_experts)]
        kernel = jnp.stack([g[0] for g in gates], axis=1).astype(jnp.float32)  # [D, E]
        bias = jnp.stack([g[1] for g in gates]).astype(jnp.float32)  # [E]
        routing = routing_lib.route_top_k(x.astype(jnp.float32) @ kernel + bias, self.top_k)

        experts = [Expert(dim, self.hidden, name=f"expert_{e}")() for e in range(self.num_experts)]
        experts = tuple(jnp.stack(w) for w in zip(*experts))  # each with leading axis E

        if self.capacity_factor > 0:
            capacity = expert_capacity(n, self.num_experts, self.top_k, self.capacity_factor)
            y = buffer_dispatch(x, routing.expert_index, routing.gate_weights, experts,
                                capacity)
        else:
            block = self.block_size or default_block_size(dim, self.hidden)
            y = block_dispatch(x, routing.expert_index, routing.gate_weights, experts, block)
        return y, routing, routing_lib.load_balancing_loss(routing, token_mask)
