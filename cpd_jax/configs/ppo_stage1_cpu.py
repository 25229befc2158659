"""Stage 1 of the CPU 5-stage protocol distilled from PPO teachers trained on MJX.

The two halves connected: `teachers_mjx_cpu.py` trains the five stage-1 teachers on
the MJX port; this config collects their rollouts on the reference backend (the
`metaworld` package: the teachers act in the simulator they were not trained in) and
distils them with the continual stage loop.

    python -m cpd_jax.main --config=cpd_jax/configs/teachers_mjx_cpu.py \
        --workdir=runs/teachers_stage1
    python -m cpd_jax.main --config=cpd_jax/configs/ppo_stage1_cpu.py \
        --workdir=runs/ppo_stage1 --config.teacher.checkpoint_dir=runs/teachers_stage1
"""

from cpd_jax.configs import mt25_5stage_cpu
from cpd_jax.envs.tasks import MT25_TASKS


def get_config():
    c = mt25_5stage_cpu.get_config()
    c.method = "ours"
    c.tasks = MT25_TASKS[:5]
    c.continual.stage_sizes = (5,)
    c.teacher.kind = "ppo"
    c.teacher.checkpoint_dir = "runs/teachers_stage1"  # the teachers run's workdir
    return c
