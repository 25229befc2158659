"""Configs shared by several test files.

Test files import from here (`from tests.helpers import ...`), never from each other: a
test module imported under a second name runs twice and its caches are not shared.
Tests that use the same config also share the compiled functions (`rl.ppo.runner` caches
them per config), which is why these configs are defined once.
"""

import numpy as np

from cpd_jax.configs import mt25_5stage_cpu, teachers_ppo_cpu

# Three point-mass goals of the toy PPO env (cpd_jax.envs.toy_envs).
TOY_TASKS3 = ("point-mass-center", "point-mass-east", "point-mass-north")
# Three Meta-World tasks with cheap scripted teachers, one per stage of the tiny runs.
TINY_CONTINUAL_TASKS = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")


def small_ppo_config(num_evals: int = 2):
    """The CPU PPO config cut to `num_evals` eval periods of 2 updates, with no early
    stop: equality tests need a fixed amount of work."""
    c = teachers_ppo_cpu.get_config().ppo
    c.eval_every_steps = 2 * c.num_envs * c.unroll_length  # 2 updates per eval period
    c.total_env_steps = num_evals * c.eval_every_steps
    c.num_eval_envs = 8
    c.early_stop_success = 2.0  # never: these tests need a fixed amount of work
    return c


def runner_config(total_evals: int):
    """A teachers config for `rl.ppo.runner.train_teachers`: two toy tasks, chunks of two
    eval periods, the PPO block of `small_ppo_config` (same compiled functions)."""
    config = teachers_ppo_cpu.get_config()
    config.ppo = small_ppo_config(total_evals)
    config.teachers.tasks = ("point-mass-east", "point-mass-north")
    config.teachers.evals_per_chunk = 2
    return config


def tiny_continual_config(method: str = "ours"):
    """Three one-task stages of `TINY_CONTINUAL_TASKS`: 2 episodes per task, a 1-block
    student of width 16, 12 distillation steps per stage, a non-empty replay."""
    c = mt25_5stage_cpu.get_config()
    c.tasks = TINY_CONTINUAL_TASKS
    c.method = method
    c.continual.stage_sizes = (1, 1, 1)
    c.data.episodes_per_task = 2
    c.student.dim, c.student.num_blocks, c.student.num_experts, c.student.seq_len = 16, 1, 2, 4
    c.continual.new_experts_per_stage = 1
    c.distill.max_steps, c.distill.batch_size, c.distill.log_every = 12, 16, 6
    c.eval.episodes_per_task = 2
    c.continual.replay_fraction = 0.5  # 1 of 2 episodes: replay is non-empty
    return c


def free_port() -> int:
    """A TCP port nothing listens on now (for a local jax.distributed coordinator)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(commands, envs=None, timeout: float = 600) -> list[tuple[int, str]]:
    """Starts every command at once (a local cluster: processes that must meet at a
    barrier cannot run one after another) and returns [(returncode, stdout+stderr)].
    Output goes to files, not pipes: a full pipe would stall a process at a barrier."""
    import subprocess
    import tempfile
    envs = envs or [None] * len(commands)
    logs = [tempfile.TemporaryFile(mode="w+") for _ in commands]
    procs = [subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
             for cmd, env, log in zip(commands, envs, logs)]
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = []
    for log in logs:
        log.seek(0)
        outs.append(log.read())
        log.close()
    return list(zip(codes, outs))


def tiny_two_stage_config(every_steps: int = 2):
    """The first two stages of `tiny_continual_config` with an intra-stage checkpoint
    every `every_steps` steps of a phase and one evaluation episode per task: a run that
    a test kills mid-stage (in a subprocess, which builds it from here too) and restarts."""
    c = tiny_continual_config()
    c.tasks = TINY_CONTINUAL_TASKS[:2]
    c.continual.stage_sizes = (1, 1)
    c.checkpoint.every_steps = every_steps
    c.eval.episodes_per_task = c.eval.mse_episodes_per_task = 1
    return c


def numpy_feature_scale(x, min_std: float) -> np.ndarray:
    """The input-statistics divisor of float[N, F] data, in float64 numpy (the reference
    for `inputs.feature_scale`): 1 for a feature that never varies, else its std floored
    at `min_std`."""
    std = np.asarray(x, np.float64).std(0)
    return np.where(std < 1e-6, 1.0, np.maximum(std, min_std))
