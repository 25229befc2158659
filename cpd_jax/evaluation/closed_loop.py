"""Closed-loop evaluation: roll a policy over observation histories in a `BatchedEnv`.

Protocol (Meta-World+): an episode succeeds if `info["success"]` is true at any of
its 500 steps. Each (task, variation) pair is one env of one big batch.
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.envs import MAX_EPISODE_STEPS, BatchedEnv, task_id
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
                    num_steps: int = MAX_EPISODE_STEPS) -> dict:
    """Runs one episode per env with `policy(History) -> float32[B, 4]`.

    Returns {"success": bool[B] (any step), "return": float32[B]}.
    """
    obs = env.reset(np.asarray(variations))
    b, obs_dim = obs.shape
    history = empty_history(b, seq_len, obs_dim, 4, [task_id(t) for t in env.tasks])
    prev_action, prev_reward = np.zeros((b, 4), np.float32), np.zeros(b, np.float32)
    success, returns = np.zeros(b, bool), np.zeros(b, np.float64)
    for _ in range(num_steps):
        history = push(history, jnp.asarray(obs), jnp.asarray(prev_action),
                       jnp.asarray(prev_reward))
        action = np.clip(np.asarray(policy(history)), -1.0, 1.0)
        tr = env.step(action)
        success |= tr.success
        returns += tr.reward
        obs, prev_action, prev_reward = tr.obs, action, tr.reward
    return {"success": success, "return": returns.astype(np.float32)}


def evaluate_tasks(make_env: Callable[[Sequence[str]], BatchedEnv], policy,
                   tasks: Sequence[str], variations: Sequence[int], seq_len: int,
                   num_steps: int = MAX_EPISODE_STEPS) -> dict:
    """Success rate per task over the given variations (all tasks in one batch).

    Returns {task: {"success_rate": float, "mean_return": float, "episodes": int}}.
    """
    batch_tasks = [t for t in tasks for _ in variations]
    batch_vars = [v for _ in tasks for v in variations]
    out = rollout_success(make_env(batch_tasks), policy, batch_vars, seq_len, num_steps)
    n = len(variations)
    return {t: {"success_rate": float(out["success"][i * n:(i + 1) * n].mean()),
                "mean_return": float(out["return"][i * n:(i + 1) * n].mean()),
                "episodes": n}
            for i, t in enumerate(tasks)}


def student_policy(model, params, context_kind: str, embed_fn=None, obs_norm=None):
    """A jitted `History -> float32[B, 4]`: the student's action at the last step."""
    from cpd_jax.student.inputs import student_inputs

    @jax.jit
    def act(params, history: History):  # params as an argument: no constant folding
        inputs = student_inputs(context_kind, history, embed_fn, obs_norm)
        actions, _ = model.apply({"params": params}, inputs, history.valid)
        return actions[:, -1]

    return lambda history: act(params, history)
