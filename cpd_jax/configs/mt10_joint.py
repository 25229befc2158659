"""Joint distillation of MT10 at paper sizes (the paper's central-model row)."""

from cpd_jax.configs import default


def get_config():
    return default.get_config()
