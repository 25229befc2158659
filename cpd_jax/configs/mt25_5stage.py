"""The paper's 5-stage protocol over MT25 (5 tasks a stage, worker-id order), paper sizes."""

from cpd_jax.configs import default
from cpd_jax.envs.tasks import MT25_TASKS


def get_config():
    c = default.get_config()
    c.tasks = MT25_TASKS
    c.protocol = "stages"
    c.continual.stage_sizes = (5, 5, 5, 5, 5)
    c.student.task_context = "contrastive"  # paper §4.3 (16-d InfoNCE embedding)
    return c
