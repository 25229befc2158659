"""Reward/obs port and reset-obs errors of MJX tasks vs the `metaworld` package, without
compiling an MJX step (`cpd_jax.envs.mjx.fidelity`, usable for any ported task): recorded reference states -> native `mj_forward` on our edited model ->
`mjx.put_data` -> our jnp obs / reward / success. One JSON line per task.

  PYTHONPATH=. python benchmarks/mjx_exact_check.py peg-insert-side-v3 window-open-v3
"""

import json
import os
import sys
import time

CACHE = os.environ.get("CPD_JAX_CACHE", os.path.expanduser("~/.cache/cpd_jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax_cc"))


def main() -> None:
    from cpd_jax.envs.mjx.fidelity import reset_obs_error, reward_port_errors

    for task in sys.argv[1:]:
        t0 = time.perf_counter()
        obs_err, r_err, mism, n_succ = reward_port_errors(task)
        print(json.dumps(dict(task=task, obs_err=obs_err, reward_err=r_err,
                              success_mismatch=len(mism), n_success=n_succ,
                              reset_obs_err=reset_obs_error(task),
                              wall_s=round(time.perf_counter() - t0, 1))), flush=True)


if __name__ == "__main__":
    main()
