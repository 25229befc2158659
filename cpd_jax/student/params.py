"""Reading the student's parameter pytree: how many experts, which leaf is what."""

import re

from flax import traverse_util

_EXPERT = re.compile(r"^expert_(\d+)$")


def moe_layers(params) -> list[tuple[str, ...]]:
    """Paths (tuples of keys) of every MoE layer in `params`."""
    flat = traverse_util.flatten_dict(params)
    return sorted({path[:path.index("moe") + 1] for path in flat if "moe" in path})


def num_experts(params) -> int:
    """Experts per MoE layer, read off the params (all layers grow together)."""
    counts = set()
    for layer in moe_layers(params):
        node = params
        for key in layer:
            node = node[key]
        counts.add(sum(1 for k in node if _EXPERT.match(k)))
    if len(counts) != 1:
        raise ValueError(f"MoE layers disagree on the number of experts: {sorted(counts)}")
    return counts.pop()
