"""The paper's 2-stage protocol over MT25: MT10 first, then the other 15 tasks."""

from cpd_jax.configs import mt25_5stage


def get_config():
    c = mt25_5stage.get_config()
    c.continual.stage_sizes = (10, 15)
    return c
