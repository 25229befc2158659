"""Expert expansion between stages (paper §4.2): new experts are noisy copies.

`expand(params, n_new, key, sigma_init)` adds `n_new` experts to every MoE layer of a
student parameter tree (layout in `cpd_jax.student.moe`):

* expert weights: a copy of a uniformly sampled existing expert of the same layer plus
  N(0, sigma_init^2) noise on every weight (Net2WiderNet style: the new expert starts
  as a function the network already knows, the noise breaks the symmetry with its
  source so the two can diverge);
* router column: the kernel is a copy of the source's gate kernel (default,
  `gate_kernel="copy"`) or zeros (`gate_kernel="zero"`), without noise; the bias is set
  to the cold-start value `gate_bias_init` (paper: -5.0).

Why copy the kernel: with a copied kernel the new logit is
`logit_src(x) - bias_src + gate_bias_init`, i.e. it tracks the source's logit at a fixed
offset, so whenever every old bias is > gate_bias_init the new expert can never be a
token's top-1 choice, and top-1 outputs are unchanged at expansion time (with
capacity_factor <= 0; a finite capacity factor shrinks the per-expert capacity as E
grows, which can drop tokens). In top-k, k >= 2, a new expert can only be picked
alongside its source and then gets a renormalised weight of at most
sigmoid(gate_bias_init - bias_src) ~= e^-5 for a zero source bias. A zero kernel gives
a constant logit `gate_bias_init`, which is picked as top-1 whenever every old logit of
a token falls below it, so it has no such guarantee.

`gate_bias_relative=True` sets the new bias to `bias_src + gate_bias_init` instead, which
makes the guarantee hold for any trained biases (an extension, not the paper's rule).

The model must be rebuilt with `num_experts = E + n_new` (one recompile per stage):
`Student(dataclasses.replace(spec, num_experts=growth.num_experts(new_params)))`.

Optimizer state is not carried over: every (stage, phase) builds its optimizer and a
fresh state (`cpd_jax.continual.freezing`; carrying Adam moments across phases and
stages by tree path measured no better, BUILD_NOTES).
"""

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.student import params as params_lib
from cpd_jax.student.params import num_experts  # re-exported for callers of growth

__all__ = ["DEFAULT_GATE_BIAS_INIT", "expand", "expand_with_sources", "num_experts",
           "sample_sources"]

DEFAULT_GATE_BIAS_INIT = -5.0  # paper Table 6: "gate bias -5.0" for new experts
_GATE_KERNEL_MODES = ("copy", "zero")


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value):
    """A copy of nested dict `tree` with `tree[path] = value` (other nodes shared)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    out = dict(tree)
    out[head] = _set(tree[head], rest, value)
    return out


def sample_sources(key: jax.Array, num_layers: int, num_old: int, n_new: int) -> np.ndarray:
    """int64[num_layers, n_new]: source expert of each new expert, uniform over the
    `num_old` existing experts, independently per layer and per new expert."""
    return np.asarray(jax.random.randint(key, (num_layers, n_new), 0, num_old))


def _expand_layer(moe, sources, key, sigma_init, gate_bias_init, gate_kernel,
                  gate_bias_relative):
    """New dict for one MoE layer with experts E..E+len(sources)-1 appended."""
    num_old = sum(1 for k in moe if k.startswith("expert_"))
    out = dict(moe)
    for i, src in enumerate(sources):
        new = num_old + i
        expert = moe[f"expert_{int(src)}"]
        leaf_keys = jax.random.split(jax.random.fold_in(key, i), len(expert))
        out[f"expert_{new}"] = {
            name: w + (sigma_init * jax.random.normal(k, w.shape, jnp.float32)).astype(w.dtype)
            for (name, w), k in zip(sorted(expert.items()), leaf_keys)}
        gate = moe[f"gate_{int(src)}"]
        kernel = gate["kernel"] if gate_kernel == "copy" else jnp.zeros_like(gate["kernel"])
        bias = jnp.full_like(gate["bias"], gate_bias_init)
        if gate_bias_relative:
            bias = gate["bias"] + bias
        out[f"gate_{new}"] = {"kernel": jnp.array(kernel), "bias": bias}
    return out


def expand_with_sources(params, n_new: int, key: jax.Array, sigma_init: float,
                        gate_bias_init: float = DEFAULT_GATE_BIAS_INIT,
                        gate_kernel: str = "copy", gate_bias_relative: bool = False):
    """Like `expand`, and also returns the sampled sources int[num_layers, n_new]
    (row i is the i-th layer of `params_lib.moe_layers(params)`)."""
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    if gate_kernel not in _GATE_KERNEL_MODES:
        raise ValueError(f"gate_kernel must be one of {_GATE_KERNEL_MODES}, got {gate_kernel!r}")
    layers = params_lib.moe_layers(params)
    num_old = params_lib.num_experts(params)
    src_key, noise_key = jax.random.split(key)
    sources = sample_sources(src_key, len(layers), num_old, n_new)
    new_params = params
    for li, path in enumerate(layers):
        layer = _expand_layer(_get(params, path), sources[li],
                              jax.random.fold_in(noise_key, li), sigma_init, gate_bias_init,
                              gate_kernel, gate_bias_relative)
        new_params = _set(new_params, path, layer)
    return new_params, sources


def expand(params, n_new: int, key: jax.Array, sigma_init: float,
           gate_bias_init: float = DEFAULT_GATE_BIAS_INIT, gate_kernel: str = "copy",
           gate_bias_relative: bool = False):
    """Adds `n_new` experts to every MoE layer of `params` (a nested dict).

    Args:
      params: student params (the `'params'` collection, not the variables dict).
      n_new: experts to add per layer.
      key: PRNG key (sources and noise).
      sigma_init: std of the Gaussian noise added to the copied expert weights.
      gate_bias_init: bias of each new router column (paper -5.0).
      gate_kernel: "copy" (source's kernel) or "zero".
      gate_bias_relative: new bias = source bias + gate_bias_init (see module doc).

    Returns the new params; old leaves are the same arrays (not copied).
    """
    return expand_with_sources(params, n_new, key, sigma_init, gate_bias_init,
                               gate_kernel, gate_bias_relative)[0]
