"""Contrastive task embedding (paper §4.3): a window of transitions -> a 16-d z.

Encoder: per-step features (state 39, action 4, reward 1) are standardised with
statistics of the training windows, passed through an MLP, mean-pooled over the valid
steps of the window and projected to `embed_dim`; z is L2-normalised (the loss only
sees cosine similarities, so the norm carries no trained information, and a unit-norm
z has a fixed scale when it is concatenated to the observation: 39 + 16 = 55).

Loss: supervised-contrastive InfoNCE with multiple positives. For an anchor i with
positives P(i) (other windows of the same task) and negatives N(i) (windows of other
tasks), with s_ij = cos(z_i, z_j) / temperature:

    l_i = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / (e^{s_ip} + sum_{n in N(i)} e^{s_in}) )

i.e. each positive is contrasted against the negatives only (same-task pairs are
masked out of the denominator), and the loss is the mean of l_i over anchors that have
at least one positive.

The encoder's params are separate from the student's (`embed` is a pure function of
them): the encoder is trained by InfoNCE, before each stage's distillation, and the
pipeline concatenates `embed(...)` to every observation.

Continual use (`train_task_encoder(init=..., anchor=...)`): a later stage starts from
the previous stage's encoder and input statistics, and adds a z-stability term on
old tasks' (replay) windows, anchor_coef * mean(1 - cos(z, z_prev)), so the z the frozen
student backbone has learned to read for an old task stays where it was.

Params layout (everything `embed` needs, so the architecture is read off the params):
    {"net": {"hidden_0": Dense, ..., "out": Dense},
     "input_mean": f32[44], "input_std": f32[44]}
"""

import dataclasses
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cpd_jax.student.inputs import feature_scale

STEP_FEATURES = 39 + 4 + 1  # state, action, reward
_NORM_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class TaskEncoderConfig:
    """Task-encoder hyper-parameters (embed_dim from the paper; the rest are ours)."""

    embed_dim: int = 16  # paper Table 6: task embedding 16-d
    hidden: tuple[int, ...] = (128, 128)  # MLP widths applied per step before pooling
    temperature: float = 0.1  # InfoNCE temperature on cosine similarities
    learning_rate: float = 1e-3  # AdamW
    weight_decay: float = 1e-4  # AdamW
    steps: int = 300  # gradient steps
    batch_size: int = 256  # windows per step, sampled class-balanced
    anchor_coef: float = 1.0  # weight of the z-stability term of a warm start
    min_std: float = 1e-3  # floor on the input std (constant features, e.g. padding)

    @classmethod
    def from_config(cls, config) -> "TaskEncoderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in names}
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(kwargs["hidden"])
        return cls(**kwargs)


