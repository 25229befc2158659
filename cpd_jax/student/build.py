"""The config's student: one place that turns `config.student` into a model and params."""

import dataclasses

import jax.numpy as jnp

from cpd_jax import progress
from cpd_jax.student.inputs import context_dim
from cpd_jax.student.transformer import Student, StudentSpec


def make_student(config, num_experts: int | None = None) -> Student:
    """The student of `config.student`, with `num_experts` experts per MoE layer when
    given (a grown student: the count comes from its params or checkpoint)."""
    spec = StudentSpec.from_config(config.student)
    if num_experts is not None:
        spec = dataclasses.replace(spec, num_experts=num_experts)
    return Student(spec)


def init_student(config, key):
    """(model, params) of the configured student for inputs of obs + task context."""
    model = make_student(config)
    spec = model.spec
    features = 39 + context_dim(config.student.task_context, config.task_encoder.embed_dim)
    dummy = jnp.zeros((1, spec.seq_len, features))
    # flax's init runs op by op (not jitted: the params stay bitwise what they were),
    # which is slow enough for a paper-sized student to get a progress line of its own.
    with progress.timed(f"initialising the student ({spec.num_blocks} blocks, "
                        f"{spec.num_experts} experts)"):
        params = model.init(key, dummy, jnp.ones((1, spec.seq_len), bool))["params"]
    return model, params
