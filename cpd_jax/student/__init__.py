"""The MoE Transformer student."""

from cpd_jax.student.params import moe_layers, num_experts
from cpd_jax.student.transformer import Student, StudentSpec
from cpd_jax.student.build import init_student, make_student

__all__ = ["Student", "StudentSpec", "init_student", "make_student", "moe_layers",
           "num_experts"]
