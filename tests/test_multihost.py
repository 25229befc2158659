"""Multi-process jobs with real processes on this machine, started the way the launch
files in experiments/launch/ start them."""

import json
import os
import re
import sys

from tests.helpers import TOY_TASKS3, run_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "experiments", "launch")
TOY_TASKS4 = TOY_TASKS3 + ("point-mass-west",)
# toy teachers: 2 eval periods of 4,000 env steps per 8,000, no early stop
TOY_FLAGS = ["--config.ppo.early_stop_success=1.1"]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _exported(workdir) -> dict:
    """{task: env steps} of every teacher exported under workdir."""
    teachers = os.path.join(workdir, "teachers")
    return {t: json.load(open(os.path.join(teachers, t, "metadata.json")))["env_steps"]
            for t in sorted(os.listdir(teachers))
            if os.path.exists(os.path.join(teachers, t, "metadata.json"))}


def _tpu_commands(workdir, vms: int) -> list[list[str]]:
    """The command that tpu_teachers.sh runs on each of `vms` TPU VMs, read from the
    file, with the CPU-sized toy config in place of the paper one."""
    text = open(os.path.join(LAUNCH, "tpu_teachers.sh")).read().replace("\\\n", "")
    command = re.search(r'--command="cd cpd_jax && (.*?)"', text).group(1)
    command = command.replace("$WORKDIR", str(workdir)).replace("${#VMS[@]}", str(vms)).replace(
        "configs/teachers_ppo.py", "configs/teachers_ppo_cpu.py")
    commands = []
    for i in range(vms):
        args = command.replace("$i", str(i)).split()
        assert args[:3] == ["python", "-m", "cpd_jax.main"]
        assert "--config.parallel.multi_host=True" in args
        commands.append([sys.executable] + args[1:])
    return commands


def _run_all(commands, extra):
    return run_processes([c + extra for c in commands], [_env()] * len(commands), timeout=600)


def test_teachers_on_two_processes_train_and_export_each_task_once(tmp_path):
    commands = _tpu_commands(tmp_path, vms=2)
    tasks = [f"--config.teachers.tasks={TOY_TASKS4!r}", "--config.ppo.total_env_steps=8000"]
    runs = _run_all(commands, tasks + TOY_FLAGS)
    for code, out in runs:
        assert code == 0, out[-3000:]
    shares = [re.search(r"process (\d) of 2 trains (.*)", out).groups() for _, out in runs]
    assert [int(i) for i, _ in shares] == [0, 1]
    trained = [t for _, names in shares for t in names.split(", ")]
    assert sorted(trained) == sorted(TOY_TASKS4)  # each task on exactly one process
    assert _exported(tmp_path) == {t: 8000 for t in TOY_TASKS4}
    table = open(os.path.join(tmp_path, "teachers", "success_table.md")).read()
    assert all(f"| {t} |" in table for t in TOY_TASKS4)
    # the same commands with a larger budget resume every task where it stopped
    runs = _run_all(commands, tasks[:1] + ["--config.ppo.total_env_steps=12000"] + TOY_FLAGS)
    for code, out in runs:
        assert code == 0, out[-3000:]
        assert "resumed at eval period 2" in out
    assert _exported(tmp_path) == {t: 12000 for t in TOY_TASKS4}


def test_slurm_teacher_array_elements_split_the_tasks(tmp_path):
    """Two elements of the SLURM array, run at once by bash as SLURM would, each train
    their group; an element past the last group fails with a message."""
    script = os.path.join(LAUNCH, "slurm_teachers.sbatch")

    def element(i):
        return dict(_env(), SLURM_ARRAY_TASK_ID=str(i), PYTHON=sys.executable,
                    CONFIG="cpd_jax/configs/teachers_ppo_cpu.py", WORKDIR=str(tmp_path),
                    TASKS=",".join(TOY_TASKS4), GROUP_SIZE="2",
                    EXTRA_FLAGS=" ".join(TOY_FLAGS + ["--config.ppo.total_env_steps=8000"]))

    runs = run_processes([["bash", script]] * 3, [element(i) for i in range(3)], timeout=600)
    for code, out in runs[:2]:
        assert code == 0, out[-3000:]
    assert runs[2][0] == 2 and "has no tasks" in runs[2][1]
    assert _exported(tmp_path) == {t: 8000 for t in TOY_TASKS4}
    assert sorted(os.listdir(tmp_path / "ppo_state")) == [
        "point_mass." + "+".join(TOY_TASKS4[:2]), "point_mass." + "+".join(TOY_TASKS4[2:])]
