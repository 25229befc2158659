"""What the experiment scripts share: one `python -m cpd_jax.main` run per workdir."""

import json
import pathlib
import subprocess
import sys
import time

from absl import logging


def run_main(config: str, workdir: pathlib.Path, flags_: list[str]) -> dict:
    """Runs `python -m cpd_jax.main --config=config --workdir=workdir *flags_` (its output
    in `<workdir>/log.txt`) and returns its results.json. A run whose results exist is
    not run again; an unfinished one resumes from its own checkpoints."""
    workdir = pathlib.Path(workdir)
    results = workdir / "results.json"
    if results.exists() and (workdir / "DONE").exists():
        return json.loads(results.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cpd_jax.main", f"--config={config}",
           f"--workdir={workdir}", *flags_]
    start = time.time()
    with open(workdir / "log.txt", "a") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    (workdir / "DONE").write_text(f"{time.time() - start:.0f} s\n")
    logging.info("%s done in %.0f s", workdir, time.time() - start)
    return json.loads(results.read_text())
