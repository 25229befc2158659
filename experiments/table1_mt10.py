"""Table 1 at CPU size: joint distillation of MT10 into one student (the paper's "central
model") vs its teachers, several seeds, held-out goals.

    python experiments/table1_mt10.py --workdir=runs/table1 --seeds=0,1,2 \
        --out=experiments/results/table1_mt10

Each seed is a `python -m cpd_jax.main` joint run of the config's student on the 10 MT10
tasks (`<workdir>/seed<k>`, one shared teacher-data directory). Output `<out>.json` /
`<out>.md`: per task the teachers' success on their own data and the student's held-out
success (mean ± std over seeds), beside the paper's 88.9 (teachers 90.8).
"""

import json
import pathlib

import numpy as np
from absl import app, flags

import common

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/table1", "where runs go")
_OUT = flags.DEFINE_string("out", "experiments/results/table1_mt10", "output prefix")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "seeds")
_STEPS = flags.DEFINE_integer("steps", 10000, "gradient steps of each joint run")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for every run")


def main(argv):
    del argv
    from cpd_jax.envs import MT10_TASKS
    from cpd_jax.evaluation import paper, report

    root = pathlib.Path(_WORKDIR.value)
    tasks = "--config.tasks=(" + ",".join(f"'{t}'" for t in MT10_TASKS) + ",)"
    runs = [common.run_main(_CONFIG.value, root / f"seed{s}", [
        "--config.protocol=joint", tasks, f"--config.seed={s}",
        f"--config.distill.max_steps={_STEPS.value}", f"--config.data.dir={root / 'data'}",
        *_OVERRIDES.value]) for s in _SEEDS.value]
    student = np.array([[r["per_task"][t]["success_rate"] for t in MT10_TASKS] for r in runs])
    teacher = np.array([runs[0]["per_task"][t]["teacher_success"] for t in MT10_TASKS])
    means = student.mean(1)
    out = {"evaluation": runs[0]["evaluation"], "seeds": [int(s) for s in _SEEDS.value],
           "steps": _STEPS.value, "tasks": list(MT10_TASKS),
           "student_per_seed": student.tolist(), "teacher": teacher.tolist(),
           "student_mean": float(means.mean()), "student_std": report.sample_std(means),
           "teacher_mean": float(teacher.mean()),
           "paper": paper.TABLE1_MT10,
           "train_time_s": [r["time_s"]["train"] for r in runs]}
    path = pathlib.Path(_OUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2))
    lines = ["| task | teachers (%) | student (%), mean ± std over seeds |", "| --- | --- | --- |"]
    for j, t in enumerate(MT10_TASKS):
        column = student[:, j]
        lines.append(f"| {t} | {100 * teacher[j]:.1f} | "
                     f"{report.mean_std(column.mean(), report.sample_std(column))} |")
    lines.append(f"| **mean** | **{100 * out['teacher_mean']:.1f}** | "
                 f"**{report.mean_std(out['student_mean'], out['student_std'])}** |")
    lines.append(f"| paper | {paper.TABLE1_MT10['teachers']} | "
                 f"{paper.TABLE1_MT10['central_model']} ± 1.9 |")
    lines += ["", f"{len(runs)} seeds, {_STEPS.value} gradient steps each. "
              + report.evaluation_note(out["evaluation"])]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
