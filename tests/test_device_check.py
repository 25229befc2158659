"""`benchmarks/device_check.sh --small`: the GPU check runs end to end on a CPU, so it
cannot rot between GPU leases; and the model-FLOPs count it reports against XLA's own
count of a student whose dispatch adds nothing."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from cpd_jax.student.transformer import Student, StudentSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import student_throughput  # noqa: E402


def test_small_check_runs_every_section(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh"),
                          "--small", "--out", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "device_check.json").read_text())
    for name in ("matmul", "env", "ppo", "student"):
        assert "error" not in results[name], (name, results[name].get("error"))
    assert results["device"]["platform"] == "cpu" and results["size"] == "small"
    (row,) = results["env"]["rows"]
    assert (row["task"], row["batch"]) == ("reach-v3", 2) and row["steps_per_s"] > 0
    (ppo_row,) = results["ppo"]["rows"]
    steps = [p["env_steps"] for p in ppo_row["curve"]]
    assert steps == [160 * (i + 1) for i in range(len(steps))]  # one eval period each
    student = results["student"]
    assert 0 < student["model_flops_utilisation"] <= student["ratio_achieved_over_matmul"]
    md = (tmp_path / "device_check.md").read_text()
    for heading in ("## matmul", "## env", "## ppo", "## student"):
        assert heading in md


def test_model_flops_match_xla_for_a_dense_student():
    """With one expert, top-1 and whole dispatch blocks, the MoE is a dense FFN, so XLA's
    FLOP count of the forward pass is the model's own work plus the elementwise ops
    (layer norms, softmax, GELU, residuals) that `model_flops_per_step` leaves out:
    4.7% here."""
    spec = StudentSpec(dim=64, num_blocks=2, num_heads=4, num_experts=1, top_k=1,
                       mlp_multiplier=4, seq_len=10)
    batch, context = 32, 16  # 320 tokens: whole blocks of 64 rows, no padding
    model = Student(spec)
    x = jnp.ones((batch, spec.seq_len, 39 + context))
    valid = jnp.ones((batch, spec.seq_len), bool)
    params = model.init(jax.random.PRNGKey(0), x, valid)
    cost = jax.jit(model.apply).lower(params, x, valid).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    forward = student_throughput.model_flops_per_step(spec, context, batch) / 3
    assert np.isclose(float(cost["flops"]), forward, rtol=0.08), (cost["flops"], forward)


def test_gpu_constraints_pin_the_plugin_of_the_cuda12_extra():
    """constraints-cuda12.txt pins jax's CUDA plugin to the `cuda12` extra's jax and
    every other wheel to one exact version (a range would let installs drift)."""
    import re
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        (extra,) = tomllib.load(f)["project"]["optional-dependencies"]["cuda12"]
    jax_version = re.fullmatch(r"jax\[cuda12\]==(\S+)", extra).group(1)
    pins = {}
    with open(os.path.join(ROOT, "constraints-cuda12.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9.]*)", line).groups()
                pins[name] = version
    assert pins["jax-cuda12-plugin"] == pins["jax-cuda12-pjrt"] == jax_version
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-nccl-cu12"} <= set(pins)
