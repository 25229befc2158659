"""Policy distillation: teacher trajectories -> windows -> MSE(student, teacher means).

Pure pieces: `WindowSource` (device arrays), `sample_batch`, `make_train_step`
(`(state, key) -> (state, metrics)`). Only `distill` (the host loop: logging, NaN
guard) is impure.
"""

from typing import Callable, Sequence

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from cpd_jax import live_metrics, parallel, progress
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.errors import UserError
from cpd_jax.student.inputs import History, student_inputs


@flax.struct.dataclass
class WindowSource:
    """Trajectories left-padded by L-1 steps so any window is a static-size slice.

    obs float32[N, T+L-1, 39]; actions (teacher means) float32[N, T+L-1, 4];
    rewards float32[N, T+L-1]; lengths int32[N]; task_id int32[N].
    Step t of episode n lives at index t + L - 1.
    episode_logits: float32[N] log-probabilities of drawing each episode, or None for
    uniform over episodes (`episode_probabilities`).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    lengths: jax.Array
    task_id: jax.Array
    seq_len: int = flax.struct.field(pytree_node=False)
    episode_logits: jax.Array | None = None

    @property
    def num_windows(self) -> int:
        """One window ends at every valid step of every episode."""
        return int(np.sum(np.asarray(self.lengths)))


SAMPLING = ("episode", "task")


def episode_probabilities(task_id: np.ndarray, sampling: str = "episode") -> np.ndarray | None:
    """float64[N] probability of drawing each of N episodes, or None for uniform.

    task_id: int[N] task of each episode.
    sampling "episode": every episode equally likely (an epoch = every window once;
      a task's share of the batch is its share of the data).
    sampling "task": every task equally likely, then an episode uniformly within it:
      p[e] = 1 / (num_tasks * count[task(e)]). A replay buffer holds ~10% of a task's
      episodes, so under "episode" each old task gets ~1/10 of a new task's share of
      the gradient; "task" gives every seen task the same share.
    Returns None whenever the result is uniform (equal counts per task), so that a
    source without replay is sampled bitwise as before (`jax.random.randint`).
    """
    if sampling not in SAMPLING:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {SAMPLING}")
    task_id = np.asarray(task_id)
    _, inverse, counts = np.unique(task_id, return_inverse=True, return_counts=True)
    if sampling == "episode" or np.all(counts == counts[0]):
        return None
    return 1.0 / (len(counts) * counts[inverse])


def make_window_source(trajectories: Sequence[Trajectories], seq_len: int,
                       sampling: str = "episode") -> WindowSource:
    """Stacks the episodes of several tasks (same T) into one padded `WindowSource`.

    sampling: how `sample_batch` draws episodes (`episode_probabilities`).
    """
    if not trajectories:
        raise ValueError("no trajectories to distill from")
    pad = seq_len - 1

    def stack(name):
        x = np.concatenate([getattr(t, name) for t in trajectories]).astype(np.float32)
        widths = [(0, 0), (pad, 0)] + [(0, 0)] * (x.ndim - 2)
        return jnp.asarray(np.pad(x, widths))

    task_id = np.concatenate([np.full(t.num_episodes, t.task_id) for t in trajectories])
    probs = episode_probabilities(task_id, sampling)
    return WindowSource(
        obs=stack("obs"), actions=stack("actions"), rewards=stack("rewards"),
        lengths=jnp.asarray(np.concatenate([t.lengths for t in trajectories]), jnp.int32),
        task_id=jnp.asarray(task_id, jnp.int32), seq_len=seq_len,
        episode_logits=None if probs is None else jnp.asarray(np.log(probs), jnp.float32))


def window(source: WindowSource, episode: jax.Array, end: jax.Array):
    """The window of `episode` ending at step `end` (a scalar each).

    Returns (History of batch size 1 without the batch axis, targets float32[L, 4]).
    """
    length = source.seq_len

    def take(x):
        return jax.lax.dynamic_slice_in_dim(x[episode], end, length, axis=0)

    # The action/reward *before* step t sits one index earlier in the padded arrays;
    # index end-1 may reach one slot into the padding, which is zeros (clip keeps
    # end=0's slice in range, and its first element is masked invalid anyway).
    prev = lambda x: jax.lax.dynamic_slice_in_dim(x[episode], jnp.maximum(end - 1, 0),
                                                  length, axis=0)
    steps = end - (length - 1) + jnp.arange(length)  # episode step index of each slot
    valid = steps >= 0
    prev_actions = jnp.where((steps >= 1)[:, None], prev(source.actions), 0.0)
    prev_rewards = jnp.where(steps >= 1, prev(source.rewards), 0.0)
    history = History(obs=take(source.obs), prev_actions=prev_actions,
                      prev_rewards=prev_rewards, valid=valid, task_id=source.task_id[episode])
    return history, take(source.actions)


def sample_batch(key: jax.Array, source: WindowSource, batch_size: int):
    """Windows ending at uniformly random valid steps of episodes drawn with
    `source.episode_logits` (uniform if None). Returns (History, float32[B, L, 4])."""
    k_ep, k_t = jax.random.split(key)
    if source.episode_logits is None:
        episode = jax.random.randint(k_ep, (batch_size,), 0, source.obs.shape[0])
    else:
        episode = jax.random.categorical(k_ep, source.episode_logits, shape=(batch_size,))
    # Uniform over steps of the chosen episode (episodes are equally long in Meta-World).
    end = jnp.floor(jax.random.uniform(k_t, (batch_size,)) * source.lengths[episode])
    return jax.vmap(lambda e, t: window(source, e, t))(episode, end.astype(jnp.int32))


def all_windows(source: WindowSource):
    """(episode int32[M], end int32[M]): one window per valid step of every episode."""
    lengths = np.asarray(source.lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    end = np.concatenate([np.arange(n) for n in lengths])
    return episode.astype(np.int32), end.astype(np.int32)


def evaluate_windows(model, params, source: WindowSource, context_kind: str, embed_fn=None,
                     obs_norm=None, chunk: int = 2048) -> dict:
    """The student on every window of `source` (e.g. teacher episodes on held-out goals).

    Returns {"task_ids": int[T] (sorted), "mse": float64[T] (mean squared error over the
    task's valid steps and action dims), "expert_index": int32[num_blocks, M*L, k],
    "token_task": int32[M*L], "token_valid": bool[M*L]} with M windows of L steps.
    """

    @jax.jit
    def run(params, episode, end):
        history, targets = jax.vmap(lambda e, t: window(source, e, t))(episode, end)
        inputs = student_inputs(context_kind, history, embed_fn, obs_norm)
        predicted, aux = model.apply({"params": params}, inputs, history.valid)
        sq = jnp.sum(jnp.square(predicted - targets), -1) * history.valid  # [B, L]
        return jnp.sum(sq, -1), jnp.sum(history.valid, -1), aux["expert_index"], history.valid

    episode, end = all_windows(source)
    pad = (-len(episode)) % chunk  # one compiled shape; padded windows are dropped
    episode_p, end_p = np.pad(episode, (0, pad)), np.pad(end, (0, pad))
    parts = [jax.device_get(run(params, episode_p[i:i + chunk], end_p[i:i + chunk]))
             for i in range(0, len(episode_p), chunk)]
    sq, count, index, valid = (np.concatenate(x, axis=1 if k == 2 else 0)
                               for k, x in enumerate(zip(*parts)))
    m, length = len(episode), source.seq_len
    sq, count, valid = sq[:m], count[:m], valid[:m].reshape(-1)
    index = index[:, :m * length]
    task = np.asarray(source.task_id)[episode]
    task_ids = np.unique(task)
    mse = np.array([sq[task == t].sum() / (count[task == t].sum() * source.actions.shape[-1])
                    for t in task_ids])
    return {"task_ids": task_ids, "mse": mse, "expert_index": index,
            "token_task": np.repeat(task, length), "token_valid": valid}


@flax.struct.dataclass
class DistillState:
    params: chex.ArrayTree
    opt_state: optax.OptState
    step: jax.Array
    key: jax.Array


def aux_coefficient(step, start: float, decay_per_step: float, minimum: float):
    """Paper Table 6: lambda = 0.01 decreasing by 5e-5 per step down to 1e-4."""
    return jnp.maximum(start - decay_per_step * step, minimum)


def masked_mse(predicted, targets, valid):
    """Mean squared error over valid steps and action dims: float[B, L, A] x2, bool[B, L]."""
    mask = valid.astype(jnp.float32)[..., None]
    return jnp.sum(jnp.square(predicted - targets) * mask) / (jnp.sum(mask) * targets.shape[-1])


def distillation_loss(params, model, history: History, targets, aux_coef, context_kind,
                      embed_fn=None, obs_norm=None, penalty_fn=None):
    """MSE over valid steps between student and teacher action means + aux_coef * L_aux
    (+ penalty_fn(params, inputs, valid, task_id=, aux=): `continual.penalties`).

    Returns (loss, metrics dict)."""
    inputs = student_inputs(context_kind, history, embed_fn, obs_norm)
    predicted, aux = model.apply({"params": params}, inputs, history.valid)
    mse = masked_mse(predicted, targets, history.valid)
    loss = mse + aux_coef * aux["aux_loss"]
    metrics = {"mse": mse, "aux_loss": aux["aux_loss"], "aux_coef": aux_coef}
    if penalty_fn is not None:
        metrics["penalty"] = penalty_fn(params, inputs, history.valid,
                                        task_id=history.task_id, aux=aux)
        loss = loss + metrics["penalty"]
    metrics["loss"] = loss
    return loss, metrics


def apply_updates(params, updates, frozen):
    """optax.apply_updates that returns frozen leaves untouched (the same array) and
    frozen rows of a partly frozen leaf bitwise unchanged.

    frozen: `frozen_mask`'s pytree (Python bools and bool arrays), static under jit.
    """
    flat_p = traverse_util.flatten_dict(params)
    flat_u = traverse_util.flatten_dict(updates)
    flat_f = traverse_util.flatten_dict(frozen)

    def update(p, u, f):
        if isinstance(f, np.ndarray):
            return jnp.where(f, p, optax.apply_updates(p, u))
        return p if f else optax.apply_updates(p, u)

    out = {path: update(p, flat_u[path], flat_f[path]) for path, p in flat_p.items()}
    return traverse_util.unflatten_dict(out)


def make_train_step(model, tx: optax.GradientTransformation, distill_config,
                    context_kind: str = "none", embed_fn=None, obs_norm=None,
                    penalty_fn=None, frozen=None, mesh=None) -> Callable:
    """A jitted `(state, source) -> (state, metrics)` doing one optimizer step on a batch.

    frozen: optional pytree of Python bools (`continual.freezing.frozen_mask`); frozen
    leaves are returned as the very same arrays (bitwise unchanged).
    mesh: optional `jax.sharding.Mesh` with a 'data' axis (`cpd_jax.parallel.make_mesh`):
    the sampled batch is split over it (data parallel), state and source are replicated.
    """
    cfg = distill_config

    def train_step(state: DistillState, source: WindowSource):
        key, sample_key = jax.random.split(state.key)
        batch = sample_batch(sample_key, source, cfg.batch_size)
        if mesh is not None:
            batch = parallel.constrain_batch(batch, mesh)
        history, targets = batch
        coef = aux_coefficient(state.step, cfg.aux_coef_start, cfg.aux_coef_decay,
                               cfg.aux_coef_min)
        grads, metrics = jax.grad(distillation_loss, has_aux=True)(
            state.params, model, history, targets, coef, context_kind, embed_fn, obs_norm,
            penalty_fn)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if frozen is None:
            params = optax.apply_updates(state.params, updates)
        else:
            params = apply_updates(state.params, updates, frozen)
        metrics["grad_norm"] = optax.global_norm(grads)
        return DistillState(params=params, opt_state=opt_state, step=state.step + 1,
                            key=key), metrics

    if mesh is None:
        return jax.jit(train_step)
    parallel.check_batch_divisible(cfg.batch_size, mesh)
    replicated = parallel.replicated_sharding(mesh)
    return jax.jit(train_step, in_shardings=(replicated, replicated),
                   out_shardings=(replicated, replicated))


def num_train_steps(distill_config, source: WindowSource) -> int:
    """`max_steps` if set, else epochs * windows / batch (an epoch = every window once)."""
    if distill_config.max_steps > 0:
        return int(distill_config.max_steps)
    return int(np.ceil(distill_config.epochs * source.num_windows / distill_config.batch_size))


def learning_rate(distill_config, num_steps: int, step_offset: int = 0):
    """The configured learning rate over `num_steps` steps (a float or an optax schedule
    of the optimizer's step count): "constant", or "cosine" (decay to 10% at num_steps).

    step_offset: steps already taken under the same schedule by an earlier optimizer
    (the phases of a stage share one schedule; each phase's optimizer counts from 0).
    """
    cfg = distill_config
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        cosine = optax.cosine_decay_schedule(cfg.learning_rate, max(num_steps, 1), alpha=0.1)
        return cosine if step_offset == 0 else lambda count: cosine(count + step_offset)
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose constant or cosine")


def make_optimizer(distill_config, num_steps: int, step_offset: int = 0
                   ) -> optax.GradientTransformation:
    """AdamW with the configured learning-rate schedule (`learning_rate`)."""
    return optax.adamw(learning_rate(distill_config, num_steps, step_offset),
                       weight_decay=distill_config.weight_decay)


class NonFiniteLossError(UserError, FloatingPointError):
    """Raised by `distill` when the loss becomes NaN or inf: a diverged run, which the
    user fixes (learning rate, data), so the CLI reports it as one line."""


def _check_finite(loss: float, label: str, step: int) -> None:
    if not np.isfinite(loss):
        raise NonFiniteLossError(
            f"{label}: loss became {loss} at step {step}; lower distill.learning_rate or "
            "check the teacher data for NaN/inf (the last checkpoint, if any, is untouched)")


def distill(state: DistillState, train_step, source: WindowSource, num_steps: int,
            log_every: int = 100, label: str = "distill", writer=None,
            global_step_offset: int = 0, steps_done: int = 0, save_every: int = 0,
            save: Callable | None = None):
    """Runs `num_steps` train steps; logs progress; stops on a non-finite loss.

    At every `log_every` steps (and the last): one progress line (steps/s and ETA,
    measured after the first step, which compiles) and, with a `live_metrics`
    writer, the metrics as `distill/<name>` scalars at step
    `global_step_offset + state.step` (a continual run passes the gradient steps of
    its earlier stages, so the run's curves share one x axis).

    steps_done: steps of the `num_steps` already taken (a resumed run: `state` is the
    state after them); the loop, its log points and its saves carry on from there.
    save: `save(state, i, history)` after step i when i is a multiple of `save_every`
    (> 0), with this call's history so far. Never after the last step: the caller
    checkpoints what follows the loop, and a checkpoint taken here would resume past
    it. A state is saved only if its loss is finite.

    Returns (state, history list of metric dicts at each log point).
    """
    writer = writer or live_metrics.DISABLED
    history = []
    meter = progress.Progress(label, num_steps, "steps")
    train_step = progress.log_first_call(train_step, f"{label} train step")
    for i in range(steps_done + 1, num_steps + 1):
        state, metrics = train_step(state, source)
        if i == steps_done + 1:
            meter.restart(done=i)  # the first call compiled: measure the rate after it
        if i % log_every == 0 or i == num_steps:
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            m["step"] = int(state.step)
            _check_finite(m["loss"], label, m["step"])
            history.append(m)
            meter.update(i, f"loss {m['loss']:.5f} mse {m['mse']:.5f} aux {m['aux_loss']:.4f}")
            scalars = {f"distill/{k}": v for k, v in m.items() if k != "step"}
            scalars["distill/steps_per_s"] = meter.rate(i)
            writer.scalars(global_step_offset + m["step"], scalars)
        if save is not None and save_every > 0 and i % save_every == 0 and i < num_steps:
            _check_finite(float(metrics["loss"]), label, int(state.step))
            save(state, i, history)
    return state, history
