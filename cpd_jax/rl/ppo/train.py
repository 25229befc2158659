"""PPO training as pure JAX functions (brax / purejaxrl style): the TrainState, the
pure pieces `make_ppo` builds, the host-looped chunk, and many tasks vmapped/sharded.

`make_train(config, env)` returns a pure `train(key, task_params=None)`; everything
inside is `lax.scan`: rollout -> GAE -> epochs x minibatches, grouped into eval
periods after which a task early-stops once its deterministic success reaches
`config.early_stop_success`. Because `train` is pure, tasks vmap for free
(`make_multi_task_train`), and the task axis is sharded over devices with
`jax.sharding` (`shard_tasks`). A task that has stopped keeps computing under vmap
but its state is frozen by a `jnp.where` over the whole TrainState pytree.

What happens in a chunk (rollout -> update, masked once a task has stopped, then the
eval and the stop decision, per eval period) is written once, in `Loops`, over the pure
pieces (`ChunkPieces`) and a `scan`. It has two drivers: `make_ppo`'s `train_chunk`
runs it with `jax.lax.scan` on the unbatched pieces (one XLA program; vmap it over
tasks), `make_host_chunk` with `host_scan` (a Python loop) on jitted, task-vmapped
pieces: for MJX on a CPU, where XLA needs far more memory to compile an env step nested
in scans.

`config` here is the `ppo` ConfigDict of `cpd_jax/configs/teachers_ppo.py`; `env` is a
functional env (`cpd_jax.envs.functional.Env`). The math pieces (GAE, the linear baseline, the
PPO loss) are in `losses`, the networks in `networks`, the observation normaliser in
`normalizer`; the impure driver of a teachers job (checkpoints, export) is `runner`.

One module despite its length: `make_ppo`'s pieces close over one config and env, and
the two drivers and the task sharding are thin layers over them; split, each file would
reach into the others' closures.
"""

import functools
from typing import Any, Callable, NamedTuple, Optional

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cpd_jax.envs.functional import Env, EnvState, auto_reset, bind_task, tree_where
from cpd_jax.rl.ppo import networks
from cpd_jax.rl.ppo.losses import (compute_gae, fit_linear_baseline,
                                   linear_baseline_features, ppo_loss)
from cpd_jax.rl.ppo.normalizer import (RunningStats, init_running_stats, normalize_obs,
                                       update_running_stats)

# ---------------------------------------------------------------------- train state


@struct.dataclass
class TrainState:
    """Everything one teacher's training carries between updates.

    params: {'policy': ..., 'critic': ...} ('critic' only for the MLP baseline);
    opt_state: optax state of params; obs_stats: RunningStats[D];
    baseline_coeffs: float32[2D + 4] (linear baseline; unused for the MLP critic);
    env_state: EnvState batched over B envs; episode_t: int32[B] (step in episode);
    episode_return: float32[B]; episode_success: float32[B] (1 if success so far);
    key: PRNG key; task_params: pytree the env is bound to (None for one-task envs);
    env_steps: int32[] env steps trained on; num_updates: int32[];
    stopped: bool[] (early-stopped: the state no longer changes);
    eval_success: float32[] (last deterministic eval success rate).
    """

    params: Any
    opt_state: Any
    obs_stats: RunningStats
    baseline_coeffs: jax.Array
    env_state: EnvState
    episode_t: jax.Array
    episode_return: jax.Array
    episode_success: jax.Array
    key: jax.Array
    task_params: Any
    env_steps: jax.Array
    num_updates: jax.Array
    stopped: jax.Array
    eval_success: jax.Array


@struct.dataclass
class Transition:
    """A rollout, float32[T, B, ...] unless noted: obs (raw) [.., D], t int32 [T, B],
    u (pre-tanh action) [.., A], log_prob, reward, done, success."""

    obs: jax.Array
    t: jax.Array
    u: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    done: jax.Array
    success: jax.Array


