"""Closed-loop evaluation: roll a policy over observation histories in a `BatchedEnv`.

Protocol (Meta-World+): an episode succeeds if `info["success"]` is true at any of
its 500 steps. Each (task, variation) pair is one env of one big batch.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax import parallel, progress
from cpd_jax.envs import MAX_EPISODE_STEPS, BatchedEnv, make_env, task_id
from cpd_jax.evaluation import protocol
from cpd_jax.student.inputs import History


def push(history: History, obs, prev_action, prev_reward) -> History:
    """Shifts the window left by one step and appends the newest step at the end."""

    def roll(x, new):
        return jnp.concatenate([x[:, 1:], new[:, None]], axis=1)

    return history.replace(
        obs=roll(history.obs, obs), prev_actions=roll(history.prev_actions, prev_action),
        prev_rewards=roll(history.prev_rewards, prev_reward),
        valid=roll(history.valid, jnp.ones(obs.shape[0], bool)))


def empty_history(batch: int, seq_len: int, obs_dim: int, action_dim: int,
                  task_ids: Sequence[int]) -> History:
    return History(obs=jnp.zeros((batch, seq_len, obs_dim)),
                   prev_actions=jnp.zeros((batch, seq_len, action_dim)),
                   prev_rewards=jnp.zeros((batch, seq_len)),
                   valid=jnp.zeros((batch, seq_len), bool),
                   task_id=jnp.asarray(task_ids, jnp.int32))


def rollout_success(env: BatchedEnv, policy: Callable[[History], jax.Array],
                    variations: Sequence[int], seq_len: int,
                    num_steps: int = MAX_EPISODE_STEPS, stop_at_success: bool = True) -> dict:
    """Runs one episode per env with `policy(History) -> float32[B, 4]`.

    stop_at_success: stop stepping an episode once it has succeeded. Success counts at
    any step, so the success of every episode is exactly what a full episode gives; the
    return is then the return up to the first success. Episodes that succeed early are
    most of a trained student's, so this is most of the evaluation's cost.
    Returns {"success": bool[B] (any step), "return": float32[B],
    "steps": int32[B] (steps run)}.
    """
    obs = env.reset(np.asarray(variations))
    b, obs_dim = obs.shape
    history = empty_history(b, seq_len, obs_dim, 4, [task_id(t) for t in env.tasks])
    prev_action, prev_reward = np.zeros((b, 4), np.float32), np.zeros(b, np.float32)
    success, returns = np.zeros(b, bool), np.zeros(b, np.float64)
    steps = np.zeros(b, np.int32)
    for _ in range(num_steps):
        active = ~success if stop_at_success else np.ones(b, bool)
        if not active.any():
            break
        history = push(history, jnp.asarray(obs), jnp.asarray(prev_action),
                       jnp.asarray(prev_reward))
        action = np.clip(np.asarray(policy(history)), -1.0, 1.0)
        tr = env.step(action, active)
        success |= tr.success & active
        returns += np.where(active, tr.reward, 0.0)
        steps += active
        obs, prev_action, prev_reward = tr.obs, action, tr.reward
    return {"success": success, "return": returns.astype(np.float32), "steps": steps}


def evaluate_tasks(make_env: Callable[[Sequence[str]], BatchedEnv], policy,
                   tasks: Sequence[str], variations: Sequence[int], seq_len: int,
                   num_steps: int = MAX_EPISODE_STEPS, stop_at_success: bool = True,
                   max_envs: int = 100) -> dict:
    """Success rate per task over the given variations.

    Every task runs in one batch, in waves of `max(1, max_envs // len(tasks))` variations
    each (a reference env holds ~25 MB, so 25 tasks x 20 episodes at once would take
    12 GB); episodes are independent, so the waves give the same numbers as one batch.
    Returns {task: {"success_rate": float, "mean_return": float, "episodes": int,
    "successes": [bool per variation], "returns": [float per variation]}} (with
    stop_at_success, the return is counted up to each episode's first success).
    """
    per_wave = max(1, max_envs // len(tasks))
    success, returns = {t: [] for t in tasks}, {t: [] for t in tasks}
    # Every task runs in every wave, so progress is counted in episodes, wave by wave.
    num_waves = -(-len(variations) // per_wave)
    meter = progress.Progress(f"evaluation of {len(tasks)} task(s)",
                              len(tasks) * len(variations), "episodes")
    for wave_index, start in enumerate(range(0, len(variations), per_wave)):
        wave = list(variations[start:start + per_wave])
        env = make_env([t for t in tasks for _ in wave])
        try:
            out = rollout_success(env, policy, [v for _ in tasks for v in wave], seq_len,
                                  num_steps, stop_at_success)
        finally:
            env.close()
        n = len(wave)
        for i, t in enumerate(tasks):
            success[t] += out["success"][i * n:(i + 1) * n].tolist()
            returns[t] += out["return"][i * n:(i + 1) * n].tolist()
        meter.update(len(tasks) * (start + n), f"wave {wave_index + 1}/{num_waves}")
    return {t: task_result(success[t], returns[t]) for t in tasks}


def task_result(successes: Sequence[bool], returns: Sequence[float]) -> dict:
    """One task's evaluation entry from its episodes' success and return."""
    return {"success_rate": float(np.mean(successes)), "mean_return": float(np.mean(returns)),
            "episodes": len(successes), "successes": [bool(x) for x in successes],
            "returns": [float(x) for x in returns]}


def merge_results(parts: Sequence[dict], tasks: Sequence[str]) -> dict:
    """One `evaluate_tasks` result from several over disjoint goals (the processes of a
    multi-host run, in process order; an empty part ran no goal)."""
    if len(parts) == 1:
        return parts[0]
    return {t: task_result([x for p in parts if p for x in p[t]["successes"]],
                           [x for p in parts if p for x in p[t]["returns"]]) for t in tasks}


def student_policy(model, params, context_kind: str, embed_fn=None, obs_norm=None):
    """A jitted `History -> float32[B, 4]`: the student's action at the last step."""
    from cpd_jax.student.inputs import student_inputs

    @jax.jit
    def act(params, history: History):  # params as an argument: no constant folding
        inputs = student_inputs(context_kind, history, embed_fn, obs_norm)
        actions, _ = model.apply({"params": params}, inputs, history.valid)
        return actions[:, -1]

    return progress.log_first_call(lambda history: act(params, history),
                                   "the student policy (evaluation)")


def evaluate_student(config, model, params, obs_norm, tasks, embed_fn=None) -> dict:
    """Closed-loop success of the student on `tasks` under `config.eval` (the protocol's
    goals); {task: {"success_rate", "mean_return", "episodes", "successes"}}.

    On several processes each runs its `parallel.process_share` of the goals and every
    process gets the merged result (`merge_results`).
    """
    policy = student_policy(model, parallel.host_local(params), config.student.task_context,
                            embed_fn=embed_fn, obs_norm=obs_norm)
    variations = parallel.process_share(protocol.eval_variations(config),
                                        jax.process_index(), jax.process_count())
    mine = evaluate_tasks(
        lambda ts: make_env(config.env.backend, ts), policy, tasks, variations,
        config.student.seq_len, stop_at_success=config.eval.stop_at_success,
        max_envs=config.eval.max_envs) if variations else {}
    return merge_results(parallel.gather_json("evaluation", mine), tasks)
