"""cpd_jax: Continual Policy Distillation from Distributed RL Teachers, in JAX/Flax."""

__version__ = "0.1.0"
