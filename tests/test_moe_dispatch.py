"""The no-drop MoE dispatches (`block_dispatch`, `chunk_dispatch`) against an independent
per-token reference.

The reference computes y_n = sum_k w_nk * FFN_{e_nk}(x_n) token by token, each token
through its own gathered copy of its experts' weights, from the raw parameter dicts and
with its own router (softmax, top-k by numpy argsort, weights renormalised with a
stop-gradient normaliser); so values AND gradients (params and inputs) are checked
against code that shares nothing with the dispatch (no sorting, buffers or blocks).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.student import routing as routing_lib
from cpd_jax.student import moe as moe_lib
from cpd_jax.student.moe import MoE, block_dispatch, buffer_dispatch, chunk_dispatch

DIM, HIDDEN = 8, 16


def _params(num_experts, top_k, n=20, seed=0, **kw):
    """MoE params with every leaf randomised (biases too, so every path is exercised)."""
    layer = MoE(num_experts=num_experts, hidden=HIDDEN, top_k=top_k, **kw)
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, DIM))
    # shapes only: eager init would compile every small op separately
    shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(seed + 1), x)["params"]
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    # router logits of order 1 so that top-k choices are well separated
    leaves = [jnp.asarray(rng.normal(size=leaf.shape) * (1.0 if leaf.ndim < 2 else 0.5),
                          jnp.float32) for leaf in leaves]
    return layer, jax.tree.unflatten(treedef, leaves), x


def _reference_routing(params, x, num_experts, k):
    """(probs float32[N, E], top int[N, k] as numpy, weights float32[N, k]); the top-k
    choice is made in numpy on concrete values (call outside jit)."""
    probs = _reference_probs(params, x, num_experts)
    top = np.argsort(-np.asarray(probs), axis=-1, kind="stable")[:, :k]
    return probs, top, _reference_weights(probs, top)


def _reference_probs(params, x, num_experts):
    kernel = jnp.stack([params[f"gate_{e}"]["kernel"] for e in range(num_experts)], axis=1)
    bias = jnp.stack([params[f"gate_{e}"]["bias"] for e in range(num_experts)])
    return jax.nn.softmax(x @ kernel + bias, axis=-1)


def _reference_weights(probs, top):
    chosen = jnp.take_along_axis(probs, jnp.asarray(top), axis=-1)
    return chosen / jax.lax.stop_gradient(chosen.sum(-1, keepdims=True))


def _reference_moe(params, x, top, num_experts):
    """Per token: y_n = sum_j w_nj * FFN_{e_nj}(x_n), each token through its own copy of
    its experts' weights (gathered by the numpy constant top[N, k], so no sorting,
    buffers or blocks; traces under jit). Returns float[N, D]."""
    weights = _reference_weights(_reference_probs(params, x, num_experts), top)
    w_in, b_in, w_out, b_out = (
        jnp.stack([params[f"expert_{e}"][name] for e in range(num_experts)])[top]
        for name in ("w_in", "b_in", "w_out", "b_out"))  # [N, k, ...]
    h = jax.nn.gelu(jnp.einsum("nd,nkdh->nkh", x, w_in) + b_in)
    out = jnp.einsum("nkh,nkhd->nkd", h, w_out) + b_out
    return jnp.einsum("nkd,nk->nd", out, weights)


def _reference_output(params, x, num_experts, k):
    return _reference_moe(params, x, _reference_routing(params, x, num_experts, k)[1],
                          num_experts)


def _assert_tree_close(actual, expected, rtol=1e-5):
    """Leafwise allclose (same tree structure), atol scaled to each leaf's magnitude."""
    flat_a = jax.tree_util.tree_leaves_with_path(actual)
    flat_b = jax.tree.leaves(expected)
    assert len(flat_a) == len(flat_b)
    for (path, a), b in zip(flat_a, flat_b):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max() + 1e-7,
                                   err_msg=jax.tree_util.keystr(path))


