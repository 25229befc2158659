"""Env throughput: MJX Meta-World (batched, jitted, auto-reset) vs native metaworld.

For each task and batch size: the compile time of the batched step, then env steps/s
over --steps timed steps with random actions; the reference backend (the `metaworld`
package on native CPU MuJoCo, one env) is measured in the same run and the ratio
MJX / reference is printed.

  PYTHONPATH=. python benchmarks/env_throughput.py --tasks reach-v3,drawer-close-v3 \
      --batch_sizes 1,64,256,1024 --steps 20

Flags (all optional): --tasks (comma list; default the ported MT10 tasks),
--batch_sizes (comma list), --steps (timed MJX steps per batch size), --ref_steps
(timed reference steps), --json (write results to this path).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def measure_reference(task: str, steps: int) -> float:
    """Env steps/s of one native metaworld env with random actions (resets included)."""
    from cpd_jax.envs import reference

    env = reference.make_metaworld_env(task)
    reference.set_variation(env, task, 0)
    env.reset()
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (steps, 4))
    t0 = time.perf_counter()
    n = 0
    for a in acts:
        _, _, _, trunc, _ = env.step(a)
        n += 1
        if trunc:
            env.reset()
    return n / (time.perf_counter() - t0)


def measure_mjx(task: str, batch: int, steps: int) -> dict:
    """{compile_s, steps_per_s} of the jitted, vmapped auto-reset step at `batch`."""
    from cpd_jax.envs.mjx import host_env, wrappers

    benv = wrappers.make_batched(host_env.get_env(task))
    state = jax.jit(benv.reset)(jax.random.split(jax.random.PRNGKey(0), batch))
    acts = jax.random.uniform(jax.random.PRNGKey(1), (steps, batch, 4), minval=-1, maxval=1)
    t0 = time.perf_counter()
    step = jax.jit(benv.step).lower(state, acts[0]).compile()
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(step(state, acts[0]))  # warm-up
    t0 = time.perf_counter()
    for i in range(steps):
        state = step(state, acts[i])
    jax.block_until_ready(state.obs)
    dt = time.perf_counter() - t0
    assert np.isfinite(np.asarray(state.obs)).all(), "NaN in obs"
    return {"compile_s": compile_s, "steps_per_s": batch * steps / dt}


def main(argv=None):
    from cpd_jax.envs.mjx.tasks import registry

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(registry.ported_tasks()))
    p.add_argument("--batch_sizes", default="1,64,256,1024")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--ref_steps", type=int, default=1000)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    batches = [int(b) for b in args.batch_sizes.split(",") if b]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    results = []
    for task in tasks:
        ref = measure_reference(task, args.ref_steps)
        print(f"{task}: reference (native metaworld, 1 env) {ref:,.0f} steps/s", flush=True)
        for b in batches:
            r = measure_mjx(task, b, args.steps)
            r.update(task=task, batch=b, reference_steps_per_s=ref,
                     ratio=r["steps_per_s"] / ref)
            results.append(r)
            print(f"  batch {b:5d}: compile {r['compile_s']:6.1f} s, "
                  f"{r['steps_per_s']:10,.0f} steps/s, ratio vs reference {r['ratio']:6.2f}x",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