class ChunkPieces(NamedTuple):
    """`train_chunk` taken apart at its env steps: what `Loops` composes. All pure and
    unbatched (one task), like `PPOFunctions` (`make_host_chunk` jits and vmaps each
    over tasks); `carry` is the rollout's or the evaluation's loop state.

    rollout_carry(state) -> carry; rollout_keys(key) -> keys[T];
    rollout_step(state, carry, key) -> (carry, out);
    rollout_finish(state, carry, traj[T], ep[T]) -> (state, traj, stats);
    update_keys(state) -> (key, k_roll, k_sgd); learn(state, key, k_sgd, traj, stats)
    -> (state, metrics); masked(old, new) -> new unless old has early-stopped;
    mean_updates(metrics[U]) -> metrics (mean over a period's updates);
    eval_key(state) -> key; eval_start(state, key) -> carry;
    eval_step(state, carry) -> carry; eval_finish(carry) -> metrics;
    end_period(state, was_stopped, metrics, eval_metrics) -> (state, metrics).
    """

    rollout_carry: Any
    rollout_keys: Any
    rollout_step: Any
    rollout_finish: Any
    update_keys: Any
    learn: Any
    masked: Any
    mean_updates: Any
    eval_key: Any
    eval_start: Any
    eval_step: Any
    eval_finish: Any
    end_period: Any


class Loops(NamedTuple):
    """The training orchestration, written once: `ChunkPieces` composed into an update,
    an evaluation, an eval period and a chunk of periods, with every loop (env steps of
    a rollout or an eval, updates of a period, periods of a chunk) run by `scan`.

    Two drivers: `Loops(pieces, jax.lax.scan, ...)` on the unbatched pieces is
    `make_ppo`'s `update`/`evaluate`/`train_chunk`; `Loops(task-vmapped jitted pieces,
    host_scan, ...)` is `make_host_chunk` (and `scan_once` its warmup).
    scan: `scan(f, carry, xs=None, length=None) -> (carry, ys)` with `jax.lax.scan`'s
    contract (xs and ys stacked on the loop axis).
    """

    pieces: ChunkPieces
    scan: Callable
    updates_per_eval: int
    episode_length: int

    def update(self, state: TrainState) -> tuple[TrainState, dict]:
        """One rollout + PPO update (not masked)."""
        p = self.pieces
        key, k_roll, k_sgd = p.update_keys(state)
        carry, (traj, ep) = self.scan(lambda cr, k: p.rollout_step(state, cr, k),
                                      p.rollout_carry(state), p.rollout_keys(k_roll))
        state, traj, stats = p.rollout_finish(state, carry, traj, ep)
        return p.learn(state, key, k_sgd, traj, stats)

    def evaluate(self, state: TrainState, key) -> dict:
        p = self.pieces
        carry, _ = self.scan(lambda cr, _: (p.eval_step(state, cr), None),
                             p.eval_start(state, key), None, length=self.episode_length)
        return p.eval_finish(carry)

    def period(self, state: TrainState, progress=None) -> tuple[TrainState, dict]:
        """One eval period: `updates_per_eval` masked updates, then the evaluation and
        the early-stop decision. progress: optional `progress(str)` after every update
        and evaluation (host drivers only: it reads the values)."""
        p = self.pieces
        was_stopped = state.stopped

        def masked_update(state, _):
            new_state, m = self.update(state)
            # An early-stopped task keeps its state bit for bit (its compute is wasted
            # under vmap, but the other tasks go on).
            state = p.masked(state, new_state)
            if progress:
                progress(f"update done: env steps {np.asarray(state.env_steps).tolist()}, "
                         f"train success {np.round(np.asarray(m['train_success']), 2).tolist()}")
            return state, m

        state, m = self.scan(masked_update, state, None, length=self.updates_per_eval)
        m = p.mean_updates(m)
        state, m = p.end_period(state, was_stopped, m,
                                self.evaluate(state, p.eval_key(state)))
        if progress:
            progress(f"eval success {np.round(np.asarray(m['eval_success']), 2).tolist()}")
        return state, m

    def chunk(self, state: TrainState, n_evals: int, progress=None):
        """n_evals eval periods -> (state, metrics stacked over the periods)."""
        return self.scan(lambda st, _: self.period(st, progress), state, None,
                         length=n_evals)


def _stack(ys: list, axis: int) -> Any:
    return jax.tree_util.tree_map(lambda *y: jnp.stack(y, axis), *ys)


def _loop_length(xs, length) -> int:
    return length if xs is None else jax.tree_util.tree_leaves(xs)[0].shape[1]


def host_scan(f, carry, xs=None, length=None):
    """`jax.lax.scan` as a Python loop over task-batched values: the loop axis of `xs`
    and of the stacked outputs is axis 1 (axis 0 is the task axis)."""
    ys = []
    for i in range(_loop_length(xs, length)):
        carry, y = f(carry, None if xs is None else
                     jax.tree_util.tree_map(lambda x: x[:, i], xs))
        ys.append(y)
    return carry, _stack(ys, 1)