class Windows(NamedTuple):
    """A batch of transition windows.

    obs f32[N, W, 39], actions f32[N, W, 4], rewards f32[N, W], valid bool[N, W].
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    valid: jax.Array


class TaskEncoder(nn.Module):
    """f32[B, W, 44] step features (already standardised), bool[B, W] -> f32[B, E] (raw)."""

    hidden: Sequence[int]
    embed_dim: int

    @nn.compact
    def __call__(self, features, valid):
        h = features
        for i, width in enumerate(self.hidden):
            h = nn.gelu(nn.Dense(width, name=f"hidden_{i}")(h))
        w = valid.astype(h.dtype)[..., None]
        # mean over valid steps only; an all-padding window pools to zeros
        pooled = jnp.sum(h * w, axis=-2) / jnp.maximum(jnp.sum(w, axis=-2), 1.0)
        return nn.Dense(self.embed_dim, name="out")(pooled)


def step_features(obs, actions, rewards):
    """f32[..., W, 44]: state, action, reward concatenated per step."""
    return jnp.concatenate([obs, actions, rewards[..., None]], axis=-1).astype(jnp.float32)


def _module_from_params(net_params) -> TaskEncoder:
    num_hidden = sum(1 for k in net_params if k.startswith("hidden_"))
    hidden = tuple(int(net_params[f"hidden_{i}"]["kernel"].shape[1]) for i in range(num_hidden))
    return TaskEncoder(hidden=hidden, embed_dim=int(net_params["out"]["kernel"].shape[1]))


def _l2_normalize(z):
    return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), _NORM_EPS)


def embed(params, obs, actions, rewards, valid):
    """Task embedding of each window.

    obs f32[B, W, 39], actions f32[B, W, 4], rewards f32[B, W], valid bool[B, W]
    (padded steps are ignored) -> z f32[B, embed_dim], unit norm (zeros if no step is
    valid). Pure and jittable; the architecture is read off `params`.
    """
    x = (step_features(obs, actions, rewards) - params["input_mean"]) / params["input_std"]
    x = jnp.where(valid[..., None], x, 0.0)
    z = _module_from_params(params["net"]).apply({"params": params["net"]}, x, valid)
    return _l2_normalize(z)


def info_nce_loss(z, task_ids, temperature: float):
    """Supervised-contrastive InfoNCE (module doc). z f32[N, E] (any norm), task_ids
    int[N] -> f32[] (0 if no anchor has a positive)."""
    z = _l2_normalize(z.astype(jnp.float32))
    sim = z @ z.T / temperature  # [N, N]
    n = z.shape[0]
    same = task_ids[:, None] == task_ids[None, :]
    eye = jnp.eye(n, dtype=bool)
    pos = same & ~eye
    neg = ~same
    # log sum_{n in N(i)} e^{s_in}, -inf when there is no negative
    neg_lse = jax.nn.logsumexp(jnp.where(neg, sim, -jnp.inf), axis=1, keepdims=True)
    # log(e^{s_ip} / (e^{s_ip} + sum_n e^{s_in})) = s_ip - logaddexp(s_ip, neg_lse)
    log_prob = sim - jnp.logaddexp(sim, neg_lse)
    num_pos = jnp.sum(pos, axis=1)
    per_anchor = -jnp.sum(jnp.where(pos, log_prob, 0.0), axis=1) / jnp.maximum(num_pos, 1)
    has_pos = num_pos > 0
    return jnp.sum(jnp.where(has_pos, per_anchor, 0.0)) / jnp.maximum(jnp.sum(has_pos), 1)


def make_windows(obs, actions, rewards, window: int, stride: int | None = None,
                 length=None) -> tuple[Windows, np.ndarray]:
    """Cuts trajectories into windows (host-side, numpy).

    obs f32[N, T, 39], actions f32[N, T, 4], rewards f32[N, T]; length int[N] or None
    (valid steps per trajectory; steps past it are padding). stride defaults to
    `window` (non-overlapping). Returns (Windows with leading axis M, traj int[M]: the
    trajectory each window came from). Windows with no valid step are dropped.
    """
    obs, actions, rewards = (np.asarray(a) for a in (obs, actions, rewards))
    n, t = rewards.shape
    stride = window if stride is None else stride
    length = np.full(n, t) if length is None else np.asarray(length)
    starts = np.arange(0, max(t - window, 0) + 1, stride)
    steps = starts[:, None] + np.arange(window)[None]  # [S, W]
    valid = (steps[None] < length[:, None, None])  # [N, S, W]
    keep = valid.any(-1).reshape(-1)
    take = lambda a: a[:, steps].reshape((n * len(starts), window) + a.shape[2:])[keep]
    traj = np.repeat(np.arange(n), len(starts))[keep]
    return Windows(obs=take(obs).astype(np.float32), actions=take(actions).astype(np.float32),
                   rewards=take(rewards).astype(np.float32),
                   valid=valid.reshape(-1, window)[keep]), traj


def input_statistics(windows: Windows, min_std: float):
    """Mean and std f32[44] of the valid steps' features (std as `inputs.feature_scale`:
    the statistics stay with the warm-started encoder for later stages' tasks)."""
    x = np.asarray(step_features(windows.obs, windows.actions, windows.rewards))
    x = x[np.asarray(windows.valid)]
    return jnp.asarray(x.mean(0), jnp.float32), feature_scale(x.std(0), min_std)


def init_params(key, config: TaskEncoderConfig, input_mean, input_std):
    """Fresh encoder params (layout in the module doc)."""
    module = TaskEncoder(hidden=tuple(config.hidden), embed_dim=config.embed_dim)
    net = module.init(key, jnp.zeros((1, 1, STEP_FEATURES)), jnp.ones((1, 1), bool))["params"]
    return {"net": net, "input_mean": input_mean, "input_std": input_std}


