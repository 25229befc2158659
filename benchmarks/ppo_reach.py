"""reach-v3 PPO teacher: wall time and env steps to >= target success, ours (pure-JAX PPO
on the MJX port) vs Stable-Baselines3 PPO on the reference backend (`metaworld`
package, CPU MuJoCo), same env-step budget, same PPO hyper-parameters where both have
them, run side by side from one command:

    .venv/bin/python benchmarks/ppo_reach.py \
        --sb3_python=venv-sb3/bin/python [--budget=300000]

SB3 runs in its own venv (torch is not a project dependency) as a subprocess of this
script (`--sb3_worker`), after ours, so the two never share the CPU. Both evaluate
the deterministic policy every `--eval_every` env steps on `--num_eval` episodes of
MT50(seed=0) variations (success at any step of 500) and stop at `--target`. Wall
times include evaluation; ours is reported with and without XLA compile time.
SB3 needs its own venv: `python3 -m venv venv-sb3 && venv-sb3/bin/pip install
torch==2.13.0 stable-baselines3 gymnasium packaging metaworld==3.1.1 mujoco==3.3.0`.
Prints one JSON line per side and a final ratio line.
"""

import argparse
import json
import os
import subprocess
import sys
import time

TASK = "reach-v3"


def parse(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=300_000, help="env steps per side")
    p.add_argument("--target", type=float, default=0.9, help="success to reach")
    p.add_argument("--eval_every", type=int, default=20_000, help="env steps per eval")
    p.add_argument("--num_eval", type=int, default=10, help="eval episodes")
    p.add_argument("--num_envs", type=int, default=10, help="parallel envs (both sides)")
    p.add_argument("--unroll", type=int, default=500, help="steps per env per rollout")
    p.add_argument("--sb3_num_envs", type=int, default=None,
                   help="SB3's envs (default --num_envs). SB3 steps its DummyVecEnv one env "
                        "after another on one core, so hundreds of envs only cost it memory")
    p.add_argument("--sb3_unroll", type=int, default=None,
                   help="SB3's n_steps per env (default --unroll)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--minibatches", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--baseline", default="mlp", choices=["mlp", "linear"],
                   help="ours; SB3 always uses an MLP critic")
    p.add_argument("--rollout_loop", default="scan", choices=["scan", "host"],
                   help="ours: one scanned XLA program per eval period, or a Python loop "
                        "over a jitted env step (ppo.make_host_chunk; compiles faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--which", default="both", choices=["both", "ours", "sb3"])
    p.add_argument("--sb3_python", default="venv-sb3/bin/python")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--sb3_worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------- ours


def run_ours(args) -> dict:
    import jax

    from cpd_jax.configs import teachers_ppo
    from cpd_jax.envs import mjx_adapter
    from cpd_jax.rl.ppo import train as ppo

    c = teachers_ppo.get_config().ppo
    c.num_envs, c.unroll_length = args.num_envs, args.unroll
    c.num_epochs, c.num_minibatches, c.learning_rate = args.epochs, args.minibatches, args.lr
    c.eval_every_steps, c.num_eval_envs = args.eval_every, args.num_eval
    c.total_env_steps, c.early_stop_success = args.budget, args.target
    c.baseline = args.baseline
    t0 = time.time()
    env = mjx_adapter.make_mjx_env(TASK)
    pool = mjx_adapter.make_reset_pool(env, jax.random.PRNGKey(args.seed))
    fns = ppo.make_ppo(c, env)
    if args.rollout_loop == "scan":
        state = jax.jit(fns.init)(jax.random.PRNGKey(args.seed), pool)
        compiled = jax.jit(lambda s: fns.train_chunk(s, 1)).lower(state).compile()
        first = lambda m, k: m[k][0]
    else:  # task axis of 1, as the runner does; warmup compiles every piece
        one = lambda x: x[None]
        state = jax.jit(jax.vmap(fns.init))(one(jax.random.PRNGKey(args.seed)),
                                            jax.tree_util.tree_map(one, pool))
        host_chunk = ppo.make_host_chunk(fns, c)
        host_chunk.warmup(state)
        compiled = lambda s: host_chunk(s, 1)
        first = lambda m, k: m[k][0, 0]
    compile_s = time.time() - t0
    curve, reached = [], None
    t1 = time.time()
    for _ in range(fns.num_evals):
        state, m = compiled(state)
        succ = float(first(m, "eval_success"))
        steps = int(first(m, "env_steps"))
        curve.append({"env_steps": steps, "wall_s": time.time() - t1, "success": succ})
        print(f"[ours] {steps:,} steps {time.time() - t1:.0f}s success {succ:.2f}", flush=True)
        if succ >= args.target:
            reached = curve[-1]
            break
    return {"side": f"ours (JAX PPO, MJX, {args.rollout_loop} loop)", "compile_s": compile_s,
            "reached": reached,
            "curve": curve, "devices": str(jax.devices())}


# ----------------------------------------------------------------------- SB3