def scan_once(f, carry, xs=None, length=None):
    """`host_scan` that runs `f` once and repeats its output `length` times: every piece
    is called (so compiled) with the shapes of a real run, at the cost of one step."""
    x = None if xs is None else jax.tree_util.tree_map(lambda x: x[:, 0], xs)
    carry, y = f(carry, x)
    return carry, _stack([y] * _loop_length(xs, length), 1)


class PPOFunctions(NamedTuple):
    """The pure pieces `make_ppo` builds; all are jit/vmap-able.

    init(key, task_params=None) -> TrainState
    update(state) -> (state, metrics): one rollout + PPO update (not masked)
    evaluate(state, key) -> metrics: deterministic (tanh(mean)) episodes
    train_chunk(state, num_evals) -> (state, metrics[num_evals]): eval periods with
        masked updates and early stop (num_evals is static)
    train(key, task_params=None) -> (state, metrics[num_evals_total])
    policy_apply(policy_params, obs_normalised) -> (mean, log_std)
    pieces: ChunkPieces, the parts `Loops` composes (`make_host_chunk` jits and
        vmaps each over tasks)
    """

    init: Any
    update: Any
    evaluate: Any
    train_chunk: Any
    train: Any
    policy_apply: Any
    pieces: ChunkPieces
    num_evals: int
    updates_per_eval: int