def _balanced_probs(task_ids: np.ndarray) -> np.ndarray:
    """Sampling probabilities that give every task the same expected share of a batch."""
    _, inverse, counts = np.unique(task_ids, return_inverse=True, return_counts=True)
    p = 1.0 / (len(counts) * counts[inverse])
    return p / p.sum()


def cosine_distance(z, z_ref):
    """float[N]: 1 - cos(z_n, z_ref_n) for z, z_ref float[N, E]."""
    return 1.0 - jnp.sum(_l2_normalize(z) * _l2_normalize(z_ref), axis=-1)


def train_task_encoder(key, windows: Windows, task_ids, config: TaskEncoderConfig,
                       return_losses: bool = False, init=None, anchor=None):
    """Trains the encoder with InfoNCE on `windows` (leading axis N) labelled by
    task_ids int[N]. Class-balanced batches of config.batch_size (with replacement),
    AdamW, jitted step.

    init: params of a previous encoder: training starts from them and keeps their input
      statistics (a warm start; otherwise fresh params and statistics of `windows`).
    anchor: optional (Windows with leading axis M, z_target float32[M, E]); each step also
      minimises config.anchor_coef * mean(1 - cos(z, z_target)) over a uniform batch of
      them.
    Returns params (and the per-step losses f32[steps] if asked).
    """
    task_ids = np.asarray(task_ids)
    if len(np.unique(task_ids)) < 2:
        raise ValueError("InfoNCE needs windows of at least two tasks")
    init_key, loop_key = jax.random.split(key)
    if init is None:
        mean, std = input_statistics(windows, config.min_std)
        params = init_params(init_key, config, mean, std)
    else:
        params = init
    frozen = {"input_mean": params["input_mean"], "input_std": params["input_std"]}
    data = jax.tree.map(jnp.asarray, windows)
    ids = jnp.asarray(task_ids, jnp.int32)
    probs = jnp.asarray(_balanced_probs(task_ids), jnp.float32)
    anchor = None if anchor is None else jax.tree.map(jnp.asarray, anchor)
    opt = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)

    def loss_fn(net, batch, batch_ids, anchor_batch):
        z = embed({"net": net, **frozen}, *batch)
        loss = info_nce_loss(z, batch_ids, config.temperature)
        if anchor_batch is not None:
            anchor_windows, target = anchor_batch
            z_anchor = embed({"net": net, **frozen}, *anchor_windows)
            loss = loss + config.anchor_coef * jnp.mean(cosine_distance(z_anchor, target))
        return loss

    @jax.jit
    def step(net, opt_state, key):
        k_batch, k_anchor = jax.random.split(key)
        idx = jax.random.choice(k_batch, ids.shape[0], (config.batch_size,), p=probs)
        batch = jax.tree.map(lambda a: a[idx], data)
        anchor_batch = None
        if anchor is not None:
            a_idx = jax.random.randint(k_anchor, (config.batch_size,), 0,
                                       anchor[1].shape[0])
            anchor_batch = jax.tree.map(lambda a: a[a_idx], anchor)
        loss, grads = jax.value_and_grad(loss_fn)(net, batch, ids[idx], anchor_batch)
        updates, opt_state = opt.update(grads, opt_state, net)
        return optax.apply_updates(net, updates), opt_state, loss

    net, opt_state = params["net"], opt.init(params["net"])
    losses = []
    for i in range(config.steps):
        net, opt_state, loss = step(net, opt_state, jax.random.fold_in(loop_key, i))
        losses.append(loss)
    params = {"net": net, **frozen}
    if return_losses:
        return params, np.asarray(jnp.stack(losses))
    return params


def nearest_centroid_accuracy(z_train, y_train, z_test, y_test) -> float:
    """Accuracy of classifying z_test by the nearest (cosine) class centroid of z_train."""
    z_train, z_test = np.asarray(z_train), np.asarray(z_test)
    classes = np.unique(y_train)
    centroids = np.stack([z_train[y_train == c].mean(0) for c in classes])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), _NORM_EPS)
    pred = classes[np.argmax(z_test @ centroids.T, axis=1)]
    return float(np.mean(pred == np.asarray(y_test)))

