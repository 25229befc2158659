"""What the student sees: observation histories, plus a task context per step.

`History` is the one structure both distillation (windows sampled from teacher data)
and closed-loop evaluation (the live buffer of each env) build, so the student's
inputs are computed by the same function in both places.
"""

import chex
import jax
import jax.numpy as jnp

from cpd_jax.envs.tasks import MT25_TASKS

NUM_TASK_IDS = len(MT25_TASKS)


@chex.dataclass(frozen=True)
class History:
    """The last L steps of B episodes, left-padded at episode start.

    obs:          float32[B, L, 39]  observations o_{t-L+1..t}
    prev_actions: float32[B, L, 4]   action executed before each observation (0 at start)
    prev_rewards: float32[B, L]      reward received before each observation (0 at start)
    valid:        bool[B, L]         False on left padding
    task_id:      int32[B]           MT25 worker id (used only by the one-hot context)
    """

    obs: jax.Array
    prev_actions: jax.Array
    prev_rewards: jax.Array
    valid: jax.Array
    task_id: jax.Array


def context_dim(kind: str, embedding_dim: int) -> int:
    """Width of the per-step task context for `kind` ("none", "onehot", "contrastive")."""
    return {"none": 0, "onehot": NUM_TASK_IDS, "contrastive": embedding_dim}[kind]


def student_inputs(kind: str, history: History, embed_fn=None) -> jax.Array:
    """float32[B, L, 39 + context_dim]: observations with the task context appended.

    kind "none": observations only (the No-TE ablation); "onehot": one-hot MT25 id
    (an oracle for comparison); "contrastive": z = embed_fn(history) float32[B, Z] from
    the (s, a, r) history (paper §4.3), the same z appended to every step.
    """
    obs = history.obs.astype(jnp.float32)
    if kind == "none":
        return obs
    if kind == "onehot":
        ctx = jax.nn.one_hot(history.task_id, NUM_TASK_IDS, dtype=jnp.float32)
    elif kind == "contrastive":
        if embed_fn is None:
            raise ValueError("task context 'contrastive' needs a trained task encoder")
        ctx = embed_fn(history)
    else:
        raise ValueError(f"unknown task context {kind!r}; choose none, onehot, contrastive")
    ctx = jnp.broadcast_to(ctx[:, None, :], obs.shape[:2] + ctx.shape[-1:])
    return jnp.concatenate([obs, ctx], axis=-1)
