"""Switch-style Mixture-of-Experts feed-forward layer whose experts are separate subtrees.

Parameter layout (what growth and freezing rely on; see `cpd_jax.student.params`):

    moe/
      gate_0/{kernel: f32[D], bias: f32[]}   router column of expert 0
      ...
      expert_0/{w_in: [D, H], b_in: [H], w_out: [H, D], b_out: [D]}
      ...

so adding an expert adds `gate_E` and `expert_E`, and an optax mask can freeze an
expert or the gate by its path. The number of experts is read off the params.

Dispatch:

* capacity_factor > 0 (Switch Transformer): tokens are scattered into a per-expert
  buffer of `capacity = capacity_factor * N * k / E` slots; choices past capacity are
  dropped (`buffer_dispatch`).
* capacity_factor <= 0 (the default; the CPU configs use it): no token is ever dropped,
  so every token's output is independent of the rest of the batch. A buffer would need
  capacity N for every expert, i.e. E FFNs over all N tokens (E/k times the routed
  work), so the N*k (token, choice) pairs are sorted expert by expert instead, and each
  expert runs only over its own rows. Two ways, the same values:
  - `block_dispatch`: each expert's run padded to a multiple of `block_size` rows, one
    batched matmul over a static worst-case number of blocks (~N*k + E*(B-1) rows) with
    the experts' weights gathered per block. One big op: the choice on accelerators and
    for small experts on CPU.
  - `chunk_dispatch`: a loop over experts (`grouped_ffn`, custom VJP); each expert's rows
    run in chunks of 512 rows and one last chunk of 64, 128, ..., 512 (`CHUNK_SIZES`),
    so the work is the rows actually routed (+ < 64 per expert), and the backward
    accumulates each expert's weight gradient in the loop (no per-block weight copies,
    no scatter-add). Faster on CPU for the paper's experts (dim 256 x 1024) and slower
    for the CPU configs' (dim 64 x 256), whose blocks are one cheap op; on a GPU a loop
    of small matmuls is latency-bound. So `MoE` takes it on CPU for large experts only
    (`jax.lax.platform_dependent`).
  `jax.lax.ragged_dot` would express the same thing, but in jax 0.6.2 only TPU has a
  grouped lowering; on CPU/GPU it masks the lhs to [E, M, K] and does the dense dot,
  which measured as slow as the buffer
  (`python benchmarks/student_throughput.py --sections moe`).

One module despite its length: the three dispatches (buffer, block, chunk) are
alternatives inside the one `MoE` layer, each tested against the same per-token loop.
"""

