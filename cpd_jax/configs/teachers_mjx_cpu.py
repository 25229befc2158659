"""PPO teachers on the MJX port sized for a 2-core CPU: stage 1 of the 5-stage MT25
protocol (reach, push, pick-place, door-open, drawer-open), ~10 min per task.

Same fields as `teachers_ppo.py` (see the comments there); sizes and step sizes
change. The PPO settings are the ones `benchmarks/ppo_reach.py` measured (reach-v3:
0.96 eval success after 204,800 env steps): more envs and shorter unrolls than
Table 4 (256 x 100 = 25,600 steps per update, close to its 20,000), 10 epochs x 16
minibatches instead of 20 x 64 and Adam 3e-4 instead of 5e-5, so a teacher learns
within a CPU budget of 3e5 env steps instead of 1e7.

    python -m cpd_jax.main --config=cpd_jax/configs/teachers_mjx_cpu.py \
        --workdir=runs/teachers_stage1
"""

import ml_collections

from cpd_jax.configs import teachers_ppo
from cpd_jax.envs.tasks import MT25_TASKS


def get_config() -> ml_collections.ConfigDict:
    config = teachers_ppo.get_config()
    c = config.ppo
    c.num_envs = 256  # batch 256: ~1,000 MJX env steps/s on this CPU
    c.unroll_length = 100  # 256 x 100 = 25,600 env steps per update
    c.total_env_steps = 307_200  # per task: 6 eval periods (3 chunks of 2)
    c.eval_every_steps = 51_200  # 2 updates per eval period
    c.num_eval_envs = 50  # eval episodes (random MT50 variations)
    c.early_stop_success = 0.9  # CPU budget: stop a teacher at 0.9 instead of 0.98
    c.num_epochs = 10
    c.num_minibatches = 16  # 1,600 samples per gradient step
    c.learning_rate = 3e-4
    c.baseline = "mlp"  # the MLP critic learned reach-v3 in the benchmark
    config.teachers.tasks = MT25_TASKS[:5]  # stage 1 of mt25_5stage
    config.teachers.env_backend = "mjx"
    config.teachers.evals_per_chunk = 2  # checkpoint every 2 eval periods
    # Looping over a jitted env step on the host compiles ~2x faster at ~1.5x less
    # memory than the scanned chunk (door-open-v3: 5.4 vs 8.2 GB; the runner's scanned
    # 2-period chunk passed 11 GB); see benchmarks/ppo_compile.py.
    config.teachers.rollout_loop = "host"
    return config
