"""Env throughput: MJX Meta-World (batched, jitted, auto-reset) vs native metaworld.

For each task and batch size: the compile time of the batched step (AOT
`lower().compile()` of the jitted, vmapped auto-reset step), then env steps/s over
--steps timed steps with random actions (one env step = the full frame skip); the
reference backend (the `metaworld` package on native CPU MuJoCo, one env) is measured
in the same run, and the ratio MJX / reference is printed. Both time steps only: the
reference's `reset()` calls and MJX's start states are outside the timed window (the
start states are built on the host, `envs/mjx/host_reset.py`). `--reset pool` (default):
envs restart by gathering one of 8 host-built start states, so the compiled program is
the step alone (what PPO compiles); `--reset in_graph`: the restart runs `reset_random`
(`mjx.forward` per env) inside the step program, as `wrappers.make_batched` does by
default.

  PYTHONPATH=. python benchmarks/env_throughput.py --tasks reach-v3,drawer-close-v3 \
      --batch_sizes 1,64,256,1024 --steps 20

Flags (all optional): --tasks (comma list; default every ported task),
--batch_sizes (comma list), --steps (timed MJX steps per batch size), --ref_steps
(timed reference steps), --json (results, written after every task; an existing file
is resumed: tasks it holds are skipped), --markdown (a table of the same rows).
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def measure_reference(task: str, steps: int) -> float:
    """Env steps/s of one native metaworld env with random actions (`reset()` untimed)."""
    from cpd_jax.envs import reference

    env = reference.make_metaworld_env(task)
    reference.set_variation(env, task, 0)
    env.reset()
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (steps, 4))
    busy = 0.0
    for a in acts:
        t0 = time.perf_counter()
        _, _, _, trunc, _ = env.step(a)
        busy += time.perf_counter() - t0
        if trunc:
            env.reset()
    return steps / busy


POOL_VARIATIONS = 8  # start states in the reset pool (MT50 variations 0..7)


def start_states(benv, task: str, batch: int):
    """(batched State [batch] with episode stats, reset pool State [POOL_VARIATIONS]),
    built on the host; env i starts in pool state i % POOL_VARIATIONS."""
    from cpd_jax.envs import variations
    from cpd_jax.envs.mjx import host_reset

    pool = host_reset.host_reset_states(
        benv.env, np.stack([variations.rand_vec(task, v) for v in range(POOL_VARIATIONS)]))

    # One program, not ~3 eager ops per leaf of the ~130-leaf state: on a GPU each eager
    # op compiles on its own (the first H200 run spent ~60 s per row here).
    @jax.jit
    def batch_from_pool(pool):
        state = jax.tree_util.tree_map(lambda x: x[jnp.arange(batch) % POOL_VARIATIONS], pool)
        state = state.replace(rng=jax.random.split(jax.random.PRNGKey(0), batch))
        return benv.init_stats(state)

    return batch_from_pool(pool), pool


def measure_mjx(task: str, batch: int, steps: int, reset: str = "pool") -> dict:
    """{compile_s, steps_per_s} of the jitted, vmapped auto-reset step at `batch`.

    reset="pool": restarts gather from a reset pool (what PPO compiles);
    "in_graph": restarts run `reset_random` (mjx.forward) inside the step program.
    """
    from cpd_jax.envs.mjx import host_env, wrappers

    benv = wrappers.make_batched(host_env.get_env(task))
    state, pool = start_states(benv, task, batch)
    args = (pool,) if reset == "pool" else ()
    acts = jax.random.uniform(jax.random.PRNGKey(1), (steps, batch, 4), minval=-1, maxval=1)
    t0 = time.perf_counter()
    step = jax.jit(benv.step).lower(state, acts[0], *args).compile()
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(step(state, acts[0], *args))  # warm-up
    t0 = time.perf_counter()
    for i in range(steps):
        state = step(state, acts[i], *args)
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
    p.add_argument("--markdown", default="", help="write a markdown table to this path")
    p.add_argument("--reset", default="pool", choices=("pool", "in_graph"),
                   help="auto-reset by gathering a start-state pool (PPO's program) or by "
                        "running the reset (mjx.forward) inside the step program")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    batches = [int(b) for b in args.batch_sizes.split(",") if b]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    results, done = [], set()
    if args.json and os.path.exists(args.json):  # resume a sweep: keep what was measured
        results = json.load(open(args.json))
        done = {(r["task"], r["batch"]) for r in results}
        tasks = [t for t in tasks if any((t, b) not in done for b in batches)]
        print(f"resuming {args.json}: {len(results)} rows kept, {len(tasks)} tasks to go")
    for task in tasks:
        ref = measure_reference(task, args.ref_steps)
        print(f"{task}: reference (native metaworld, 1 env) {ref:,.0f} steps/s", flush=True)
        for b in [b for b in batches if (task, b) not in done]:
            r = measure_mjx(task, b, args.steps, args.reset)
            r.update(task=task, batch=b, reset=args.reset, reference_steps_per_s=ref,
                     ratio=r["steps_per_s"] / ref)
            results.append(r)
            print(f"  batch {b:5d}: compile {r['compile_s']:6.1f} s, "
                  f"{r['steps_per_s']:10,.0f} steps/s, ratio vs reference {r['ratio']:6.2f}x",
                  flush=True)
        if args.json:  # after every task, so a long sweep that dies keeps what it measured
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(markdown_table(results))


def markdown_table(results: list[dict]) -> str:
    """One row per (task, batch): compile s, MJX steps/s, reference steps/s, ratio."""
    lines = ["| task | batch | auto-reset | step compile (s) | MJX env steps/s "
             "| reference env steps/s | MJX / reference |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['task']} | {r['batch']} | {r.get('reset', 'in_graph')} | "
                     f"{r['compile_s']:.0f} | "
                     f"{r['steps_per_s']:,.0f} | {r['reference_steps_per_s']:,.0f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