# (k, experts, MoE fields): the block dispatch at several block sizes, and the chunk
# dispatch with chunk sizes small enough that n=20 tokens take every path of `_cover`
# (several largest chunks, each smaller size as the last chunk, a last chunk that runs
# past the expert's rows, no last chunk, empty experts)
NO_DROP_CASES = [
    (1, 3, dict(block_size=None)), (1, 6, dict(block_size=3)), (1, 4, dict(block_size=1)),
    (2, 4, dict(block_size=None)), (2, 7, dict(block_size=3)), (2, 5, dict(block_size=1)),
    (1, 3, dict(dispatch="chunk", chunk_sizes=(2, 4))),
    (1, 6, dict(dispatch="chunk", chunk_sizes=(1,))),
    (1, 2, dict(dispatch="chunk", chunk_sizes=(2, 4, 8))),
    (2, 4, dict(dispatch="chunk")),  # CHUNK_SIZES: all longer than the 40 pairs
    (2, 7, dict(dispatch="chunk", chunk_sizes=(3, 6))),
    (1, 3, dict(dispatch="chunk", chunk_sizes=(7,))),
    (2, 5, dict(dispatch="chunk", chunk_sizes=(1, 2, 5))),
]


@pytest.mark.parametrize("k,num_experts,fields", NO_DROP_CASES)
def test_no_drop_output_and_gradients_equal_per_token_loop(k, num_experts, fields):
    layer, params, x = _params(num_experts, k, **fields)
    mask = jnp.arange(x.shape[0]) % 3 != 0  # a token mask: only the aux loss reads it
    cot = jax.random.normal(jax.random.PRNGKey(9), x.shape)

    def loss(p, x):
        y, _, aux = layer.apply({"params": p}, x, mask)
        return jnp.sum(y * cot) + 0.3 * aux

    _, top, weights = _reference_routing(params, x, num_experts, k)

    def reference_loss(p, x):  # the routing decision `top` is not differentiated
        r = routing_lib.Routing(expert_index=jnp.asarray(top, jnp.int32),
                                gate_weights=jnp.zeros(top.shape),
                                router_probs=_reference_probs(p, x, num_experts))
        return (jnp.sum(_reference_moe(p, x, top, num_experts) * cot)
                + 0.3 * routing_lib.load_balancing_loss(r, mask))

    y, r, _ = jax.jit(lambda p, x: layer.apply({"params": p}, x, mask))(params, x)
    np.testing.assert_array_equal(r.expert_index, top)
    np.testing.assert_allclose(r.gate_weights, weights, rtol=1e-6)
    np.testing.assert_allclose(y, _reference_moe(params, x, top, num_experts), rtol=1e-5,
                               atol=1e-6)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(reference_loss, argnums=(0, 1)))(
        params, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    _assert_tree_close(grads[0], ref_grads[0])
    np.testing.assert_allclose(grads[1], ref_grads[1], rtol=1e-5,
                               atol=1e-5 * np.abs(ref_grads[1]).max())
    # the gradient is not trivially zero: every routed expert and every gate gets one
    for e in range(num_experts):
        used = bool((top == e).any())
        assert (float(jnp.abs(grads[0][f"expert_{e}"]["w_in"]).max()) > 0) == used
        assert float(jnp.abs(grads[0][f"gate_{e}"]["kernel"]).max()) > 0


@pytest.mark.parametrize("fields", [dict(block_size=1), dict(block_size=4),
                                    dict(block_size=64), dict(dispatch="chunk", chunk_sizes=(2, 4)),
                                    dict(dispatch="chunk", chunk_sizes=(1, 2, 4, 8)),
                                    dict(dispatch="chunk", chunk_sizes=(32, 64))])
def test_skewed_routing_all_tokens_to_one_expert_and_empty_experts(fields):
    """The worst case of the block count: one expert takes everything, others none
    (for the chunk loop: many largest chunks in a row, and experts with no rows)."""
    num_experts, k = 5, 2
    layer, params, x = _params(num_experts, k, **fields)
    params = dict(params)
    params["gate_3"] = {"kernel": params["gate_3"]["kernel"], "bias": jnp.float32(50.0)}
    params["gate_1"] = {"kernel": params["gate_1"]["kernel"], "bias": jnp.float32(40.0)}
    y, r, _ = jax.jit(layer.apply)({"params": params}, x)
    top = _reference_routing(params, x, num_experts, k)[1]
    assert set(np.unique(r.expert_index)) == set(np.unique(top)) == {1, 3}
    np.testing.assert_allclose(y, _reference_moe(params, x, top, num_experts), rtol=1e-5,
                               atol=1e-6)

    def loss(p):
        return jnp.sum(layer.apply({"params": p}, x)[0] ** 2)

    def reference_loss(p):
        return jnp.sum(_reference_moe(p, x, top, num_experts) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    _assert_tree_close(grads, jax.jit(jax.grad(reference_loss))(params))
    # experts nobody is routed to get exactly zero gradient (padding rows contribute 0)
    for e in (0, 2, 4):
        assert all(float(jnp.abs(g).max()) == 0.0
                   for g in jax.tree.leaves(grads[f"expert_{e}"]))


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("dispatch", ["block", "chunk"])
def test_a_tokens_output_does_not_depend_on_the_rest_of_the_batch(k, dispatch):
    layer, params, x = _params(6, k, n=24, dispatch=dispatch, chunk_sizes=(2, 4))
    other = jax.random.normal(jax.random.PRNGKey(5), (40, DIM)) * 3.0
    apply = jax.jit(lambda x: layer.apply({"params": params}, x)[0])
    y_alone = apply(x[:7])
    y_mixed = apply(jnp.concatenate([other[:11], x[:7], other[11:]]))
    y_full = apply(x)
    np.testing.assert_allclose(y_mixed[11:18], y_alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_full[:7], y_alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dispatch", [
    lambda *a: block_dispatch(*a, block_size=64),
    lambda *a: chunk_dispatch(*a, sizes=(16, 32, 48, 64)),
    lambda *a: chunk_dispatch(*a)], ids=["block64", "chunk16-64", "chunk_default"])
def test_no_drop_dispatch_equals_the_full_capacity_buffer_at_the_cpu_config_size(dispatch):
    """The old no-drop path (a buffer of N slots per expert) and the new ones agree in
    value and gradient at the size benchmarks/student_throughput.py compares them."""
    n, dim, hidden, num_experts, k = 640, 64, 256, 12, 2
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    x = jax.random.normal(keys[0], (n, dim))
    experts = (jax.random.normal(keys[1], (num_experts, dim, hidden)) * dim ** -0.5,
               jax.random.normal(keys[2], (num_experts, hidden)) * 0.1,
               jax.random.normal(keys[3], (num_experts, hidden, dim)) * hidden ** -0.5,
               jax.random.normal(keys[4], (num_experts, dim)) * 0.1)
    gate = jax.random.normal(keys[5], (dim, num_experts))
    cot = jax.random.normal(keys[6], (n, dim))

    def loss(dispatch, x, experts, gate):
        r = routing_lib.route_top_k(x @ gate, k)
        return jnp.sum(dispatch(x, r.expert_index, r.gate_weights, experts) * cot)

    new = jax.jit(jax.value_and_grad(lambda *a: loss(dispatch, *a), argnums=(0, 1, 2)))
    old = jax.jit(jax.value_and_grad(
        lambda *a: loss(lambda *b: buffer_dispatch(*b, capacity=n), *a), argnums=(0, 1, 2)))
    (v_new, g_new), (v_old, g_old) = new(x, experts, gate), old(x, experts, gate)
    np.testing.assert_allclose(v_new, v_old, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_old)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("dispatch", ["block", "chunk"])
def test_jit_of_vmap_over_batches_equals_one_batch_at_a_time(dispatch):
    layer, params, _ = _params(5, 2, dispatch=dispatch, chunk_sizes=(2, 4))
    xs = jax.random.normal(jax.random.PRNGKey(3), (3, 16, DIM))
    masks = jax.random.bernoulli(jax.random.PRNGKey(4), 0.7, (3, 16))
    ys, rs, auxs = jax.jit(jax.vmap(lambda x, m: layer.apply({"params": params}, x, m)))(
        xs, masks)
    single = jax.jit(lambda x, m: layer.apply({"params": params}, x, m))
    for i in range(3):
        y, r, aux = single(xs[i], masks[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(rs.expert_index[i], r.expert_index)
        np.testing.assert_allclose(auxs[i], aux, rtol=1e-6)


def test_capacity_path_drops_past_capacity_and_keeps_the_rest():
    """capacity_factor > 0 keeps Switch's buffer: a dropped choice contributes 0."""
    num_experts, k, n = 4, 1, 20
    layer, params, x = _params(num_experts, k, n=n, capacity_factor=1.0)  # capacity 5
    y, r, _ = jax.jit(layer.apply)({"params": params}, x)
    idx = np.asarray(r.expert_index)[:, 0]
    ref = np.asarray(_reference_output(params, x, num_experts, k))
    seen = np.zeros(num_experts, int)
    for t in range(n):  # first come, first served, 5 slots per expert
        expected = ref[t] if seen[idx[t]] < 5 else 0.0
        seen[idx[t]] += 1
        np.testing.assert_allclose(y[t], expected, rtol=1e-5, atol=1e-6)
    assert seen.max() > 5, "test setup: some expert should overflow"


def test_default_dispatch_on_cpu_is_the_chunk_loop_for_large_experts(monkeypatch):
    """Unset `dispatch`: "chunk" on CPU for experts of >= _CHUNK_MIN_EXPERT_WEIGHTS
    weights (lowered via platform_dependent, here with the threshold lowered to reach
    the test's small experts), "block" below it; `forced_dispatch` overrides both."""
    layer, params, x = _params(4, 1)
    ref = _reference_output(params, x, 4, 1)

    def chunk_loop_lowered():  # the chunk loop's conds lower to stablehlo.case
        text = jax.jit(lambda p, x: layer.apply({"params": p}, x)[0]).lower(params, x).as_text()
        return "stablehlo.case" in text

    assert not chunk_loop_lowered()  # DIM * HIDDEN = 128 < threshold: blocks
    monkeypatch.setattr(moe_lib, "_CHUNK_MIN_EXPERT_WEIGHTS", DIM * HIDDEN)
    assert chunk_loop_lowered()
    y = jax.jit(lambda p, x: layer.apply({"params": p}, x)[0])(params, x)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    with moe_lib.forced_dispatch("block"):
        assert not chunk_loop_lowered()
    calls = []
    with moe_lib.forced_dispatch(lambda x, *_: calls.append(1) or jnp.zeros_like(x)):
        y = layer.apply({"params": params}, x)[0]
    assert calls and not np.asarray(y).any()
    assert moe_lib._forced is None  # restored


@pytest.mark.parametrize("sizes", [(1,), (3,), (2, 4), (1, 2, 5), (3, 6, 8), (4, 8, 16)])
def test_cover_runs_every_row_once_in_order_and_overruns_at_most_the_largest_gap(sizes):
    length = 64

    def cover(start, size):
        def fn(s, pos, c):
            seen, last = c
            ok = pos >= last  # chunks in increasing order, none overlapping
            seen = jax.lax.dynamic_update_slice_in_dim(
                seen, jax.lax.dynamic_slice_in_dim(seen, pos, s) + 1, pos, 0)
            return seen, jnp.where(ok, pos + s, -10_000)

        return moe_lib._cover(start, size, sizes, fn, (jnp.zeros(length, jnp.int32), start))

    cover = jax.jit(cover)
    for start, size in [(0, 0), (3, 1), (5, 7), (2, 16), (1, 17), (9, 33)]:
        seen, last = (np.asarray(a) for a in cover(start, size))
        assert last >= start + size
        assert (seen[:start] == 0).all() and (seen[start:start + size] == 1).all()
        past = seen[start + size:]
        assert (past <= 1).all() and past.sum() <= moe_lib._overrun(sizes)
        assert (past[:past.sum()] == 1).all()  # the overrun is contiguous


def test_chunk_sizes_must_increase():
    assert moe_lib._overrun((64, 128, 192)) == 63 and moe_lib._overrun((1, 2, 5)) == 2
    assert moe_lib.CHUNK_SIZES == tuple(range(64, 513, 64))
    x = jnp.ones((10, DIM))
    experts = (jnp.ones((2, DIM, HIDDEN)), jnp.ones((2, HIDDEN)), jnp.ones((2, HIDDEN, DIM)),
               jnp.ones((2, DIM)))
    idx = jnp.zeros((10, 1), jnp.int32)
    for bad in [(4, 2), (2, 2), (0, 3), ()]:
        with pytest.raises(ValueError, match="chunk sizes"):
            chunk_dispatch(x, idx, jnp.ones((10, 1)), experts, sizes=bad)