def schedule(config) -> tuple[int, int, int]:
    """(rollout_steps, updates_per_eval, num_evals) implied by the config."""
    rollout_steps = config.num_envs * config.unroll_length
    updates_per_eval = max(1, int(config.eval_every_steps) // rollout_steps)
    num_evals = max(1, int(config.total_env_steps) // (updates_per_eval * rollout_steps))
    return rollout_steps, updates_per_eval, num_evals


def make_ppo(config, env: Env) -> PPOFunctions:
    """Builds the pure PPO functions for `env` under `config` (the `ppo` ConfigDict)."""
    c = config
    obs_size, action_size = env.observation_size, env.action_size
    rollout_steps, updates_per_eval, num_evals = schedule(c)
    batch_size = rollout_steps
    minibatch_size = batch_size // c.num_minibatches  # remainder dropped per epoch
    if minibatch_size < 1:
        raise ValueError(f"rollout of {batch_size} steps < {c.num_minibatches} minibatches")
    use_linear = c.baseline == "linear"
    if c.baseline not in ("linear", "mlp"):
        raise ValueError(f"baseline must be 'linear' or 'mlp', got {c.baseline!r}")
    num_features = 2 * obs_size + 4

    policy = networks.make_policy(c, action_size)
    critic = networks.Critic(hidden=tuple(c.critic_hidden), activation=c.activation)
    optimizer = optax.chain(optax.clip_by_global_norm(c.max_grad_norm),
                            optax.adam(c.learning_rate, eps=c.adam_eps))

    def norm(stats, obs):
        return normalize_obs(stats, obs, c.obs_clip, c.normalize_observations)

    def features(obs_n, t):
        return linear_baseline_features(obs_n, t, c.baseline_feature_clip,
                                        c.baseline_time_scale)

    def value_fn(params, coeffs, obs_n, t):
        """float32[..., D], int32[...] -> float32[...]."""
        if use_linear:
            return features(obs_n, t) @ coeffs
        return critic.apply(params["critic"], obs_n)

    def reset_batch(bound_env, key):
        return jax.vmap(bound_env.reset)(jax.random.split(key, c.num_envs))

    def init(key, task_params=None) -> TrainState:
        k_pol, k_crit, k_env, k_state = jax.random.split(key, 4)
        dummy = jnp.zeros((obs_size,), jnp.float32)
        params = {"policy": policy.init(k_pol, dummy)}
        if not use_linear:
            params["critic"] = critic.init(k_crit, dummy)
        bound_env = bind_task(env, task_params)
        zeros_b = jnp.zeros((c.num_envs,), jnp.float32)
        return TrainState(
            params=params, opt_state=optimizer.init(params),
            obs_stats=init_running_stats(obs_size),
            baseline_coeffs=jnp.zeros((num_features,), jnp.float32),
            env_state=reset_batch(bound_env, k_env),
            episode_t=jnp.zeros((c.num_envs,), jnp.int32),
            episode_return=zeros_b, episode_success=zeros_b, key=k_state,
            task_params=task_params, env_steps=jnp.zeros((), jnp.int32),
            num_updates=jnp.zeros((), jnp.int32), stopped=jnp.zeros((), bool),
            eval_success=jnp.zeros((), jnp.float32))

    # ------------------------------------------------------------------- rollout
    # A rollout is `rollout_step` scanned over `rollout_keys` between `rollout_carry`
    # and `rollout_finish` (`Loops.update`); the pieces are separate so a host loop can
    # call a jitted `rollout_step` instead of the scan (`make_host_chunk`).
    def rollout_carry(state: TrainState):
        """(env_state, episode_t, episode_return, episode_success) of the state."""
        return (state.env_state, state.episode_t, state.episode_return,
                state.episode_success)

    def rollout_keys(key):
        return jax.random.split(key, c.unroll_length)

    def rollout_step(state: TrainState, carry, k):
        """One env step of every env under the stochastic policy (with auto-reset).
        Returns (carry, (Transition[B], (done, return, success)[B] of ended episodes))."""
        bound_env = bind_task(env, state.task_params)
        env_state, t, ep_ret, ep_succ = carry
        k_act, k_reset = jax.random.split(k)
        obs = env_state.obs
        mean, log_std = policy.apply(state.params["policy"], norm(state.obs_stats, obs))
        u = mean + jnp.exp(log_std) * jax.random.normal(k_act, mean.shape)
        log_prob = networks.tanh_gaussian_log_prob(u, mean, log_std)
        nxt = jax.vmap(bound_env.step)(env_state, jnp.tanh(u))
        t1 = t + 1
        done = (nxt.done > 0) | (t1 >= c.episode_length)
        success = nxt.info["success"].astype(jnp.float32)
        ep_ret1 = ep_ret + nxt.reward
        ep_succ1 = jnp.maximum(ep_succ, success)
        # Reset only when some env finished (cheap when episodes align with
        # rollouts; under a task vmap the cond becomes a select). The episode
        # statistics (t, return, success) live in the carry, not in the env state.
        env_state1 = auto_reset(done, nxt, lambda _: reset_batch(bound_env, k_reset))
        donef = done.astype(jnp.float32)
        carry1 = (env_state1, jnp.where(done, 0, t1), ep_ret1 * (1.0 - donef),
                  ep_succ1 * (1.0 - donef))
        tr = Transition(obs=obs, t=t, u=u, log_prob=log_prob, reward=nxt.reward,
                        done=donef, success=success)
        ep = (donef, ep_ret1 * donef, ep_succ1 * donef)
        return carry1, (tr, ep)

    def rollout_finish(state: TrainState, carry, traj: Transition, ep
                       ) -> tuple[TrainState, Transition, dict]:
        """The state after the rollout, the rollout (leaves [T, B, ...]) and its stats."""
        env_state, t, ep_ret, ep_succ = carry
        n_done = jnp.sum(ep[0])
        stats = {"train_episodes": n_done,
                 "train_return": jnp.sum(ep[1]) / jnp.maximum(n_done, 1.0),
                 "train_success": jnp.sum(ep[2]) / jnp.maximum(n_done, 1.0),
                 "train_reward_per_step": jnp.mean(traj.reward)}
        state = state.replace(env_state=env_state, episode_t=t, episode_return=ep_ret,
                              episode_success=ep_succ)
        return state, traj, stats

    # ---------------------------------------------------------------------- loss
    loss_fn = functools.partial(ppo_loss, policy=policy,
                                critic=None if use_linear else critic, config=c)

    def sgd_step(carry, mb):
        params, opt_state = carry
        grads, m = jax.grad(loss_fn, has_aux=True)(params, mb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        m["grad_norm"] = optax.global_norm(grads)
        return (optax.apply_updates(params, updates), opt_state), m

    # -------------------------------------------------------------------- update
    def update_keys(state: TrainState):
        """(next state key, rollout key, SGD key)."""
        return tuple(jax.random.split(state.key, 3))

    def learn(state: TrainState, key, k_sgd, traj: Transition, roll_stats: dict
              ) -> tuple[TrainState, dict]:
        """GAE, baseline fit and epochs x minibatches of SGD on the rollout `traj`;
        `key` becomes the state's key."""
        obs_n = norm(state.obs_stats, traj.obs)                       # [T, B, D]
        last_obs_n = norm(state.obs_stats, state.env_state.obs)       # [B, D]
        values = value_fn(state.params, state.baseline_coeffs, obs_n, traj.t)
        last_value = value_fn(state.params, state.baseline_coeffs, last_obs_n,
                              state.episode_t)
        adv, ret = compute_gae(traj.reward, values, traj.done, last_value,
                               c.gamma, c.gae_lambda)
        coeffs = state.baseline_coeffs
        if use_linear:
            # Fitted after computing this batch's advantages (garage/rllab order):
            # the advantages use the baseline fitted on the previous batch.
            _, mc_ret = compute_gae(traj.reward, values, traj.done, last_value, c.gamma, 1.0)
            coeffs = fit_linear_baseline(features(obs_n, traj.t).reshape(-1, num_features),
                                         mc_ret.reshape(-1), c.baseline_ridge)
        flat = lambda x: x.reshape((batch_size,) + x.shape[2:])
        adv = flat(adv)
        if c.normalize_advantages:
            adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
        batch = {"obs": flat(obs_n), "u": flat(traj.u), "log_prob": flat(traj.log_prob),
                 "adv": adv, "ret": flat(ret)}

        def epoch(carry, k):
            perm = jax.random.permutation(k, batch_size)
            perm = perm[:c.num_minibatches * minibatch_size].reshape(
                c.num_minibatches, minibatch_size)
            mbs = jax.tree_util.tree_map(lambda x: x[perm], batch)
            return jax.lax.scan(sgd_step, carry, mbs)

        (params, opt_state), sgd_m = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(k_sgd, c.num_epochs))
        # Normaliser updated after the SGD so the ratio starts at exactly 1 (the rollout
        # and the update see the same statistics).
        obs_stats = state.obs_stats
        if c.normalize_observations:
            obs_stats = update_running_stats(obs_stats, traj.obs.reshape(-1, obs_size))
        metrics = {k: jnp.mean(v) for k, v in sgd_m.items()}
        metrics.update(roll_stats)
        metrics["baseline_explained_var"] = 1.0 - jnp.var(ret - values) / (jnp.var(ret) + 1e-8)
        state = state.replace(params=params, opt_state=opt_state, obs_stats=obs_stats,
                              baseline_coeffs=coeffs, key=key,
                              env_steps=state.env_steps + rollout_steps,
                              num_updates=state.num_updates + 1)
        return state, metrics

    # ------------------------------------------------------------------ evaluate
    # Deterministic tanh(mean) episodes of `episode_length` steps on `num_eval_envs`
    # fresh resets; success = success at any step. Split like the rollout.
    def eval_start(state: TrainState, key):
        """(env states, alive, return, success), each batched over the eval envs."""
        s0 = jax.vmap(bind_task(env, state.task_params).reset)(
            jax.random.split(key, c.num_eval_envs))
        ones = jnp.ones((c.num_eval_envs,), jnp.float32)
        return (s0, ones, 0.0 * ones, 0.0 * ones)

    def eval_step(state: TrainState, carry):
        s, alive, ret, succ = carry
        mean, _ = policy.apply(state.params["policy"], norm(state.obs_stats, s.obs))
        s1 = jax.vmap(bind_task(env, state.task_params).step)(s, jnp.tanh(mean))
        ret = ret + alive * s1.reward
        succ = jnp.maximum(succ, alive * s1.info["success"].astype(jnp.float32))
        alive = alive * (1.0 - (s1.done > 0).astype(jnp.float32))
        return (s1, alive, ret, succ)

    def eval_finish(carry) -> dict:
        _, _, ret, succ = carry
        return {"eval_success": jnp.mean(succ), "eval_return": jnp.mean(ret)}

    # ------------------------------------------------------------- eval periods
    def masked(old: TrainState, new: TrainState) -> TrainState:
        return tree_where(old.stopped, old, new)

    def mean_updates(m: dict) -> dict:
        return jax.tree_util.tree_map(jnp.mean, m)

    def eval_key(state: TrainState):
        return jax.random.fold_in(state.key, state.num_updates)

    def end_period(state: TrainState, was_stopped, m: dict, ev: dict):
        """Early stop on the eval success; (state, the period's metrics)."""
        stopped = was_stopped | (ev["eval_success"] >= c.early_stop_success)
        state = state.replace(
            stopped=stopped,
            eval_success=jnp.where(was_stopped, state.eval_success, ev["eval_success"]))
        m.update(ev)
        m.update({"env_steps": state.env_steps, "active": ~was_stopped,
                  "stopped": stopped})
        return state, m

    # --------------------------------------------------------------- train loops
    pieces = ChunkPieces(
        rollout_carry=rollout_carry, rollout_keys=rollout_keys, rollout_step=rollout_step,
        rollout_finish=rollout_finish, update_keys=update_keys, learn=learn,
        masked=masked, mean_updates=mean_updates, eval_key=eval_key,
        eval_start=eval_start, eval_step=eval_step, eval_finish=eval_finish,
        end_period=end_period)
    loops = Loops(pieces, jax.lax.scan, updates_per_eval, c.episode_length)

    def train_chunk(state: TrainState, n_evals: int):
        return loops.chunk(state, n_evals)

    def train(key, task_params=None):
        return train_chunk(init(key, task_params), num_evals)

    return PPOFunctions(init=init, update=loops.update, evaluate=loops.evaluate,
                        train_chunk=train_chunk, train=train, policy_apply=policy.apply,
                        pieces=pieces,
                        num_evals=num_evals, updates_per_eval=updates_per_eval)


def make_host_chunk(fns: PPOFunctions, config):
    """`host_chunk(state[N], n_evals, progress=None) -> (state[N], metrics[N, n_evals])`:
    the same computation as `jax.jit(jax.vmap(fns.train_chunk))` (the same keys, the
    same masking of early-stopped tasks), but the loops over env steps, updates and
    eval periods run in Python around small jitted, task-vmapped pieces.

    Why: XLA then compiles the env step as a plain program instead of inside nested
    while loops. On this project's 2-core CPU (door-open-v3, `benchmarks/ppo_compile.py`)
    the scanned chunk compiles in ~300 s at 8.2 GB peak, and the runner's 2-period
    chunk passed 11 GB; the host pieces compile in ~140 s at 5.4 GB. A step of 256 MJX
    envs takes ~0.1-1 s, so one dispatch per step costs nothing measurable. On a GPU/TPU the
    scanned chunk (no host round trips) is the default (`teachers.rollout_loop`).

    progress: optional `progress(str)`, called after every update and evaluation (on
    the CPU an update of 25,600 MJX env steps takes a minute or more).
    `host_chunk.warmup(state)` compiles every piece without training.
    """
    c = config
    pieces = ChunkPieces(*(jax.jit(jax.vmap(f)) for f in fns.pieces))
    loops = Loops(pieces, host_scan, fns.updates_per_eval, c.episode_length)

    def host_chunk(state, n_evals: int, progress=None):
        return loops.chunk(state, n_evals, progress)

    def warmup(state) -> None:
        """Compiles every piece by running each once on `state` (results dropped), so
        a caller can time compilation apart from training."""
        jax.block_until_ready(loops._replace(scan=scan_once).period(state))

    host_chunk.warmup = warmup
    return host_chunk


def make_train(config, env: Env):
    """purejaxrl-style entry point: a pure `train(key, task_params=None) ->
    (TrainState, metrics)` with metrics float32[num_evals] per field."""
    return make_ppo(config, env).train


# ---------------------------------------------------------------- many teachers


def task_mesh(devices: Optional[list] = None) -> jax.sharding.Mesh:
    """A 1-D mesh over `devices` (default: all local devices) with axis 'tasks'."""
    devices = jax.local_devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("tasks",))


def shard_tasks(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places every leaf's leading (task) axis across the mesh's 'tasks' axis."""
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tasks"))
    return jax.device_put(tree, sharding)


def pad_tasks(tree: Any, multiple: int) -> tuple[Any, int]:
    """Pads the leading axis to a multiple of `multiple` by repeating the last task.
    Returns (padded tree, original size); padded tasks' results are to be dropped."""
    n = jax.tree_util.tree_leaves(tree)[0].shape[0]
    pad = (-n) % multiple
    if pad == 0:
        return tree, n
    return jax.tree_util.tree_map(
        lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), tree), n


def make_multi_task_train(config, env: Env, mesh: Optional[jax.sharding.Mesh] = None):
    """`train_tasks(keys[N], task_params[N] or None) -> (TrainState[N], metrics[N, E])`:
    N teachers in one jitted program, vmapped over the task axis and, when `mesh` is
    given, sharded over its 'tasks' axis (N is padded to a multiple of the mesh size)."""
    fns = make_ppo(config, env)
    vtrain = jax.jit(jax.vmap(fns.train))

    def train_tasks(keys, task_params=None):
        if mesh is None:
            return vtrain(keys, task_params)
        (keys_p, params_p), n = pad_tasks((keys, task_params), mesh.size)
        out = vtrain(*shard_tasks((keys_p, params_p), mesh))
        return jax.tree_util.tree_map(lambda x: x[:n], out)

    return train_tasks
