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
    task_film: bool = False  # per-task FiLM of every layer norm's output (`TaskContext`)

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


def film(h: jax.Array, scale_shift: jax.Array | None) -> jax.Array:
    """h * (1 + scale) + shift; h float[..., D], scale_shift float[..., 2, D] or None
    (identity). The `1 +` makes a zero FiLM row the identity."""
    if scale_shift is None:
        return h
    return h * (1.0 + scale_shift[..., 0, :]) + scale_shift[..., 1, :]


def film_sites(num_blocks: int) -> int:
    """Layer norms that a task FiLM modulates: 2 per block (before attention and before
    the MoE) and the final one (before the action head)."""
    return 2 * num_blocks + 1


class TaskContext(nn.Module):
    """The task-context projection (params subtree `TASK_CONTEXT`).

    Maps context float[B, L, C] to (bias float[B, L, dim] added to the observation
    embedding, FiLM float[B, L, sites, 2, dim] or None). `kernel` float[C, dim] is the
    Dense of the paper's task embedding. With `film_sites` > 0, `film_kernel` float[C,
    sites, 2, dim] (zero-initialised, so a task's FiLM starts as the identity) gives each
    layer norm's output a per-task scale and shift (Perez et al. 2018). Both kernels are
    linear in the context without bias, so with one-hot context row c is task c's own
    parameters: the stage loop trains the rows of a stage's tasks and keeps old tasks'
    rows as their stage left them (`continual.stages.context_rows`), which gives a new
    task per-task capacity in every layer while a frozen backbone keeps old tasks
    exactly where they were.
    """

    dim: int
    film_sites: int = 0

    @nn.compact
    def __call__(self, context):
        c = context.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (c, self.dim))
        bias = context @ kernel
        if not self.film_sites:
            return bias, None
        film_kernel = self.param("film_kernel", nn.initializers.zeros,
                                 (c, self.film_sites, 2, self.dim))
        return bias, jnp.einsum("blc,csxd->blsxd", context, film_kernel)


class Block(nn.Module):
    spec: StudentSpec

    @nn.compact
    def __call__(self, x, mask, valid, film_attn=None, film_moe=None):
        """film_attn, film_moe: the task FiLM float[B, L, 2, dim] of the norm before the
        attention and before the MoE, or None."""
        s = self.spec
        h = film(nn.LayerNorm(name="ln_attn")(x), film_attn)
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=s.num_heads, qkv_features=s.dim, name="attn")(h, h, mask=mask)
        h = film(nn.LayerNorm(name="ln_moe")(x), film_moe)
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
    the rows of tasks introduced after stage 1 would never receive a gradient. With
    `spec.task_film` (an extension, not the paper's) the task context also scales and
    shifts the output of every layer norm (`TaskContext`).
    """

    spec: StudentSpec

    @nn.compact
    def __call__(self, inputs, valid):
        s = self.spec
        length = inputs.shape[1]
        if length > s.seq_len:
            raise ValueError(f"window of {length} steps > seq_len {s.seq_len}")
        x = nn.Dense(s.dim, name="embed")(inputs[..., :OBS_DIM])
        sites = film_sites(s.num_blocks)
        films = [None] * sites  # one per layer norm, in order; None = no FiLM
        if inputs.shape[-1] > OBS_DIM:
            bias, task_film = TaskContext(s.dim, sites if s.task_film else 0,
                                          name=TASK_CONTEXT)(inputs[..., OBS_DIM:])
            x = x + bias
            if task_film is not None:
                films = [task_film[:, :, k] for k in range(sites)]
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (s.seq_len, s.dim))
        x = x + pos[:length]
        mask = attention_mask(valid)
        aux_losses, indices, probs, moe_inputs = [], [], [], []
        for i in range(s.num_blocks):
            x, routing, aux, h = Block(s, name=f"block_{i}")(
                x, mask, valid, films[2 * i], films[2 * i + 1])
            aux_losses.append(aux)
            indices.append(routing.expert_index)
            probs.append(routing.router_probs)
            moe_inputs.append(h)
        x = film(nn.LayerNorm(name="ln_final")(x), films[-1])
        actions = nn.Dense(s.action_dim, name="action_head")(x)
        return actions, {"aux_loss": jnp.mean(jnp.stack(aux_losses)),
                         "expert_index": jnp.stack(indices), "router_probs": jnp.stack(probs),
                         "moe_inputs": jnp.stack(moe_inputs)}
