"""Training driver for PPO teachers (the impure outer loop), and its report (learning
curves, success table).

    python -m cpd_jax.main --config=cpd_jax/configs/teachers_ppo_cpu.py \
        --workdir=/tmp/teachers [--config.teachers.tasks="('point-mass-east',)"]

`train_teachers(config, workdir)` trains `config.teachers.tasks` (any subset, so one
batch job per task or group of tasks can share a workdir):
* tasks that share an env program (the toy env) are vmapped and sharded over local
  devices; MJX tasks (one MuJoCo model each) run one program per task;
* the jitted unit is a chunk of `evals_per_chunk` eval periods; after each chunk the
  whole batched TrainState is checkpointed (`checkpointing.RunCheckpointer`,
  `<workdir>/ppo_state/<group>`, `state_dir_name`) so a killed job restarted with the
  same command resumes; the loop ends early when every task of the group has
  early-stopped;
* on several processes (`parallel.multi_host`, the same command on each) every process
  trains its share of the tasks (`process_tasks`) as a JAX program of its own: teachers
  share no array, so the job never starts `jax.distributed`;
* output per task under `<workdir>/teachers/<task>/`: the teacher (`export`:
  policy params + obs normaliser, `metadata.json`), `curve.json` and `curve.png`
  (success and return vs env steps, `plot_curve`); plus
  `<workdir>/teachers/success_table.md` (`write_success_table`, paper Table 3 style)
  over all tasks present.

Rollout collection loads a teacher with `cpd_jax.teachers.ppo_teacher.PPOTeacher.load`,
which does not import this module.

One module despite its length: the teacher-training driver and its report read and
write the same state-directory layout.
"""

import functools
import json
import os
import time
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cpd_jax import checkpointing, live_metrics, parallel, progress
from cpd_jax.envs import toy_envs
from cpd_jax.envs.functional import Env
from cpd_jax.errors import UserError
from cpd_jax.rl.ppo import export
from cpd_jax.rl.ppo import train as ppo
from cpd_jax.rl.ppo.export import METADATA_FILE, TEACHERS_DIR

STATE_DIR = "ppo_state"
STATE_FORMAT = "cpd_jax.teachers.ppo_state/v1"  # a stored id, not a module path:
#                                                kept so existing states resume


# ------------------------------------------------------------------------ envs


def task_key(seed: int, task: str) -> jax.Array:
    """The training key of `task`: fold_in(PRNGKey(seed), stable task index), so a task
    gets the same key whether it trains alone or in a group."""
    from cpd_jax.envs.tasks import MT25_TASKS
    names = list(MT25_TASKS) + list(toy_envs.TOY_TASKS)
    return jax.random.fold_in(jax.random.PRNGKey(seed), names.index(task))


def env_groups(config) -> Iterator[tuple[str, Env, list[str], Any]]:
    """(group name, env, tasks, stacked task_params or None) for config.teachers, built
    one group at a time (an MJX group's reset pool compiles for a minute or more, so
    the first teacher starts training without waiting for every task's pool)."""
    backend = config.teachers.env_backend
    tasks = list(config.teachers.tasks)
    if backend == "point_mass":
        unknown = [t for t in tasks if t not in toy_envs.TOY_TASKS]
        if unknown:
            raise ValueError(f"unknown toy tasks {unknown}; have {sorted(toy_envs.TOY_TASKS)}")
        yield ("point_mass", toy_envs.PointMass(), tasks,
               jnp.asarray(toy_envs.toy_task_params(tasks)))
        return
    if backend == "mjx":
        from cpd_jax.envs.tasks import validate_tasks
        from cpd_jax.envs import mjx_adapter
        validate_tasks(tasks)
        for t in tasks:
            env = mjx_adapter.make_mjx_env(t, config.teachers.variations)
            pool = mjx_adapter.make_reset_pool(env, task_key(config.seed, t),
                                               config.teachers.reset_pool_size)
            # A task axis of 1: the pool is this task's params (resets are gathers).
            yield t, env, [t], jax.tree_util.tree_map(lambda x: x[None], pool)
        return
    raise ValueError(f"unknown teachers.env_backend {backend!r}")


# ----------------------------------------------------------------- checkpoints


