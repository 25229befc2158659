#!/usr/bin/env bash
# What a user with a GPU (or TPU) will see, in one command, under 8 minutes on one GPU:
#   bash benchmarks/device_check.sh [--small] [--out DIR]
# Writes DIR/device_check.json and DIR/device_check.md (default DIR: device_check).
# --small runs every section at CPU size (the test suite runs it so it cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
# XLA on GPU: Triton GEMMs for MJX's many small matmuls (MJX's own advice);
# the project's persistent compile cache (cpd_jax/cache.py) so a second run skips them.
export XLA_FLAGS="${XLA_FLAGS:---xla_gpu_triton_gemm_any=True}"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${CPD_JAX_CACHE:-${HOME:-/tmp}/.cache/cpd_jax}/jax_cc}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python}" benchmarks/device_check.py "$@"