import contextlib
import functools
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
    # Expert of each block: the run containing its first row, i.e. the number of runs
    # that end at or before it. Blocks past the last run (the worst case was not
    # reached) hold only padding; clip them to a valid expert.
    starts = jnp.arange(num_blocks, dtype=jnp.int32) * block
    block_expert = jnp.minimum(jnp.sum(run_end[None, :] <= starts[:, None], axis=1,
                                       dtype=jnp.int32), num_experts - 1)

    # Rows <-> pairs both ways (a pair index `pairs` = padding), so that x moves into the
    # rows and the outputs back with gathers whose backward is a gather too (`take_rows`).
    row = row.reshape(-1)  # pair p = (token p // k, choice p % k)
    pair_of_row = jnp.full((num_blocks * block,), pairs, jnp.int32).at[row].set(
        jnp.arange(pairs, dtype=jnp.int32))
    token_of_row = jnp.where(pair_of_row < pairs, pair_of_row // k, n)
    x_rows = take_rows(x, token_of_row, row.reshape(n, k))
    out = _ffn(x_rows.reshape(num_blocks, block, dim),
               *(w[block_expert] for w in experts))  # [blocks, B, D]
    picked = take_rows(out.reshape(num_blocks * block, dim), row, pair_of_row[:, None])
    return jnp.einsum("nkd,nk->nd", picked.reshape(n, k, dim), gate_weights.astype(x.dtype))


@jax.custom_vjp
def take_rows(x, index, inverse):
    """x[index] for x: float[R, D] and index: int[S] (an index >= R reads a zero row),
    whose VJP is a gather too: dx[r] = sum_j ct[inverse[r, j]] (inverse: int[R, m], the
    rows of the result that read row r; an entry >= S is none). Moving rows between the
    token order and the expert order with this keeps scatter-adds out of the backward."""
    return jnp.take(x, index, axis=0, mode="fill", fill_value=0)


def _take_rows_fwd(x, index, inverse):
    return take_rows(x, index, inverse), (index, inverse)


def _take_rows_bwd(res, ct):
    index, inverse = res
    dx = jnp.take(ct, inverse, axis=0, mode="fill", fill_value=0).sum(axis=1)
    return dx, None, None


take_rows.defvjp(_take_rows_fwd, _take_rows_bwd)


def _check_sizes(sizes):
    if not sizes or sizes[0] < 1 or any(a >= b for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"chunk sizes {sizes}: need increasing positive sizes")


def _overrun(sizes) -> int:
    """The most rows a `_cover` chunk can run past its rows: the largest gap between
    consecutive sizes, minus 1."""
    return max(b - a for a, b in zip((0,) + tuple(sizes), sizes)) - 1


def _cover(start, size, sizes, fn, carry):
    """Runs carry = fn(s, pos, carry) over chunks that cover rows [start, start + size)
    in increasing order: floor(size / sizes[-1]) chunks of the largest size, then one
    chunk of the smallest size that holds the rest (`lax.switch`; none if no rows are
    left), which may run up to `_overrun(sizes)` rows past the end."""
    big = sizes[-1]
    n_big = size // big
    carry = jax.lax.fori_loop(0, n_big, lambda j, c: fn(big, start + j * big, c), carry)
    pos, rest = start + n_big * big, size - n_big * big
    index = sum((rest > s).astype(jnp.int32) for s in (0,) + tuple(sizes[:-1]))
    branches = [lambda c: c] + [functools.partial(fn, s, pos) for s in sizes]
    return jax.lax.switch(index, branches, carry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def grouped_ffn(rows, experts, bounds, sizes):
    """out[r] = FFN_e(rows[r]) for the rows r in [bounds[e], bounds[e+1]) of each expert e.

    rows: float[R, D], sorted expert by expert, with R >= bounds[E] + `_overrun(sizes)`
    (the last chunk of an expert may run past its end); experts: (w_in[E, D, H],
    b_in[E, H], w_out[E, H, D], b_out[E, D]); bounds: int32[E + 1], nondecreasing;
    sizes: static increasing chunk sizes (`CHUNK_SIZES`). Rows past bounds[E] are
    garbage in `out` and get no gradient.

    A scan over experts; each expert's rows are covered by `_cover` chunks, each a
    [s, D] x [D, H] and [s, H] x [H, D] matmul with the expert's weights. A chunk that
    runs past its expert's rows writes rows of a later expert (or the padding), which
    that expert, run later, overwrites; in the backward those rows' cotangents are
    masked to zero, so they add nothing to this expert's weight gradient. The backward
    runs the same chunks and accumulates the expert's weight gradients in the loop.
    """
    return _grouped_ffn_fwd(rows, experts, bounds, sizes)[0]


def _grouped_ffn_fwd(rows, experts, bounds, sizes):
    _check_sizes(sizes)
    w_in, b_in, w_out, b_out = experts
    dtype = jnp.result_type(rows, w_in)

    # A scan over experts. (A Python loop, which lets XLA read the weights where `MoE`
    # stacked them from, ran no faster in the train step and doubled its compile time.)
    def expert(carry, xs):
        wi, bi, wo, bo, start, size = xs

        def chunk(s, pos, c):
            out, pre = c
            p = jax.lax.dynamic_slice_in_dim(rows, pos, s) @ wi + bi
            y = nn.gelu(p) @ wo + bo
            return (jax.lax.dynamic_update_slice_in_dim(out, y.astype(out.dtype), pos, 0),
                    jax.lax.dynamic_update_slice_in_dim(pre, p.astype(pre.dtype), pos, 0))

        return _cover(start, size, sizes, chunk, carry), None

    init = (jnp.zeros((rows.shape[0], w_out.shape[2]), dtype),
            jnp.zeros((rows.shape[0], w_in.shape[2]), dtype))
    (out, pre), _ = jax.lax.scan(expert, init,
                                 (w_in, b_in, w_out, b_out, bounds[:-1], jnp.diff(bounds)))
    return out, (rows, pre, w_in, w_out, bounds)


def _grouped_ffn_bwd(sizes, res, ct):
    rows, pre, w_in, w_out, bounds = res

    def expert(d_rows, xs):
        wi, wo, start, size = xs

        def chunk(s, pos, c):
            d_rows, dwi, dbi, dwo, dbo = c
            valid = pos - start + jnp.arange(s) < size  # rows past the expert's own: 0
            dy = jnp.where(valid[:, None], jax.lax.dynamic_slice_in_dim(ct, pos, s), 0)
            g, gelu_vjp = jax.vjp(nn.gelu, jax.lax.dynamic_slice_in_dim(pre, pos, s))
            dp = gelu_vjp((dy @ wo.T).astype(g.dtype))[0]
            x = jax.lax.dynamic_slice_in_dim(rows, pos, s)
            return (jax.lax.dynamic_update_slice_in_dim(
                        d_rows, (dp @ wi.T).astype(d_rows.dtype), pos, 0),
                    dwi + (x.T @ dp).astype(dwi.dtype), dbi + dp.sum(0).astype(dbi.dtype),
                    dwo + (g.T @ dy).astype(dwo.dtype), dbo + dy.sum(0).astype(dbo.dtype))

        zeros = (jnp.zeros_like(wi), jnp.zeros(wi.shape[1], wi.dtype),
                 jnp.zeros_like(wo), jnp.zeros(wo.shape[1], wo.dtype))
        d_rows, *grads = _cover(start, size, sizes, chunk, (d_rows, *zeros))
        return d_rows, tuple(grads)

    d_rows, grads = jax.lax.scan(expert, jnp.zeros_like(rows),
                                 (w_in, w_out, bounds[:-1], jnp.diff(bounds)))
    return d_rows, grads, None


grouped_ffn.defvjp(_grouped_ffn_fwd, _grouped_ffn_bwd)


# Chunks: each expert's rows run in chunks of the largest size, then one chunk of the
# smallest size that holds the rest. On the 2-core CPU a [s, D] x [D, H] matmul costs
# more per row the fewer rows s it has, and every chunk is a few more ops in the loop,
# so few large chunks beat little padding: with these sizes an expert of c rows runs
# floor(c / 512) + 1 chunks and at most 63 padding rows. Measured against other sizes:
# BUILD_NOTES, "Student train-step throughput and MoE dispatch (CPU)".
CHUNK_SIZES = tuple(range(64, 513, 64))


def chunk_dispatch(x, expert_index, gate_weights, experts, sizes=CHUNK_SIZES):
    """Exact no-drop dispatch: y[N, D] = sum_k w_nk * FFN_{e_nk}(x_n), for every choice.

    Same arguments as `block_dispatch`, but `sizes` (static) are the chunk sizes of
    `grouped_ffn`. The N*k pairs are sorted by expert once (argsort); the rows move to
    expert order and back with `take_rows`, whose backward gathers through the inverse
    permutation, and `grouped_ffn` runs each expert over its own rows only.
    """
    n, dim = x.shape
    k = expert_index.shape[1]
    num_experts = experts[0].shape[0]
    pairs = n * k
    _check_sizes(sizes)
    # a chunk longer than all pairs only pads (and could not be sliced out of the rows)
    sizes = tuple(s for s in sizes if s <= pairs) or tuple(sizes[:1])
    flat = expert_index.reshape(-1)  # pair p = (token p // k, choice p % k)
    order = jnp.argsort(flat, stable=True).astype(jnp.int32)  # row -> pair
    counts = jnp.zeros((num_experts,), jnp.int32).at[flat].add(1)
    bounds = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(counts, dtype=jnp.int32)])
    # rows past the pairs: padding the last chunk may run into (a pair index >= pairs
    # reads zeros and receives nothing)
    pair_of_row = jnp.concatenate([order, jnp.full((_overrun(sizes),), pairs, jnp.int32)])
    row_of_pair = jnp.zeros((pairs,), jnp.int32).at[order].set(
        jnp.arange(pairs, dtype=jnp.int32))
    token_of_row = jnp.where(pair_of_row < pairs, pair_of_row // k, n)
    x_rows = take_rows(x, token_of_row, row_of_pair.reshape(n, k))
    out_rows = grouped_ffn(x_rows, experts, bounds, sizes)
    picked = take_rows(out_rows, row_of_pair, pair_of_row[:, None]).reshape(n, k, dim)
    return jnp.einsum("nkd,nk->nd", picked, gate_weights.astype(x.dtype))


# `MoE`'s choice of no-drop dispatch on CPU: the chunk loop for experts of at least this
# many weights per matrix (D * H), else the blocks. Measured (BUILD_NOTES, "Student
# train-step throughput"): blocks were faster for dim 64 / hidden 256, the chunk loop for
# dim 256 / hidden 1024.
_CHUNK_MIN_EXPERT_WEIGHTS = 128 * 1024

# Set by `forced_dispatch`: a dispatch that every `MoE` without an explicit `dispatch`
# traces with instead of its own choice.
_forced = None


@contextlib.contextmanager
def forced_dispatch(dispatch):
    """Within the block, `MoE` layers traced without an explicit `dispatch` use this one:
    "block", "chunk", or a function (x, expert_index, gate_weights, experts) -> y[N, D].
    For benchmarks that compare dispatches (or replace the MoE) in one process; values
    never depend on the choice between "block" and "chunk"."""
    global _forced
    previous, _forced = _forced, dispatch
    try:
        yield
    finally:
        _forced = previous


class MoE(nn.Module):
    """Top-k Switch MoE FFN over float[N, D] tokens (token_mask bool/float[N] or None:
    padded tokens are still computed but do not count in the aux loss).

    Returns (y float[N, D], routing, aux_loss float32[]).

    dispatch (capacity_factor <= 0 only): "block" (`block_dispatch`), "chunk"
    (`chunk_dispatch`) or None: `forced_dispatch`'s if set, else "chunk" on CPU for
    experts of >= 128K weights per matrix and "block" otherwise. block_size: rows per
    block of the block dispatch (None: `default_block_size(dim, hidden)`); chunk_sizes:
    those of the chunk dispatch (None: `CHUNK_SIZES`). Only speed depends on these,
    never the values.
    """

    num_experts: int
    hidden: int
    top_k: int = 1
    capacity_factor: float = 0.0
    block_size: int | None = None
    dispatch: str | None = None
    chunk_sizes: tuple[int, ...] | None = None

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
            y = self._no_drop(x, routing, experts)
        return y, routing, routing_lib.load_balancing_loss(routing, token_mask)

    def _no_drop(self, x, routing, experts):
        dim = x.shape[1]
        block_size = self.block_size or default_block_size(dim, self.hidden)
        block = functools.partial(block_dispatch, block_size=block_size)
        chunk = functools.partial(chunk_dispatch, sizes=self.chunk_sizes or CHUNK_SIZES)
        choice = self.dispatch or _forced
        if callable(choice):
            fn = choice
        elif choice in ("block", "chunk"):
            fn = block if choice == "block" else chunk
        elif choice is None:
            if dim * self.hidden >= _CHUNK_MIN_EXPERT_WEIGHTS:
                return jax.lax.platform_dependent(
                    x, routing.expert_index, routing.gate_weights, experts,
                    cpu=chunk, default=block)
            fn = block
        else:
            raise ValueError(f"unknown MoE dispatch {choice!r}; choose block or chunk")
        return fn(x, routing.expert_index, routing.gate_weights, experts)
