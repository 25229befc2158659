"""PPO teachers, paper defaults (Table 4 of arXiv 2601.22475; PAPER_RESULTS.md).

Usage: `python -m cpd_jax.main --config cpd_jax/configs/teachers_ppo.py
--workdir /tmp/teachers --config.teachers.tasks="('reach-v3',)"`.

Derives from `default.get_config()` like every config, so every job sees the same
blocks (`parallel`, `log`, ...). The teachers job reads only `protocol`, `seed`, `ppo`
(how to train a teacher), `teachers` (which tasks, env and loop) and `log`; the
distillation blocks (`tasks`, `teacher`, `student`, ...) are carried along unread.
"""

import ml_collections

from cpd_jax.configs import default
from cpd_jax.envs.tasks import MT25_TASKS


def get_ppo_config() -> ml_collections.ConfigDict:
    """The `ppo` block read by `cpd_jax.rl.ppo.train.make_ppo`."""
    c = ml_collections.ConfigDict()
    # --- rollout layout: num_envs x unroll_length = 20,000 steps per update (Table 4).
    c.num_envs = 40  # parallel envs per task; 40 x 500 = whole episodes per rollout
    c.unroll_length = 500  # steps per env per rollout
    c.episode_length = 500  # time limit (Meta-World max_path_length)
    c.total_env_steps = 10_000_000  # per task (Table 4: 1e7)
    c.eval_every_steps = 100_000  # deterministic eval period (Table 4: 1e5)
    c.num_eval_envs = 50  # eval episodes per evaluation (one per reset key)
    c.early_stop_success = 0.98  # stop a task once eval success >= this (Table 4)
    # --- PPO update.
    c.gamma = 0.99  # discount (Table 4)
    c.gae_lambda = 0.97  # GAE lambda (Table 4)
    c.num_epochs = 20  # passes over each rollout (Table 4)
    c.num_minibatches = 64  # gradient steps per epoch (Table 4 "64 gradient steps";
    #                         20,000 // 64 = 312 samples each, remainder dropped)
    c.learning_rate = 5e-5  # Adam (Table 4)
    c.adam_eps = 1e-5  # Adam epsilon (purejaxrl/brax value)
    c.max_grad_norm = 1.0  # global-norm gradient clip (Table 4)
    c.clip_eps = 0.2  # PPO ratio clip (garage default lr_clip_range)
    c.entropy_coef = 0.0  # Table 4 lists no entropy bonus
    c.normalize_advantages = True  # batch-normalised advantages (Table 4)
    c.normalize_observations = True  # running mean/std obs normaliser
    c.obs_clip = 10.0  # clip normalised obs to +-this
    # --- value baseline.
    c.baseline = "linear"  # "linear" (paper, garage LinearFeatureBaseline) or "mlp"
    c.baseline_ridge = 1e-5  # ridge of the least-squares fit (garage reg_coeff)
    c.baseline_feature_clip = 10.0  # clip of obs features (garage)
    c.baseline_time_scale = 100.0  # t features are t / this (garage)
    c.value_coef = 0.5  # weight of the MLP critic loss (baseline == "mlp" only)
    c.critic_hidden = (128, 128)  # MLP critic (baseline == "mlp" only)
    # --- policy: tanh-squashed Gaussian, std from its own MLP head.
    c.policy_hidden = (128, 128)  # mean MLP (garage Meta-World PPO used 128 x 128 tanh)
    c.std_hidden = (32, 32)  # std MLP head (garage GaussianMLPPolicy std_hidden_sizes)
    c.activation = "tanh"  # hidden activation of all MLPs
    c.init_std = 1.0  # initial std of the pre-tanh Gaussian (garage init_std)
    c.min_std = 1e-6  # std clip, low (garage min_std)
    c.max_std = 2.0  # std clip, high; keeps exploration from saturating tanh
    c.policy_out_scale = 0.01  # init scale of output layers: near-zero mean at start
    return c


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()  # seed 0: task i trains with fold_in(PRNGKey(seed), worker id)
    config.protocol = "teachers"  # `python -m cpd_jax.main` dispatches on this
    config.ppo = get_ppo_config()
    config.teachers = ml_collections.ConfigDict()
    config.teachers.tasks = MT25_TASKS  # any subset: one batch job per task or group
    config.teachers.env_backend = "mjx"  # "mjx" (Meta-World port) or "point_mass" (toy)
    config.teachers.variations = "mt50"  # mjx: episodes draw one of the task's 50 MT50
    #                                      variations ("random": fresh from reset space)
    config.teachers.reset_pool_size = 1024  # "random": start states precomputed once
    #                                         (mjx_adapter.make_reset_pool; "mt50" uses 50)
    config.teachers.evals_per_chunk = 5  # eval periods per jitted chunk; a checkpoint
    #                                      of the full training state follows each chunk
    config.teachers.shard = True  # shard the task axis over all local devices
    config.teachers.rollout_loop = "scan"  # "scan": a chunk is one XLA program (GPU/TPU);
    #   "host": Python loop over a jitted env step (ppo.make_host_chunk; same numbers):
    #   for CPU MJX, where it compiles ~2x faster at ~1.5x less memory
    return config