def save_state(path: str, step: int, state: ppo.TrainState, curves: dict) -> None:
    """Checkpoint of a batched TrainState (+ the curves so far) as step `step` (eval
    periods done); only the latest is kept. The task params are not saved: they are
    rebuilt from the config (an MJX reset pool is large)."""
    with checkpointing.RunCheckpointer(path, max_to_keep=1) as ckpt:
        ckpt.save(step, state.replace(task_params=None),
                  {"format": STATE_FORMAT, "curves": curves})


def restore_state(path: str, like: ppo.TrainState) -> Optional[tuple[int, Any, dict]]:
    """(step, state, curves) of the latest checkpoint under `path`, or None. `like` is a
    freshly initialised state that gives the tree structure, shapes and shardings.
    UserError if `path` holds something this version cannot resume from."""
    with checkpointing.RunCheckpointer(path, max_to_keep=1) as ckpt:
        step = ckpt.latest()
        if step is None:
            return None
        fix = "delete it to train this group from the start"
        try:
            metadata = ckpt.restore_metadata(step)
        except checkpointing.CorruptCheckpointError as e:
            raise UserError(f"{path}: no PPO training state this version can read (an "
                            f"older cpd_jax wrote it, or it is damaged); {fix}") from e
        checkpointing.check_format(metadata, STATE_FORMAT, path, fix)
        state, metadata = ckpt.restore(
            step, template_fn=lambda _: like.replace(task_params=None))
    return step, state.replace(task_params=like.task_params), metadata["curves"]


def _jsonable(x):
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.generic,)):
        return x.item()
    return x


def export_teacher(out_dir: str, task: str, config, state_i: ppo.TrainState,
                   curve: dict, obs_size: int, action_size: int) -> None:
    """Writes one task's teacher (`export.save_teacher`) and its learning curve
    (JSON + PNG). `state_i` is that task's (unbatched) TrainState."""
    success = curve["eval_success"]
    meta = {
        "task": task, "obs_size": obs_size, "action_size": action_size,
        "ppo_config": _jsonable(config.ppo.to_dict()),
        "env_backend": config.teachers.env_backend,
        "env_steps": int(state_i.env_steps), "num_updates": int(state_i.num_updates),
        "early_stopped": bool(state_i.stopped),
        "final_eval_success": float(success[-1]) if success else None,
        "best_eval_success": float(max(success)) if success else None,
    }
    export.save_teacher(out_dir, state_i.params["policy"], state_i.obs_stats, meta)
    with open(os.path.join(out_dir, "curve.json"), "w") as f:
        json.dump(curve, f)
    plot_curve(os.path.join(out_dir, "curve.png"), task, curve)


# ---------------------------------------------------------------------- report
# What a PPO teachers job shows: each teacher's learning curve (PNG) and the success
# table over every teacher in a teachers dir (paper Table 3 style).


