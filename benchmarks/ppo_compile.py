"""Compile time and peak memory of the PPO program on one MJX task: the scanned chunk
(`jit(vmap(train_chunk))`, one XLA program) vs the host loop (`ppo.make_host_chunk`,
small jitted pieces), measured in the same run, each in its own subprocess so its
peak RSS is its own.

    PYTHONPATH=. python benchmarks/ppo_compile.py --task=door-open-v3 \
        --config=teachers_mjx_cpu --out=benchmarks/results/ppo_compile_door_cpu_teacher.json

Why it exists: the scanned chunk nests the MJX step in several while loops, which
makes XLA's compile slow and memory-hungry on a CPU (BUILD_NOTES, appendix D, has
the measurements); the host loop
compiles the env step as a plain program. A subprocess is killed when its
RSS passes `--max_gb` (reported as `killed_at_gb`), so the benchmark cannot take the
machine down. Prints one JSON line per mode and the ratios scan / host.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

MODES = ("scan", "host")


def parse(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="door-open-v3")
    p.add_argument("--config", default="teachers_ppo",
                   help="module in cpd_jax/configs whose `ppo` block is used "
                        "(teachers_ppo: paper defaults; teachers_mjx_cpu: the CPU teachers)")
    p.add_argument("--num_envs", type=int, default=None, help="default: the config's")
    p.add_argument("--unroll", type=int, default=None, help="default: the config's")
    p.add_argument("--num_eval", type=int, default=None, help="default: the config's")
    p.add_argument("--small_update", action="store_true",
                   help="2 epochs x 2 minibatches instead of the config's")
    p.add_argument("--max_gb", type=float, default=14.0, help="kill a mode above this RSS")
    p.add_argument("--modes", default="scan,host")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--worker", default=None, choices=MODES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss_gb(pid="self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1e6


def worker(args) -> dict:
    """Builds the env, then compiles `args.worker`'s program(s); returns the timings."""
    import importlib

    import jax

    from cpd_jax.envs import mjx_adapter
    from cpd_jax.rl.ppo import train as ppo

    c = importlib.import_module(f"cpd_jax.configs.{args.config}").get_config().ppo
    c.num_envs = args.num_envs or c.num_envs
    c.unroll_length = args.unroll or c.unroll_length
    c.num_eval_envs = args.num_eval or c.num_eval_envs
    c.eval_every_steps = 2 * c.num_envs * c.unroll_length  # 2 updates per eval period
    c.total_env_steps = c.eval_every_steps
    if args.small_update:
        c.num_epochs, c.num_minibatches = 2, 2
    env = mjx_adapter.make_mjx_env(args.task)
    pool = jax.tree_util.tree_map(lambda x: x[None],
                                  mjx_adapter.make_reset_pool(env, jax.random.PRNGKey(0)))
    fns = ppo.make_ppo(c, env)
    state = jax.jit(jax.vmap(fns.init))(jax.random.PRNGKey(0)[None], pool)
    rss_before = _rss_gb()
    t = time.time()
    if args.worker == "scan":
        jax.jit(jax.vmap(fns.train_chunk, in_axes=(0, None)), static_argnums=1).lower(
            state, 1).compile()
    else:
        ppo.make_host_chunk(fns, c).warmup(state)  # compiles (and runs once) each piece
    return {"mode": args.worker, "compile_s": time.time() - t, "rss_before_gb": rss_before}


def run_mode(args, mode: str) -> dict:
    """Runs one worker subprocess, sampling its RSS; kills it above `args.max_gb`."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode,
           f"--task={args.task}", f"--config={args.config}"]
    cmd += [f"--{k}={v}" for k, v in (("num_envs", args.num_envs), ("unroll", args.unroll),
                                      ("num_eval", args.num_eval)) if v]
    cmd += ["--small_update"] if args.small_update else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, killed = [0.0], [None]

    def watch():
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _rss_gb(proc.pid))
            except (FileNotFoundError, IndexError, ProcessLookupError):
                break
            if peak[0] > args.max_gb:
                killed[0] = peak[0]
                proc.kill()
            time.sleep(0.5)

    t = time.time()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"mode": mode}
    result.update({"peak_rss_gb": peak[0], "killed_at_gb": killed[0],
                   "wall_s": time.time() - t, "returncode": proc.returncode})
    return result


def main():
    args = parse()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    results = {"args": vars(args)}
    for mode in args.modes.split(","):
        results[mode] = run_mode(args, mode)
        print(json.dumps(results[mode]), flush=True)
    if all(m in results and results[m].get("compile_s") for m in MODES):
        s, h = results["scan"], results["host"]
        results["ratio_scan_over_host"] = {
            "compile_s": s["compile_s"] / h["compile_s"],
            "peak_rss_gb": s["peak_rss_gb"] / h["peak_rss_gb"]}
        print("RATIO scan/host: compile {compile_s:.2f}x, peak RSS {peak_rss_gb:.2f}x".format(
            **results["ratio_scan_over_host"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
