"""Scripted-policy success of a task on our edited model: native MuJoCo or MJX closed loop.

`--backend native`: metaworld's own env code with its MjModel swapped for our edited one
(`model_edit.build_model`), native MuJoCo float64: a cheap check of the model edits
alone (seconds per episode, no MJX compile). `--backend mjx`: the jitted, vmapped MJX
`SawyerEnv.step` in closed loop with metaworld's scripted policy, all episodes in one
batch; initial states are built on the host (`envs/mjx/host_reset.py`) so only the
step is compiled, and its compile time (AOT `lower().compile()`) is reported.

Episodes are MT50 (seed 0) variations 0..N-1 of the task, the protocol of
`tests/data/scripted_policy_success_reference.json` (found relative to the repository).

  PYTHONPATH=. python benchmarks/mjx_scripted_check.py --task window-open-v3 \
      --backend native --episodes 20
  PYTHONPATH=. python benchmarks/mjx_scripted_check.py --task window-open-v3 \
      --backend mjx --episodes 20 --json out.json

Flags: --task, --backend {native,mjx}, --episodes (default 20), --edits (python dict of
`ModelEdits` field overrides, e.g. "{'hand_proxy': 'capsule'}"), --json (append the
result as one JSON line).
"""

import argparse
import ast
import json
import os
import pathlib
import time

import numpy as np

REFERENCE_JSON = (pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" /
                  "scripted_policy_success_reference.json")

CACHE = os.environ.get("CPD_JAX_CACHE", os.path.expanduser("~/.cache/cpd_jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(CACHE, "jax_cc"))

MAX_STEPS = 500


def _policy(task: str):
    from metaworld.policies import ENV_POLICY_MAP
    return ENV_POLICY_MAP[task]()


def edited_model(task: str, edits_override: dict | None = None):
    """Our MJX-edited MjModel of `task` (with optional ModelEdits overrides)."""
    import dataclasses

    from cpd_jax.envs.mjx import model_edit
    from cpd_jax.envs.mjx.tasks import registry

    t = registry.get_task(task)
    edits = dataclasses.replace(t.MODEL_EDITS, **(edits_override or {}))
    return model_edit.build_model(t.XML, edits)


def native_success(task: str, episodes: int, edits_override: dict | None = None) -> list[bool]:
    """Per episode: did the scripted policy succeed within 500 steps, metaworld env on our
    edited model (native MuJoCo)."""
    import mujoco

    from cpd_jax.envs import reference

    env = reference.make_metaworld_env(task)
    env.model = edited_model(task, edits_override)
    env.data = mujoco.MjData(env.model)
    wins = []
    for v in range(episodes):
        reference.set_variation(env, task, v)
        obs, _ = env.reset()
        pol, ok = _policy(task), False
        for _ in range(MAX_STEPS):
            obs, _, _, _, info = env.step(np.clip(pol.get_action(obs), -1, 1))
            if info["success"]:
                ok = True
                break
        wins.append(ok)
    return wins


def mjx_success(task: str, episodes: int, edits_override: dict | None = None):
    """(per-episode success list, step compile s, reset build s) of the MJX closed loop."""
    import jax
    import jax.numpy as jnp

    from cpd_jax.envs import variations
    from cpd_jax.envs.mjx import host_reset, sawyer
    from cpd_jax.teachers import scripted

    env = sawyer.SawyerEnv(task, edits_override=edits_override)
    rvs = np.stack([variations.rand_vec(task, v) for v in range(episodes)])
    t0 = time.perf_counter()
    st = host_reset.host_reset_states(env, rvs)
    reset_s = time.perf_counter() - t0
    acts = jnp.zeros((episodes, 4), jnp.float32)
    t0 = time.perf_counter()
    step = jax.jit(jax.vmap(env.step)).lower(st, acts).compile()
    compile_s = time.perf_counter() - t0
    states = [st]

    def env_step(actions):
        states[0] = step(states[0], jnp.asarray(actions))
        return np.asarray(states[0].obs), np.asarray(states[0].info["success"]) > 0

    ever = scripted.closed_loop_success(task, np.asarray(st.obs), env_step, MAX_STEPS)
    return ever.tolist(), compile_s, reset_s


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", required=True)
    p.add_argument("--backend", choices=("native", "mjx"), default="native")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--edits", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    over = ast.literal_eval(a.edits) if a.edits else None
    ref = json.loads(REFERENCE_JSON.read_text())
    t0 = time.perf_counter()
    out = dict(task=a.task, backend=a.backend, episodes=a.episodes, edits=a.edits,
               reference=ref.get(a.task))
    if a.backend == "native":
        wins = native_success(a.task, a.episodes, over)
    else:
        wins, out["compile_s"], out["reset_s"] = mjx_success(a.task, a.episodes, over)
    out.update(success=float(np.mean(wins)), wins=[int(w) for w in wins],
               wall_s=time.perf_counter() - t0)
    print(json.dumps(out), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
