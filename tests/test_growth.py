"""Expert expansion: structure, cold start (outputs unchanged / ~e^-5), opt state."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpd_jax.student import growth
from cpd_jax.student import params as params_lib
from cpd_jax.student.moe import MoE
from cpd_jax.student.transformer import Student, StudentSpec

SPEC = StudentSpec(dim=32, num_blocks=2, num_heads=2, num_experts=4, top_k=1,
                   mlp_multiplier=2, seq_len=8)
FEATURES = 12
BIAS = growth.DEFAULT_GATE_BIAS_INIT


def _inputs(key, batch=6, length=8):
    x = jax.random.normal(key, (batch, length, FEATURES))
    valid = jnp.ones((batch, length), bool).at[0, :3].set(False)
    return x, valid


@functools.lru_cache(maxsize=None)
def _apply_fn(spec):
    """One compiled apply per spec (shapes are the same across tests)."""
    return jax.jit(Student(spec).apply)


@functools.lru_cache(maxsize=None)
def _init(spec):
    x, valid = _inputs(jax.random.key(0))
    return Student(spec).init(jax.random.key(1), x, valid)["params"]


def _perturb_gates(params, key, scale=1.0):
    """Trained-like router: larger gate kernels so routing is not uniform."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    keys = iter(jax.random.split(key, len(flat)))
    def f(path, leaf):
        k = next(keys)
        if any(getattr(p, "key", "") == "kernel" for p in path[-1:]) and any(
                str(getattr(p, "key", "")).startswith("gate_") for p in path):
            return leaf + scale * jax.random.normal(k, leaf.shape)
        return leaf
    return jax.tree_util.tree_map_with_path(f, params)


def test_structure_and_counts():
    params = _init(SPEC)
    new, sources = growth.expand_with_sources(params, 3, jax.random.key(2), sigma_init=0.01)
    assert growth.num_experts(new) == 7
    assert sources.shape == (SPEC.num_blocks, 3)
    assert ((sources >= 0) & (sources < 4)).all()
    for li, layer in enumerate(params_lib.moe_layers(new)):
        moe = new
        for k in layer:
            moe = moe[k]
        for i in range(3):
            src = int(sources[li, i])
            for name, w in moe[f"expert_{4 + i}"].items():
                d = np.asarray(w - moe[f"expert_{src}"][name])
                # noisy copy: differences look like N(0, 0.01^2)
                assert 0.005 < d.std() < 0.02, (name, d.std())
            np.testing.assert_array_equal(moe[f"gate_{4 + i}"]["kernel"],
                                          moe[f"gate_{src}"]["kernel"])
            assert float(moe[f"gate_{4 + i}"]["bias"]) == BIAS
    # old leaves untouched
    old_flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    new_flat = dict(jax.tree_util.tree_flatten_with_path(new)[0])
    for path, leaf in old_flat.items():
        np.testing.assert_array_equal(new_flat[path], leaf)
    # the bigger student applies to the new tree (and init gives the same structure)
    big = dataclasses.replace(SPEC, num_experts=growth.num_experts(new))
    x, valid = _inputs(jax.random.key(0))
    shapes = jax.eval_shape(Student(big).init, jax.random.key(1), x, valid)["params"]
    assert jax.tree.structure(shapes) == jax.tree.structure(new)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(shapes), jax.tree.leaves(new)))
    x, valid = _inputs(jax.random.key(3))
    actions, aux = _apply_fn(big)({"params": new}, x, valid)
    assert actions.shape == (6, 8, 4) and np.isfinite(actions).all()
    assert aux["expert_index"].shape == (SPEC.num_blocks, 48, 1)


def test_expand_zero_and_validation():
    params = _init(SPEC)
    same = growth.expand(params, 0, jax.random.key(0), 0.1)  # no new expert: unchanged
    assert growth.num_experts(same) == growth.num_experts(params)
    assert jax.tree.structure(same) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    new = growth.expand(params, 1, jax.random.key(0), 0.0, gate_kernel="zero")
    layer = params_lib.moe_layers(new)[0]
    moe = new[layer[0]][layer[1]]
    np.testing.assert_array_equal(moe["gate_4"]["kernel"], 0.0)
    with pytest.raises(ValueError):
        growth.expand(params, 1, jax.random.key(0), 0.0, gate_kernel="noise")


