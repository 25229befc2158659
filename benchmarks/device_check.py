"""What a user with an accelerator will see: one command, JSON + markdown out.

Sections (each timed against its own budget; one that fails or runs out of time is
recorded as such and the next one still runs, so a short lease always brings back
every number it had time for):

* device: platform, device kind, jax/jaxlib/mujoco versions, the NVIDIA driver.
* matmul: a large `jnp.dot` (float32 and bfloat16), the machine's practical peak that
  the student's rate is a ratio of.
* env: MJX env steps/s and step compile time for reach, push, pick-place, door-open and
  drawer-open at batch 1,024 / 4,096 / 8,192 (`env_throughput.measure_mjx`: jitted,
  vmapped auto-reset step, resets gathered from a start-state pool).
* ppo: pure-JAX PPO (`rl.ppo.train.make_ppo`, the scanned chunk the teachers job
  runs) on reach-v3 and push-v3 at 2,048 envs with Playground-scale settings
  (unroll 10, 32 minibatches, 4 epochs per batch, MLP critic): env steps and wall time
  to 0.9 held-in eval success (MT50 goals, success at any step of 500), compile time
  apart.
* student: the Table 6 student's jitted distillation step (batch 128 x L 20; `--small`:
  a 2-block, width-32 student): samples/s, XLA's FLOP count and model FLOPs per step,
  both as a ratio of the matmul rate measured in the same run
  (`student_throughput.measure_student`).

    bash benchmarks/device_check.sh [--small] [--out DIR]

`--small` shrinks every size so the whole check runs on a CPU in the test suite
(env batch 2, PPO on the toy point-mass env: an MJX PPO program takes minutes to
compile on a CPU), so the script cannot rot between GPU leases.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling benchmarks

ENV_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3")
PPO_TASKS = ("reach-v3", "push-v3")

# name -> sizes; `budget_s` is each section's wall-clock allowance (compiles included)
SIZES = {
    "full": dict(env_tasks=ENV_TASKS, env_batches=(1024, 4096, 8192), env_steps=20,
                 matmul_n=8192, ppo_tasks=PPO_TASKS, ppo_env="mjx", ppo_num_envs=2048,
                 ppo_unroll=10, ppo_minibatches=32, ppo_epochs=4, ppo_eval_every=409_600,
                 ppo_num_eval=32, ppo_max_env_steps=50_000_000, student_batch=128,
                 student_steps=20,
                 budget_s=dict(env=170, ppo=200, student=50)),
    "small": dict(env_tasks=("reach-v3",), env_batches=(2,), env_steps=2,
                  matmul_n=256, ppo_tasks=("point-mass-center",), ppo_env="point_mass",
                  ppo_num_envs=8, ppo_unroll=10, ppo_minibatches=2, ppo_epochs=2,
                  ppo_eval_every=160, ppo_num_eval=4, ppo_max_env_steps=480,
                  student_batch=4, student_steps=2,
                  student_overrides=dict(dim=32, num_blocks=2, num_experts=2),
                  budget_s=dict(env=600, ppo=600, student=600)),
}


def jax_compat_shims() -> list[str]:
    """Lets mujoco-mjx 3.3.0 (pinned by metaworld 3.1.1) run on a newer jax than the
    project's pin: a lent machine's image brings its own jax, and MJX 3.3.0 calls
    `jnp.clip(a_min=, a_max=)`, which jax 0.8 removed (renamed min/max). Installs a
    wrapper only where the old keywords are refused; returns what it installed (each
    results file lists it)."""
    try:
        jnp.clip(jnp.zeros(1), a_min=0.0)
        return []
    except TypeError:
        pass
    clip = jnp.clip

    def clip_accepting_old_names(x, min=None, max=None, *, a_min=None, a_max=None, **kw):
        return clip(x, a_min if min is None else min, a_max if max is None else max, **kw)

    jnp.clip = clip_accepting_old_names
    return ["jnp.clip accepts a_min/a_max (mujoco-mjx 3.3.0 on jax >= 0.8)"]


def device_info() -> dict:
    """Platform, devices, versions and (on NVIDIA) the driver and GPU name."""
    import jaxlib

    info = {"platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
            "device_count": jax.device_count(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        import mujoco
        from mujoco import mjx  # noqa: F401 (the port needs it)
        info["mujoco"] = mujoco.__version__
    except ImportError as e:
        info["mujoco"] = f"not importable: {e}"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30)
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        info["nvidia_smi"] = "not available"
    return info


def matmul_rate(n: int, dtype, repeats: int = 10) -> float:
    """FLOP/s of a jitted n x n x n `jnp.dot` in `dtype` (median of `repeats`)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(dot(a, a))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times))


def section_matmul(size: dict, deadline: float) -> dict:
    n = size["matmul_n"]
    return {"n": n, "float32_tflop_per_s": matmul_rate(n, jnp.float32) / 1e12,
            "bfloat16_tflop_per_s": matmul_rate(n, jnp.bfloat16) / 1e12}


