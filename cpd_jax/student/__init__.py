"""The MoE Transformer student."""

from cpd_jax.student.params import moe_layers, num_experts
from cpd_jax.student.transformer import Student, StudentSpec

__all__ = ["Student", "StudentSpec", "moe_layers", "num_experts"]
