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


@chex.dataclass(frozen=True)
class ObsNorm:
    """Per-feature standardisation of observations: (obs - mean) / std, float32[39] each.

    Meta-World features move over a few centimetres (std ~0.05), so without it the goal
    and hand positions barely register against the learned embeddings. Fit once on the
    first data the student sees and keep it fixed afterwards (continual stages must not
    shift the input space under old tasks); a fresh student per stage fits its own.
    """

    mean: jax.Array
    std: jax.Array


# A feature whose std over the fitting data is below this never varies there.
CONSTANT_STD = 1e-6


def feature_scale(std, min_std: float) -> jax.Array:
    """Per-feature divisor float32[F] from the std float[F] of the fitting data: floored at
    `min_std`, except that a feature that never varies there (a second object's pose in
    single-object tasks) keeps unit scale. Statistics are fit once and kept for later
    stages, so a floor would multiply such a feature by 1 / min_std as soon as a later
    task exercises it (stick-pull's stick after stage 1's tasks: x100, and every method
    but the ones that retrain the input layer failed the task)."""
    std = jnp.asarray(std, jnp.float32)
    return jnp.where(std < CONSTANT_STD, 1.0, jnp.maximum(std, min_std))


def fit_obs_norm(obs, min_std: float = 1e-2) -> ObsNorm:
    """ObsNorm from float[..., 39] observations (std as `feature_scale`)."""
    flat = jnp.asarray(obs, jnp.float32).reshape(-1, obs.shape[-1])
    return ObsNorm(mean=jnp.mean(flat, 0), std=feature_scale(jnp.std(flat, 0), min_std))


def obs_norm_to_tree(norm: ObsNorm) -> dict:
    """{"mean", "std"}: the checkpointed form of an ObsNorm."""
    return {"mean": norm.mean, "std": norm.std}


def obs_norm_from_tree(tree: dict) -> ObsNorm:
    """Inverse of `obs_norm_to_tree` (leaves may come back as numpy arrays)."""
    return ObsNorm(mean=jnp.asarray(tree["mean"]), std=jnp.asarray(tree["std"]))


def identity_obs_norm(obs_dim: int = 39) -> ObsNorm:
    return ObsNorm(mean=jnp.zeros(obs_dim), std=jnp.ones(obs_dim))


def context_dim(kind: str, embedding_dim: int) -> int:
    """Width of the per-step task context for `kind` ("none", "onehot", "contrastive")."""
    return {"none": 0, "onehot": NUM_TASK_IDS, "contrastive": embedding_dim}[kind]


def student_inputs(kind: str, history: History, embed_fn=None,
                   obs_norm: ObsNorm | None = None) -> jax.Array:
    """float32[B, L, 39 + context_dim]: standardised observations, task context appended.

    kind "none": observations only (the No-TE ablation); "onehot": one-hot MT25 id
    (an oracle for comparison); "contrastive": z = embed_fn(history) float32[B, Z] from
    the (s, a, r) history (paper §4.3), the same z appended to every step.
    """
    obs = history.obs.astype(jnp.float32)
    if obs_norm is not None:
        obs = (obs - obs_norm.mean) / obs_norm.std
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
