"""What the experiment scripts share: one `python -m cpd_jax.main` run per workdir."""

import json
import pathlib
import subprocess
import sys
import time

from absl import logging

COMMAND_FILE = "command.json"  # the config file and flags a workdir's run was made with


def check_command(workdir: pathlib.Path, command: dict) -> None:
    """Refuses a workdir whose run was made with another config or other flags: reusing
    it would put that run's results under this command's name. Changes nothing on disk."""
    path = workdir / COMMAND_FILE
    if not path.exists():
        return
    previous = json.loads(path.read_text())
    if previous != command:
        changed = sorted(set(previous.get("flags", [])) ^ set(command["flags"]))
        raise ValueError(
            f"{workdir} holds a run of {previous['config']} with other flags than asked "
            f"(differing: {changed or 'config file'}); use another --workdir or move that "
            "run away (nothing was changed)")


def run_main(config: str, workdir: pathlib.Path, flags_: list[str]) -> dict:
    """Runs `python -m cpd_jax.main --config=config --workdir=workdir *flags_` (its output
    in `<workdir>/log.txt`, the command in `<workdir>/command.json`) and returns its
    results.json. A finished run of the same command is not run again; an unfinished one
    resumes from its own checkpoints; a run of another command is an error."""
    workdir = pathlib.Path(workdir)
    command = {"config": str(config), "flags": list(flags_)}
    check_command(workdir, command)
    results = workdir / "results.json"
    if results.exists() and (workdir / "DONE").exists():
        return json.loads(results.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / COMMAND_FILE).write_text(json.dumps(command, indent=2))
    cmd = [sys.executable, "-m", "cpd_jax.main", f"--config={config}",
           f"--workdir={workdir}", *flags_]
    start = time.time()
    with open(workdir / "log.txt", "a") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    (workdir / "DONE").write_text(f"{time.time() - start:.0f} s\n")
    logging.info("%s done in %.0f s", workdir, time.time() - start)
    return json.loads(results.read_text())
