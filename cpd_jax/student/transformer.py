"""The student: a decoder-only, pre-norm Transformer whose FFNs are Switch MoE layers.

Input: a window of the last L observations (each already concatenated with its task
context, e.g. 39 + 16 = 55 features) and a validity mask for left padding at episode
start. Output: an action mean per position (the last position is the one acted on).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpd_jax.envs.tasks import OBS_DIM
from cpd_jax.student.moe import MoE

TASK_CONTEXT = "task_context"  # params subtree projecting the task context (trainable)


@dataclasses.dataclass(frozen=True)
class StudentSpec:
    """Architecture (paper Table 6 defaults; configs override)."""

    dim: int = 256
    num_blocks: int = 5
    num_heads: int = 4
    num_experts: int = 8
    top_k: int = 1
    mlp_multiplier: int = 4
    seq_len: int = 20
    action_dim: int = 4
    capacity_factor: float = 0.0

    @classmethod
    def from_config(cls, config) -> "StudentSpec":
        """From a `config.student` ConfigDict (extra fields are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


def attention_mask(valid: jax.Array) -> jax.Array:
    """bool[B, 1, L, L]: causal, keys restricted to valid tokens (a pad attends to itself
    so its softmax row is never empty)."""
    length = valid.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    allowed = causal[None] & (valid[:, None, :] | jnp.eye(length, dtype=bool)[None])
    return allowed[:, None]


class Block(nn.Module):
    spec: StudentSpec

    @nn.compact
    def __call__(self, x, mask, valid):
        s = self.spec
        h = nn.LayerNorm(name="ln_attn")(x)
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=s.num_heads, qkv_features=s.dim, name="attn")(h, h, mask=mask)
        h = nn.LayerNorm(name="ln_moe")(x)
        b, length, d = h.shape
        y, routing, aux = MoE(num_experts=s.num_experts, hidden=s.mlp_multiplier * s.dim,
                              top_k=s.top_k, capacity_factor=s.capacity_factor,
                              name="moe")(h.reshape(b * length, d), valid.reshape(-1))
        return x + y.reshape(b, length, d), routing, aux, h


class Student(nn.Module):
    """Maps (inputs float32[B, L, 39 + C], valid bool[B, L]) to
    (actions float32[B, L, A], aux dict with 'aux_loss' float32[] (mean over blocks),
    'expert_index' int32[num_blocks, B*L, k], 'router_probs' float32[num_blocks, B*L, E]
    and 'moe_inputs' float32[num_blocks, B, L, dim], what each MoE layer's router and
    experts read: the feature anchor of `continual.penalties.isolation_penalty`).

    The first 39 input features are the observation, the other C the task context
    (one-hot id or contrastive z, `cpd_jax.student.inputs`). The input projection is
    `embed(obs) + task_context(context)`: the same function as one Dense over the 55
    concatenated features, but split so that the task-context rows are their own
    subtree, which stays trainable while the backbone (`embed`, ...) is frozen (§4.5:
    "updates are restricted to the MoE layers and the Task Embedding module"). Otherwise
    the rows of tasks introduced after stage 1 would never receive a gradient.
    """

    spec: StudentSpec

    @nn.compact
    def __call__(self, inputs, valid):
        s = self.spec
        length = inputs.shape[1]
        if length > s.seq_len:
            raise ValueError(f"window of {length} steps > seq_len {s.seq_len}")
        x = nn.Dense(s.dim, name="embed")(inputs[..., :OBS_DIM])
        if inputs.shape[-1] > OBS_DIM:
            x = x + nn.Dense(s.dim, use_bias=False, name=TASK_CONTEXT)(inputs[..., OBS_DIM:])
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (s.seq_len, s.dim))
        x = x + pos[:length]
        mask = attention_mask(valid)
        aux_losses, indices, probs, moe_inputs = [], [], [], []
        for i in range(s.num_blocks):
            x, routing, aux, h = Block(s, name=f"block_{i}")(x, mask, valid)
            aux_losses.append(aux)
            indices.append(routing.expert_index)
            probs.append(routing.router_probs)
            moe_inputs.append(h)
        x = nn.LayerNorm(name="ln_final")(x)
        actions = nn.Dense(s.action_dim, name="action_head")(x)
        return actions, {"aux_loss": jnp.mean(jnp.stack(aux_losses)),
                         "expert_index": jnp.stack(indices), "router_probs": jnp.stack(probs),
                         "moe_inputs": jnp.stack(moe_inputs)}