@pytest.mark.parametrize("seed", [0, 1])
def test_top1_outputs_unchanged_with_sigma_zero(seed):
    """Top-1: a copied kernel puts the new logit 5 below its source's, so the new expert
    is never the argmax, routing is identical and the outputs are unchanged."""
    params = _perturb_gates(_init(SPEC), jax.random.key(10 + seed))
    x, valid = _inputs(jax.random.key(20 + seed))
    before, aux0 = _apply_fn(SPEC)({"params": params}, x, valid)
    new = growth.expand(params, 4, jax.random.key(seed), sigma_init=0.0)
    big = dataclasses.replace(SPEC, num_experts=8)
    after, aux1 = _apply_fn(big)({"params": new}, x, valid)
    np.testing.assert_array_equal(aux1["expert_index"], aux0["expert_index"])
    assert int(jnp.max(aux1["expert_index"])) < 4  # no token goes to a new expert
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


def _expert_outputs(moe_params, x, num):
    """float32[N, E, D]: every expert applied to every token (numpy-style reference)."""
    outs = []
    for e in range(num):
        p = moe_params[f"expert_{e}"]
        h = jax.nn.gelu(x @ p["w_in"] + p["b_in"])
        outs.append(h @ p["w_out"] + p["b_out"])
    return jnp.stack(outs, axis=1)


def test_top2_new_weight_and_output_bound():
    """Top-2, sigma 0: a new expert can only join its own source (the old top-1) and then
    gets weight p_new / (p_src + p_new) = sigmoid(-5) ~ e^-5; the layer output moves by at
    most sigmoid(-5) * ||o_1 - o_2|| per token (o_1, o_2 the old top-2 experts' outputs).
    """
    dim, hidden, num_old, n_new = 16, 32, 4, 4
    layer = MoE(num_experts=num_old, hidden=hidden, top_k=2)
    x = jax.random.normal(jax.random.key(0), (256, dim))
    params = layer.init(jax.random.key(1), x)["params"]
    # a sharp router so that the old top-1/top-2 gap exceeds 5 for a share of tokens
    params = {k: ({"kernel": v["kernel"] * 150.0, "bias": v["bias"]} if k.startswith("gate_")
                  else v) for k, v in params.items()}
    y0, r0, _ = layer.apply({"params": params}, x)
    new = growth.expand({"moe": params}, n_new, jax.random.key(2), sigma_init=0.0)["moe"]
    y1, r1, _ = MoE(num_experts=num_old + n_new, hidden=hidden, top_k=2).apply(
        {"params": new}, x)

    idx1, w1 = np.asarray(r1.expert_index), np.asarray(r1.gate_weights)
    is_new = idx1 >= num_old
    bound = float(jax.nn.sigmoid(BIAS))
    assert is_new.any(), "test setup: some token should take a new expert as 2nd choice"
    assert not is_new[:, 0].any()  # never top-1
    assert (w1[is_new] <= bound * (1 + 1e-5)).all()
    # where a new expert is taken, it's a copy of the token's top-1 with relative weight
    # exactly sigmoid(-5) (same kernel: logit difference is exactly the bias)
    np.testing.assert_allclose(w1[is_new], bound, rtol=1e-4)
    # where no new expert is chosen, routing and outputs are unchanged
    same = ~is_new.any(axis=1)
    np.testing.assert_array_equal(idx1[same], np.asarray(r0.expert_index)[same])
    np.testing.assert_allclose(np.asarray(y1)[same], np.asarray(y0)[same], atol=1e-5)
    # analytic per-token bound on the output change
    outs = _expert_outputs(params, x, num_old)
    idx0 = np.asarray(r0.expert_index)
    o1 = np.take_along_axis(np.asarray(outs), idx0[:, :1, None], axis=1)[:, 0]
    o2 = np.take_along_axis(np.asarray(outs), idx0[:, 1:2, None], axis=1)[:, 0]
    diff = np.linalg.norm(np.asarray(y1 - y0), axis=-1)
    assert (diff <= bound * np.linalg.norm(o1 - o2, axis=-1) + 1e-4).all()
    assert diff.max() > 0  # the bound is exercised, not vacuous


def test_relative_bias():
    params = _init(SPEC)
    layer = params_lib.moe_layers(params)[0]
    moe = dict(params[layer[0]][layer[1]])
    moe["gate_0"] = {"kernel": moe["gate_0"]["kernel"], "bias": jnp.float32(-7.0)}
    params = {**params, layer[0]: {**params[layer[0]], "moe": moe}}
    new, src = growth.expand_with_sources(params, 8, jax.random.key(0), 0.0,
                                          gate_bias_relative=True)
    new_moe = new[layer[0]][layer[1]]
    for i in range(8):
        expected = float(moe[f"gate_{int(src[0, i])}"]["bias"]) + BIAS
        assert float(new_moe[f"gate_{4 + i}"]["bias"]) == pytest.approx(expected)
