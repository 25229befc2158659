"""PPO teachers sized for a 2-core CPU: the toy point-mass env, seconds per task.

Same fields as `teachers_ppo.py` (see the comments there); only sizes change.
"""

import ml_collections

from cpd_jax.configs import teachers_ppo


def get_config() -> ml_collections.ConfigDict:
    config = teachers_ppo.get_config()
    c = config.ppo
    c.num_envs = 16  # parallel envs per task
    c.unroll_length = 25  # one whole toy episode per rollout
    c.episode_length = 25  # toy episode length
    c.total_env_steps = 60_000  # per task
    c.eval_every_steps = 4_000  # -> 10 updates per eval period
    c.num_eval_envs = 32  # eval episodes
    c.early_stop_success = 0.98  # as the paper
    c.num_epochs = 4  # fewer, larger steps on tiny rollouts
    c.num_minibatches = 4  # 400 // 4 = 100 samples each
    c.learning_rate = 3e-3  # toy problem tolerates a large step
    c.policy_hidden = (32, 32)  # small nets: fast compile and step on CPU
    c.std_hidden = (16, 16)  # small std head
    c.critic_hidden = (32, 32)  # small critic
    c.init_std = 0.5  # less saturation of tanh at the start on the toy env
    config.teachers.tasks = ("point-mass-center", "point-mass-east", "point-mass-north")
    config.teachers.env_backend = "point_mass"  # toy env, no MuJoCo
    config.teachers.evals_per_chunk = 5  # checkpoint every 5 eval periods
    return config