def section_env(size: dict, deadline: float) -> dict:
    """One row per (task, batch) measured before the deadline; the rest are listed."""
    import env_throughput

    rows, skipped = [], []
    for task in size["env_tasks"]:
        for batch in size["env_batches"]:
            if time.perf_counter() > deadline:
                skipped.append(f"{task}@{batch}")
                continue
            r = env_throughput.measure_mjx(task, batch, size["env_steps"])
            r.update(task=task, batch=batch)
            print(f"  env {task} batch {batch}: compile {r['compile_s']:.1f} s, "
                  f"{r['steps_per_s']:,.0f} steps/s", flush=True)
            rows.append(r)
    return {"rows": rows, "skipped_for_time": skipped}


def ppo_config(size: dict):
    """The teachers' `ppo` block at this check's Playground-scale settings."""
    from cpd_jax.configs import teachers_ppo

    c = teachers_ppo.get_ppo_config()
    c.num_envs, c.unroll_length = size["ppo_num_envs"], size["ppo_unroll"]
    c.num_minibatches, c.num_epochs = size["ppo_minibatches"], size["ppo_epochs"]
    c.learning_rate, c.baseline, c.entropy_coef = 3e-4, "mlp", 0.0
    c.eval_every_steps, c.num_eval_envs = size["ppo_eval_every"], size["ppo_num_eval"]
    c.total_env_steps, c.early_stop_success = size["ppo_max_env_steps"], 0.9
    return c


def ppo_env(task: str, env_kind: str):
    """(env, task_params) for make_ppo: the MJX port with its 50 MT50 start states as
    the reset pool, or the toy point mass."""
    if env_kind == "point_mass":
        from cpd_jax.envs import toy_envs
        return toy_envs.PointMass(), jnp.asarray(toy_envs.toy_task_params([task]))[0]
    from cpd_jax.envs import mjx_adapter
    env = mjx_adapter.make_mjx_env(task)
    return env, mjx_adapter.make_reset_pool(env, jax.random.PRNGKey(0))


def train_ppo(task: str, size: dict, deadline: float) -> dict:
    """Eval periods of the scanned chunk until success >= 0.9, the step budget or the
    deadline; the curve is (env steps, wall s after compile, success)."""
    from cpd_jax.rl.ppo import train as ppo

    c = ppo_config(size)
    env, task_params = ppo_env(task, size["ppo_env"])
    fns = ppo.make_ppo(c, env)
    t0 = time.perf_counter()
    state = jax.jit(fns.init)(jax.random.PRNGKey(0), task_params)
    chunk = jax.jit(lambda s: fns.train_chunk(s, 1)).lower(state).compile()
    compile_s = time.perf_counter() - t0
    curve, reached, t1 = [], None, time.perf_counter()
    for _ in range(fns.num_evals):
        state, m = chunk(state)
        point = {"env_steps": int(m["env_steps"][0]), "wall_s": time.perf_counter() - t1,
                 "success": float(m["eval_success"][0])}
        curve.append(point)
        print(f"  ppo {task}: {point['env_steps']:,} env steps, {point['wall_s']:.0f} s, "
              f"success {point['success']:.2f}", flush=True)
        if point["success"] >= c.early_stop_success:
            reached = point
            break
        if time.perf_counter() > deadline:
            break
    last = curve[-1]
    return {"task": task, "env": size["ppo_env"], "num_envs": c.num_envs,
            "unroll": c.unroll_length, "minibatches": c.num_minibatches,
            "epochs": c.num_epochs, "compile_s": compile_s, "reached_0.9": reached,
            "env_steps_per_s": last["env_steps"] / max(last["wall_s"], 1e-9),
            "curve": curve}


def section_ppo(size: dict, deadline: float) -> dict:
    """Each task gets an equal share of the section's remaining time."""
    rows = []
    tasks = list(size["ppo_tasks"])
    for i, task in enumerate(tasks):
        share = (deadline - time.perf_counter()) / (len(tasks) - i)
        rows.append(train_ppo(task, size, time.perf_counter() + share))
    return {"rows": rows}


def section_student(size: dict, deadline: float) -> dict:
    import student_throughput

    return student_throughput.measure_student(
        size["student_batch"], size["student_steps"], matmul_n=size["matmul_n"],
        student_overrides=size.get("student_overrides"))


SECTIONS = {"matmul": section_matmul, "env": section_env, "ppo": section_ppo,
            "student": section_student}


def run_section(name: str, fn, size: dict, budget_s: float) -> dict:
    """fn's result with its wall time, or the error that stopped it (the check goes on)."""
    print(f"== {name} (budget {budget_s:.0f} s)", flush=True)
    t0 = time.perf_counter()
    try:
        out = fn(size, t0 + budget_s)
        out = out if isinstance(out, dict) else {"value": out}
    except Exception as e:  # a failing section is a finding, not the end of the check
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}"[:2000]}
    out["wall_s"] = time.perf_counter() - t0
    return out


