"""Runs the continual comparison (methods x seeds) for a config and rebuilds Table 2.

    python experiments/run_comparison.py --config=cpd_jax/configs/mt25_5stage_cpu.py \
        --workdir=runs/table2 --methods=ours,finetune,replay_only,expert_only,independent \
        --seeds=0,1 [--parallel=2] [--override=--config.distill.max_steps=1000]

Each (method, seed) is its own `python -m cpd_jax.main` run in
`<workdir>/<method>/seed<k>` (so each resumes from its own checkpoints if killed),
sharing one teacher-data directory `<workdir>/data`. Then the per-run results are
gathered into `<workdir>/table2.{md,json,png}`. Ablations are methods here too:
no_te, no_shared_frozen, no_freeze_gating (= ours with one flag changed).
"""

import json
import pathlib
import subprocess
import sys
import time
from concurrent import futures

from absl import app, flags, logging

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/table2", "output directory")
_METHODS = flags.DEFINE_list("methods", "ours,finetune,replay_only,expert_only,independent",
                             "methods (see cpd_jax/continual/methods.py) and ablations")
_SEEDS = flags.DEFINE_list("seeds", "0,1", "seeds")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "runs at a time")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for every run")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "run nothing: rebuild the table from finished runs")

ABLATIONS = {  # name -> (method, config overrides)
    "no_te": ("ours", ["--config.student.task_context=none"]),
    "no_shared_frozen": ("ours", ["--config.continual.freeze_backbone=False"]),
    "no_freeze_gating": ("ours", ["--config.continual.freeze_gating=False"]),
}


def run_one(name: str, seed: int, root: pathlib.Path) -> pathlib.Path:
    method, extra = ABLATIONS.get(name, (name, []))
    workdir = root / name / f"seed{seed}"
    cmd = [sys.executable, "-m", "cpd_jax.main", f"--config={_CONFIG.value}",
           f"--workdir={workdir}", f"--config.method={method}", f"--config.seed={seed}",
           f"--config.data.dir={root / 'data'}", *extra, *_OVERRIDES.value]
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(workdir / "log.txt", "a") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    logging.info("%s seed %d done in %.0fs", name, seed, time.time() - start)
    return workdir / "results.json"


def finished_results(root: pathlib.Path) -> dict:
    """{method: [per-seed summaries]} of every run whose results.json covers all stages."""
    results = {}
    for name in _METHODS.value:
        for seed in _SEEDS.value:
            path = root / name / f"seed{seed}" / "results.json"
            if not path.exists():
                continue
            run = json.loads(path.read_text())
            if len(run["summary"]) == len(run["R"]):  # every stage finished
                results.setdefault(name, []).append(run["summary"])
    return results


def main(argv):
    del argv
    from cpd_jax.evaluation import report

    root = pathlib.Path(_WORKDIR.value)
    if _REPORT_ONLY.value:
        logging.info("table written: %s", report.write_table2(root, finished_results(root)))
        return
    jobs = [(m, int(s)) for s in _SEEDS.value for m in _METHODS.value]  # seed-major
    start = time.time()
    # The first run collects the teacher data alone, so later runs only read it.
    run_one(*jobs[0], root)
    with futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
        for f in futures.as_completed([pool.submit(run_one, m, s, root) for m, s in jobs[1:]]):
            f.result()  # re-raises a failed run's error
    files = report.write_table2(root, finished_results(root))
    logging.info("table written: %s (%.0f s in all)", files, time.time() - start)


if __name__ == "__main__":
    app.run(main)