def plot_curve(path: str, task: str, curve: dict) -> None:
    """Success and return (eval and train) against env steps, written to `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = np.asarray(curve["env_steps"])
    axes[0].plot(steps, curve["eval_success"], label="eval (deterministic)")
    axes[0].plot(steps, curve["train_success"], label="train (stochastic)")
    axes[0].set_ylabel("success rate")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend()
    axes[1].plot(steps, curve["eval_return"], label="eval")
    axes[1].plot(steps, curve["train_return"], label="train")
    axes[1].set_ylabel("episode return")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("env steps")
    fig.suptitle(task)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_success_table(teachers_dir: str) -> str:
    """`success_table(teachers_dir)`, written to `<teachers_dir>/success_table.md` (whole,
    atomically) and returned."""
    text = success_table(teachers_dir)
    path = os.path.join(teachers_dir, "success_table.md")
    with open(f"{path}.{os.getpid()}.tmp", "w") as f:  # jobs sharing the dir may race:
        f.write(text)  # each replaces the file whole, never half-written
    os.replace(f"{path}.{os.getpid()}.tmp", path)
    return text


def success_table(teachers_dir: str) -> str:
    """Markdown table (paper Table 3 style) over every exported teacher in the dir."""
    rows = []
    for task in sorted(os.listdir(teachers_dir)):
        meta_path = os.path.join(teachers_dir, task, METADATA_FILE)
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                rows.append(json.load(f))
    lines = ["| task | final success | best success | env steps | early-stopped |",
             "| --- | --- | --- | --- | --- |"]
    for m in rows:
        lines.append(f"| {m['task']} | {m['final_eval_success']:.3f} | "
                     f"{m['best_eval_success']:.3f} | {m['env_steps']:,} | "
                     f"{'yes' if m['early_stopped'] else 'no'} |")
    if rows:
        mean = np.mean([m["final_eval_success"] for m in rows])
        lines.append(f"| **mean** | **{mean:.3f}** | | | |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- driver

_CURVE_KEYS = ("env_steps", "eval_success", "eval_return", "train_success",
               "train_return", "active")


def _config_key(ppo_config) -> str:
    """The ppo config as JSON, minus the total budget: the compiled functions do not
    depend on it, so runs that differ only in budget share them."""
    d = _jsonable(ppo_config.to_dict())
    d.pop("total_env_steps")
    return json.dumps(d, sort_keys=True)


ROLLOUT_LOOPS = ("scan", "host")


def _rollout_loop(config) -> str:
    """config.teachers.rollout_loop, checked (before any env is built: an MJX env group
    takes a minute to build)."""
    loop = config.teachers.rollout_loop
    if loop not in ROLLOUT_LOOPS:
        raise ValueError(f"teachers.rollout_loop must be one of {ROLLOUT_LOOPS}, got {loop!r}")
    return loop


@functools.lru_cache(maxsize=8)
def _compiled(config_key: str, env: Env, rollout_loop: str = "scan"):
    """(fns, init(keys[N], task_params[N]), chunk(state[N], k, progress=None)) jitted
    and vmapped, cached per process so repeated groups / resumed runs compile once.
    rollout_loop: "scan" = the chunk is one XLA program; "host" =
    `ppo.make_host_chunk` (the same computation looped in Python over a jitted env
    step)."""
    config = ml_collections.ConfigDict(json.loads(config_key))
    config.total_env_steps = config.eval_every_steps  # unused by init / train_chunk
    fns = ppo.make_ppo(config, env)
    if rollout_loop == "host":
        chunk = ppo.make_host_chunk(fns, config)
    else:
        scanned = jax.jit(jax.vmap(fns.train_chunk, in_axes=(0, None)), static_argnums=1)
        chunk = lambda state, k, progress=None: scanned(state, k)  # one program: no
        #                                                           progress inside
    return fns, jax.jit(jax.vmap(fns.init)), chunk


# Per-period values of a chunk's metrics that are bookkeeping, not curves.
_NOT_SCALARS = ("env_steps", "active", "stopped")


def chunk_scalars(metrics: dict, tasks: Sequence[str]) -> list[tuple[int, dict]]:
    """(step, {`ppo/<task>/<metric>`: value}) for every eval period of a chunk in which
    the task was still training (`active`); step = the task's env steps at the end of
    the period. `metrics`: the chunk's metrics as numpy, leaves [N(+padding), periods]
    (the jitted chunk returns them per period, so nothing leaves the scan early)."""
    out = []
    for i, task in enumerate(tasks):
        for j in np.flatnonzero(metrics["active"][i]):
            out.append((int(metrics["env_steps"][i][j]), {
                f"ppo/{task}/{k}": float(v[i][j]) for k, v in metrics.items()
                if k not in _NOT_SCALARS}))
    return out


def state_dir_name(group: str, tasks: Sequence[str]) -> str:
    """The checkpoint directory of an env group: the group's name when it is its one
    task (an MJX task), else the name and its tasks, so jobs that train different toy
    tasks in one workdir (array elements, processes) never share a directory."""
    return group if list(tasks) == [group] else f"{group}.{'+'.join(tasks)}"


def train_group(config, workdir: str, name: str, env: Env, tasks: Sequence[str],
                task_params: Any, log=print, writer=None) -> dict:
    """Trains one env group (vmapped over its tasks), checkpointing per chunk; exports
    the teachers. Returns {task: curve}.

    After each chunk: a progress line (eval periods done / total, env steps/s, ETA;
    the first chunk's rate includes its compile) through `log`, and the chunk's
    per-period metrics to `writer` (`live_metrics`: `chunk_scalars`, and
    `ppo/<group>/env_steps_per_s`)."""
    writer = writer or live_metrics.DISABLED
    fns, init_fn, chunk_fn = _compiled(_config_key(config.ppo), env, _rollout_loop(config))
    chunk_fn = progress.log_first_call(
        chunk_fn, f"[{name}] the PPO training chunk ({_rollout_loop(config)} loop)", log=log)
    num_evals = ppo.schedule(config.ppo)[2]
    n = len(tasks)
    keys = jnp.stack([task_key(config.seed, t) for t in tasks])
    mesh = None
    if config.teachers.shard and jax.local_device_count() > 1:
        mesh = ppo.task_mesh()
        (keys, task_params), _ = ppo.pad_tasks((keys, task_params), mesh.size)
        keys, task_params = ppo.shard_tasks((keys, task_params), mesh)
    state = init_fn(keys, task_params)
    state_dir = os.path.join(workdir, STATE_DIR, state_dir_name(name, tasks))
    curves = {t: {k: [] for k in _CURVE_KEYS} for t in tasks}
    evals_done = 0
    restored = restore_state(state_dir, state)
    if restored is not None:
        evals_done, state, curves = restored
        log(f"[{name}] resumed at eval period {evals_done}")
    t_start = time.time()
    meter = progress.Progress(f"[{name}] PPO", num_evals, "eval periods", log=log)
    meter.restart(evals_done)  # a resumed job's rate counts only its own periods
    while evals_done < num_evals and not bool(jnp.all(state.stopped[:n])):
        k = min(config.teachers.evals_per_chunk, num_evals - evals_done)
        env_steps_before, t_chunk = np.asarray(state.env_steps[:n]), time.time()
        state, m = chunk_fn(state, k, progress=lambda msg: log(
            f"[{name}] ({time.time() - t_start:.0f}s) {msg}"))
        m = jax.tree_util.tree_map(np.asarray, m)
        evals_done += k
        for i, t in enumerate(tasks):
            for key in _CURVE_KEYS:
                curves[t][key].extend(_jsonable(m[key][i].tolist()))
        save_state(state_dir, evals_done, state, curves)
        env_steps = np.asarray(state.env_steps[:n])
        env_steps_per_s = progress.rate(float(np.sum(env_steps - env_steps_before)),
                                        time.time() - t_chunk)
        for step, scalars in chunk_scalars(m, tasks):
            writer.scalars(step, scalars)
        writer.scalars(int(env_steps.max()), {f"ppo/{name}/env_steps_per_s": env_steps_per_s})
        meter.update(evals_done, f"{env_steps_per_s:,.0f} env steps/s; " + ", ".join(
            f"{t}: success {curves[t]['eval_success'][-1]:.2f} @ "
            f"{curves[t]['env_steps'][-1]:,}" for t in tasks))
    teachers_dir = os.path.join(workdir, TEACHERS_DIR)
    for i, t in enumerate(tasks):
        # Only the periods in which the task was still training belong to its curve.
        c = curves[t]
        keep = [j for j, a in enumerate(c["active"]) if a]
        curve = {key: [c[key][j] for j in keep] for key in _CURVE_KEYS if key != "active"}
        state_i = jax.tree_util.tree_map(lambda x: x[i], state)
        export_teacher(os.path.join(teachers_dir, t), t, config, state_i, curve,
                       env.observation_size, env.action_size)
    return curves


def process_tasks(config) -> ml_collections.ConfigDict:
    """`config` with `teachers.tasks` cut to this process's share when several processes
    run the same command (`parallel.multi_host`; who is who: `parallel.process_identity`):
    each task is trained, checkpointed and exported by exactly one process (in a
    checkpoint directory named by its tasks, `state_dir_name`)."""
    if not config.parallel.multi_host:
        return config
    index, count = parallel.process_identity(config.parallel)
    config = ml_collections.ConfigDict(config.to_dict())
    config.teachers.tasks = tuple(parallel.process_share(config.teachers.tasks, index, count))
    return config


def train_teachers(config, workdir: str, log=print) -> str:
    """Trains every env group of `config.teachers.tasks` (on several processes: this
    process's share, `process_tasks`); returns the success table over every teacher
    exported so far, which each job (process, array element) rewrites when it ends, so
    the last one to finish leaves the complete table. Live metrics (`config.log`) go to
    `<workdir>/tb` (`cpd_jax.live_metrics`)."""
    _rollout_loop(config)  # a bad value fails before the envs are built
    config = process_tasks(config)
    if config.parallel.multi_host:
        index, count = parallel.process_identity(config.parallel)
        log(f"process {index} of {count} trains "
            f"{', '.join(config.teachers.tasks) or 'no task'}")
    with live_metrics.make_writer(config, workdir) as writer:
        for name, env, tasks, task_params in env_groups(config):
            train_group(config, workdir, name, env, tasks, task_params, log=log,
                        writer=writer)
    return write_success_table(os.path.join(workdir, TEACHERS_DIR))