def sb3_worker(args) -> dict:
    """Runs inside the SB3 venv (torch, stable-baselines3, gymnasium, metaworld)."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from cpd_jax.envs import reference, variations

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores taskset allows
    rand_vecs = variations.all_rand_vecs()[TASK]

    class Reach(gym.Env):
        """metaworld reach-v3, each episode a random MT50 variation (as ours)."""

        def __init__(self, seed):
            self.env = reference.make_metaworld_env(TASK)
            self.observation_space, self.action_space = (self.env.observation_space,
                                                         self.env.action_space)
            self.rng = np.random.default_rng(seed)

        def reset(self, seed=None, options=None):
            reference.set_variation(self.env, TASK, int(self.rng.integers(len(rand_vecs))))
            return self.env.reset()

        def step(self, action):
            o, r, term, trunc, info = self.env.step(np.clip(action, -1, 1))
            return o, r, term, trunc, info

    num_envs = args.sb3_num_envs or args.num_envs
    unroll = args.sb3_unroll or args.unroll
    venv = VecNormalize(DummyVecEnv([lambda i=i: Reach(args.seed * 1000 + i)
                                     for i in range(num_envs)]),
                        norm_obs=True, norm_reward=False)
    eval_env = Reach(args.seed + 12345)
    n_batch = num_envs * unroll
    model = PPO("MlpPolicy", venv, n_steps=unroll, batch_size=n_batch // args.minibatches,
                n_epochs=args.epochs, learning_rate=args.lr, gamma=0.99, gae_lambda=0.97,
                clip_range=0.2, max_grad_norm=1.0, ent_coef=0.0, seed=args.seed,
                policy_kwargs=dict(net_arch=dict(pi=[128, 128], vf=[128, 128]),
                                   activation_fn=torch.nn.Tanh), device="cpu", verbose=0)

    def evaluate():
        succ = 0
        for _ in range(args.num_eval):
            o, _ = eval_env.reset()
            hit = False
            for _ in range(500):
                a, _ = model.predict(venv.normalize_obs(o[None]), deterministic=True)
                o, _, _, trunc, info = eval_env.step(a[0])
                hit |= bool(info["success"])
                if trunc:
                    break
            succ += hit
        return succ / args.num_eval

    curve, t1 = [], time.time()
    result = {"reached": None}

    class Eval(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_eval = args.eval_every

        def _on_step(self):
            if self.num_timesteps >= self.next_eval:
                self.next_eval += args.eval_every
                s = evaluate()
                curve.append({"env_steps": self.num_timesteps, "wall_s": time.time() - t1,
                              "success": s})
                print(f"[sb3] {self.num_timesteps:,} steps {time.time() - t1:.0f}s "
                      f"success {s:.2f}", file=sys.stderr, flush=True)
                if s >= args.target:
                    result["reached"] = curve[-1]
                    return False
            return True

    model.learn(total_timesteps=args.budget, callback=Eval())
    return {"side": "SB3 PPO (torch, metaworld CPU MuJoCo)", "reached": result["reached"],
            "curve": curve, "torch_threads": torch.get_num_threads(),
            "num_envs": num_envs, "unroll": unroll}


def run_sb3(args, argv) -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo)
    out = subprocess.run([args.sb3_python, os.path.abspath(__file__), "--sb3_worker"] + argv,
                         env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        return {"side": "SB3", "error": f"worker exited {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.sb3_worker:
        print(json.dumps(sb3_worker(args)))
        return
    # Paths relative to the working directory: a results file names no machine's layout.
    results = {"args": {k: os.path.relpath(v) if k in ("sb3_python", "out") and v else v
                        for k, v in vars(args).items()}}
    if args.which in ("both", "ours"):
        try:
            results["ours"] = run_ours(args)
        except (ImportError, KeyError) as e:  # MJX port (or reach-v3 in it) missing
            results["ours"] = {"error": f"MJX reach-v3 unavailable: {e!r}"}
        print(json.dumps({k: v for k, v in results["ours"].items() if k != "curve"}), flush=True)
    if args.which in ("both", "sb3"):
        worker_argv = [a for a in argv if not a.startswith("--out")]
        results["sb3"] = run_sb3(args, worker_argv)
        print(json.dumps({k: v for k, v in results["sb3"].items() if k != "curve"}), flush=True)
    ours, sb3 = results.get("ours", {}), results.get("sb3", {})
    if ours.get("reached") and sb3.get("reached"):
        ratio = sb3["reached"]["wall_s"] / ours["reached"]["wall_s"]
        ratio_c = sb3["reached"]["wall_s"] / (ours["reached"]["wall_s"] + ours["compile_s"])
        print(f"RATIO sb3/ours wall time to {args.target}: {ratio:.2f}x "
              f"({ratio_c:.2f}x counting our compile)")
    else:
        print(f"RATIO n/a: target {args.target} not reached by "
              f"{[k for k, r in (('ours', ours), ('sb3', sb3)) if not r.get('reached')]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
