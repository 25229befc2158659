"""One student trained by two processes (a real jax.distributed cluster over gloo),
started the way experiments/launch/slurm_distill.sbatch and tpu_distill.sh start it.

Three runs of the same tiny continual config (stage 1: two tasks, stage 2: one):
  - `two_processes`: tpu_distill.sh's command on 2 local processes, uninterrupted;
  - `one_process`: one process with 2 host devices (the same 2-device mesh);
  - `resumed`: slurm_distill.sbatch under bash with a stand-in `srun` (JAX then reads
    SLURM's variables itself), both processes stopped right after stage 2's first
    intra-stage checkpoint, then the same job again, which resumes from it.
All three must train the same student: the same success matrix and routing, and the
same losses, held-out MSE and final parameters -- bitwise for the resumed run, up to
float summation order for the one-process run.
"""

import json
import os
import re
import shlex
import sys

import numpy as np
import pytest

from tests.helpers import TINY_CONTINUAL_TASKS, free_port, run_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "experiments", "launch")
STOP_CODE = 75

CONFIG = """
from tests.helpers import tiny_continual_config

def get_config():
    c = tiny_continual_config()
    c.continual.stage_sizes = (2, 1)  # stage 1's two tasks are collected by one process each
    c.checkpoint.every_steps = 5
    return c
"""

# A stand-in for `srun`: starts SLURM_NTASKS copies of the command on this machine with
# the per-task variables srun would set.
FAKE_SRUN = """#!/bin/bash
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$SRUN_LOGS/task$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""

# `python` that stops the process (exit STOP_CODE) right after stage 2's first intra-stage
# checkpoint is on disk: a job killed mid-stage, at the same step in every process.
STOPPING_PYTHON = """
import os, runpy, sys
from cpd_jax.continual import state

save = state.save_progress

def save_then_stop(ckpt, config, progress, step_id):
    save(ckpt, config, progress, step_id)
    if progress.stage == 2:
        os._exit({code})