def markdown(results: dict) -> str:
    """The check's tables, one per section that ran."""
    d = results["device"]
    lines = [f"# Device check ({results['size']})", "",
             f"{d['device_kind']} ({d['platform']}, {d['device_count']} device(s)); "
             f"jax {d['jax']}, jaxlib {d['jaxlib']}, mujoco {d.get('mujoco')}, "
             f"python {d['python']}; nvidia-smi: {d.get('nvidia_smi')}; "
             f"XLA_FLAGS={d['xla_flags'] or '(none)'}", ""]
    for name in SECTIONS:
        s = results.get(name)
        if s is None:
            continue
        lines.append(f"## {name} ({s['wall_s']:.0f} s)")
        lines.append("")
        if "error" in s:
            lines += [f"failed: `{s['error'][:300]}`", ""]
            continue
        if name == "matmul":
            lines.append(f"jnp.dot {s['n']}^3: float32 {s['float32_tflop_per_s']:.1f} TFLOP/s, "
                         f"bfloat16 {s['bfloat16_tflop_per_s']:.1f} TFLOP/s")
        elif name == "env":
            lines += ["| task | batch | step compile (s) | env steps/s |", "|---|---:|---:|---:|"]
            lines += [f"| {r['task']} | {r['batch']} | {r['compile_s']:.1f} "
                      f"| {r['steps_per_s']:,.0f} |" for r in s["rows"]]
            if s["skipped_for_time"]:
                lines.append(f"\nnot measured (out of time): {', '.join(s['skipped_for_time'])}")
        elif name == "ppo":
            lines += ["| task | envs x unroll | minibatches x epochs | compile (s) "
                      "| env steps to 0.9 | wall s to 0.9 | last success | env steps/s |",
                      "|---|---|---|---:|---:|---:|---:|---:|"]
            for r in s["rows"]:
                hit, last = r["reached_0.9"], r["curve"][-1]
                steps_to = f"{hit['env_steps']:,}" if hit else "not reached"
                wall_to = f"{hit['wall_s']:.0f}" if hit else "-"
                lines.append(
                    f"| {r['task']} | {r['num_envs']} x {r['unroll']} | {r['minibatches']} x "
                    f"{r['epochs']} | {r['compile_s']:.0f} | {steps_to} | {wall_to} | "
                    f"{last['success']:.2f} at {last['env_steps']:,} | "
                    f"{r['env_steps_per_s']:,.0f} |")
        elif name == "student":
            lines.append(
                f"batch {s['batch']} x L 20, {s['params'] / 1e6:.2f}M params: "
                f"{s['step_ms']:.1f} ms/step, {s['samples_per_s']:,.0f} samples/s; "
                f"XLA FLOPs / time / matmul = {s['ratio_achieved_over_matmul']:.3f}, "
                f"model FLOPs utilisation = {s['model_flops_utilisation']:.3f}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="CPU-sized (the test suite's run)")
    p.add_argument("--out", default="device_check", help="folder for the JSON and markdown")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma list, run in this order")
    p.add_argument("--env_tasks", default="", help="comma list (default: the size's)")
    p.add_argument("--env_batches", default="", help="comma list of ints")
    p.add_argument("--ppo_tasks", default="", help="comma list")
    p.add_argument("--budgets", default="",
                   help="seconds per section, e.g. ppo=150,env=90 (default: the size's)")
    args = p.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; have {list(SECTIONS)}")
    size_name = "small" if args.small else "full"
    size = dict(SIZES[size_name], budget_s=dict(SIZES[size_name]["budget_s"]))
    if args.env_tasks:
        size["env_tasks"] = tuple(args.env_tasks.split(","))
    if args.env_batches:
        size["env_batches"] = tuple(int(b) for b in args.env_batches.split(","))
    if args.ppo_tasks:
        size["ppo_tasks"] = tuple(args.ppo_tasks.split(","))
    for item in filter(None, args.budgets.split(",")):
        name, seconds = item.split("=")
        size["budget_s"][name] = float(seconds)
    os.makedirs(args.out, exist_ok=True)
    results = {"size": size_name, "argv": sys.argv[1:] if argv is None else list(argv),
               "compat_shims": jax_compat_shims(), "device": device_info()}
    print(json.dumps(results["device"]), flush=True)
    for name in sections:
        results[name] = run_section(name, SECTIONS[name], size,
                                    size["budget_s"].get(name, 60))
        # after every section, so a check cut short keeps what it measured
        with open(os.path.join(args.out, "device_check.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.out, "device_check.md"), "w") as f:
            f.write(markdown(results))
    print(markdown(results), flush=True)
    return results


if __name__ == "__main__":
    main()
