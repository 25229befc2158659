"""Shared fixtures. Heavy objects (metaworld envs, compiled functions) are session-scoped."""

import json
import os
import pathlib

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _fake_trajectories(task, n=3, t=9, seed=0):
    """Random-but-fixed teacher rollouts of `task`: n episodes of t steps."""
    from cpd_jax.data.rollouts import Trajectories

    rng = np.random.default_rng(seed)
    return Trajectories(task=task, obs=rng.normal(size=(n, t, 39)).astype(np.float32),
                        actions=rng.uniform(-1, 1, (n, t, 4)).astype(np.float32),
                        rewards=rng.normal(size=(n, t)).astype(np.float32),
                        success=np.zeros((n, t), bool), lengths=np.full(n, t, np.int32),
                        variations=np.arange(n, dtype=np.int32))


@pytest.fixture
def fake_trajectories():
    """`fake_trajectories(task, n=3, t=9, seed=0)` -> Trajectories of random data."""
    return _fake_trajectories


@pytest.fixture(scope="session")
def scripted_reference() -> dict:
    """{task: success of metaworld's scripted policy on the reference (mujoco) backend},
    measured by benchmarks/mjx_scripted_check.py: the oracle for the MJX port."""
    path = pathlib.Path(__file__).parent / "data" / "scripted_policy_success_reference.json"
    return json.loads(path.read_text())