state.save_progress = save_then_stop
assert sys.argv[1:3] == ["-m", "cpd_jax.main"], sys.argv
sys.argv = ["cpd_jax.main"] + sys.argv[3:]
runpy.run_module("cpd_jax.main", run_name="__main__")
"""


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **extra)
    env.pop("XLA_FLAGS", None)
    return env


def _launch_command(name: str) -> str:
    """The line after `# >>> command` (slurm) or the ssh --command (tpu) of a launch file."""
    text = open(os.path.join(LAUNCH, name)).read()
    if name.endswith(".sbatch"):
        return text.split("# >>> command\n")[1].strip()
    return re.search(r'--command="cd cpd_jax && (.*?)"', text.replace("\\\n", ""),
                     re.S).group(1)


def _tpu_commands(config: str, workdir: str) -> list[list[str]]:
    """tpu_distill.sh's command for each of 2 VMs, with the coordinator, process count
    and index that jax.distributed reads from a TPU slice given explicitly."""
    command = _launch_command("tpu_distill.sh")
    command = command.replace("$CONFIG", config).replace("$WORKDIR", workdir).replace(
        "${EXTRA_FLAGS:-}", "")
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "cpd_jax.main"]
    assert "--config.parallel.multi_host=True" in args
    port = free_port()
    return [[sys.executable] + args[1:] + [
        f"--config.parallel.coordinator_address=127.0.0.1:{port}",
        "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}"]
        for i in range(2)]


def _slurm_job_id_with_free_port() -> int:
    """A SLURM_JOB_ID whose coordinator port (JAX: 61440 + id % 4096) is free here."""
    import socket
    for job_id in range(os.getpid() % 4096, os.getpid() % 4096 + 4096):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 61440 + job_id % 4096))
            except OSError:
                continue
        return job_id
    raise RuntimeError("no free port in JAX's SLURM range")


def _run_slurm_job(tmp_path, config: str, workdir: str, python: str, logs) -> tuple[int, str]:
    os.makedirs(logs, exist_ok=True)
    srun = tmp_path / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    env = _env(SLURM_JOB_ID=str(_slurm_job_id_with_free_port()), SLURM_NTASKS="2",
               SLURM_STEP_NODELIST="127.0.0.1", SRUN=str(srun), SRUN_LOGS=str(logs),
               PYTHON=python, CONFIG=config, WORKDIR=workdir)
    [(code, out)] = run_processes([["bash", os.path.join(LAUNCH, "slurm_distill.sbatch")]],
                                  [env], timeout=900)
    return code, out + "".join(open(os.path.join(logs, f"task{i}.log")).read()
                               for i in range(2))


def _final_params(workdir: str) -> dict:
    from cpd_jax import checkpointing
    import jax
    tree, meta = checkpointing.RunCheckpointer(os.path.join(workdir, "checkpoints")).restore()
    assert meta["stages_done"] == 2
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(tree["params"])[0]}


def _trained(workdir: str) -> dict:
    """What must agree between runs of the same student: the success matrix (None: not
    evaluated), routing shares, and as float64 arrays the loss / MSE curves and the
    held-out MSE after each phase."""
    results = json.load(open(os.path.join(workdir, "results.json")))
    return {"R": [[None if np.isnan(x) else x for x in row] for row in results["R"]],
            "routing": [s.get("routing") for s in results["stages"]],
            "curves": np.array([[(m["step"], m["loss"], m["mse"]) for m in s["train_curve"]]
                                for s in results["stages"]]),
            "phase_mse": np.array([v for s in results["stages"] for p in s["phase_mse"]
                                   for v in p["mse"].values()])}


def _assert_same_student(a: str, b: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Runs in workdirs a and b trained the same student (bitwise by default)."""
    ta, tb = _trained(a), _trained(b)
    assert ta["R"] == tb["R"] and ta["routing"] == tb["routing"]
    for key in ("curves", "phase_mse"):
        np.testing.assert_allclose(ta[key], tb[key], rtol=rtol, err_msg=key)
    pa, pb = _final_params(a), _final_params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=0, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost_distill")
    config = tmp / "tiny_continual.py"
    config.write_text(CONFIG)
    out = {}
    # uninterrupted, on 2 processes as on a TPU slice
    two = str(tmp / "two_processes")
    procs = run_processes(_tpu_commands(str(config), two), [_env()] * 2, timeout=900)
    for code, log in procs:
        assert code == 0, log[-3000:]
    out["two_processes"] = (two, [log for _, log in procs])
    # one process, 2 host devices
    one = str(tmp / "one_process")
    [(code, log)] = run_processes(
        [[sys.executable, "-m", "cpd_jax.main", f"--config={config}", f"--workdir={one}"]],
        [_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")], timeout=900)
    assert code == 0, log[-3000:]
    out["one_process"] = (one, [log])
    # the SLURM job, stopped in stage 2, then resubmitted
    resumed = str(tmp / "resumed")
    stopping = tmp / "stopping_python"
    (tmp / "stop_after_checkpoint.py").write_text(STOPPING_PYTHON.format(code=STOP_CODE))
    stopping.write_text(f'#!/bin/bash\nexec {shlex.quote(sys.executable)} '
                        f'{shlex.quote(str(tmp / "stop_after_checkpoint.py"))} "$@"\n')
    stopping.chmod(0o755)
    code, log = _run_slurm_job(tmp, str(config), resumed, str(stopping), tmp / "logs1")
    assert code != 0 and os.path.isdir(os.path.join(resumed, "checkpoints", "in_stage")), \
        log[-3000:]
    out["stopped"] = (resumed, [log])
    code, log = _run_slurm_job(tmp, str(config), resumed, sys.executable, tmp / "logs2")
    assert code == 0, log[-3000:]
    out["resumed"] = (resumed, [log])
    return out


def test_two_processes_train_the_one_process_student(runs):
    """Up to float summation order: XLA's CPU thread pools split a matmul differently for
    one device per process than for two devices in one process (losses agree to ~1e-7
    relative; 24 AdamW steps from near-zero gradients spread that to ~1e-3 in params)."""
    _assert_same_student(runs["two_processes"][0], runs["one_process"][0], rtol=1e-5,
                         atol=5e-3)


def test_each_process_collects_its_share_and_process_0_writes(runs):
    workdir, (log0, log1) = runs["two_processes"]
    assert "process 0 of 2" in log0 and "process 1 of 2" in log1
    stage1 = TINY_CONTINUAL_TASKS[:2]
    assert f"collected 2 {stage1[0]} episodes" in log0
    assert f"collected 2 {stage1[1]} episodes" in log1
    assert f"collected 2 {stage1[1]} episodes" not in log0  # each task collected once
    events = [f for _, _, fs in os.walk(os.path.join(workdir, "tb")) for f in fs
              if "tfevents" in f]
    assert len(events) == 1  # one TensorBoard writer: process 0's
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["evaluation"]["episodes_per_task"] == 2


def test_slurm_job_stopped_mid_stage_resumes_to_the_same_student(runs):
    _, (stopped_log,) = runs["stopped"]
    workdir, (log,) = runs["resumed"]
    assert "jax.distributed up: process 1 of 2" in log  # SLURM auto-detection
    assert "resuming stage 2 at step" in log, log[-3000:]
    _assert_same_student(workdir, runs["two_processes"][0])  # bitwise
