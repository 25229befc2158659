"""Max |reset obs - reference reset obs| per variation of one task, our reset run eagerly
(task.reset_physics, which may simulate a settle in MJX) with native mj_forward for the
obs (`envs/mjx/host_reset.py`), like `tests/test_mjx_part2.test_reset_obs_matches_reference`.

  PYTHONPATH=. python benchmarks/mjx_reset_check.py --task disassemble-v3 --variations 8
"""

import argparse
import json
import os
import time

CACHE = os.environ.get("CPD_JAX_CACHE", os.path.expanduser("~/.cache/cpd_jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax_cc"))


def main() -> None:
    import numpy as np

    from cpd_jax.envs import reference, variations
    from cpd_jax.envs.mjx import host_reset, sawyer

    p = argparse.ArgumentParser()
    p.add_argument("--task", required=True)
    p.add_argument("--variations", type=int, default=8)
    a = p.parse_args()
    env, ref = sawyer.SawyerEnv(a.task), reference.make_metaworld_env(a.task)
    errs, t0 = [], time.perf_counter()
    for v in range(a.variations):
        reference.set_variation(ref, a.task, v)
        ref_obs, _ = ref.reset()
        obs = host_reset.host_reset_state(env, variations.rand_vec(a.task, v)).obs
        errs.append(float(np.abs(np.asarray(obs) - ref_obs).max()))
    print(json.dumps(dict(task=a.task, reset_obs_err=errs, max=max(errs),
                          wall_s=time.perf_counter() - t0)), flush=True)


if __name__ == "__main__":
    main()
