"""Learning curves of joint distillation: held-out success vs gradient steps, vs teacher
episodes per task and vs student width (BUILD_NOTES, "Learning curves"): where the
CPU config's steps, data and width sit relative to the plateau.

    python experiments/learning_curves.py --config=cpd_jax/configs/mt25_5stage_cpu.py \
        --workdir=runs/curves --out=experiments/results/learning_curves

Every point is its own `python -m cpd_jax.main` joint run in `<workdir>/<curve>/<x>`
(the cosine schedule depends on the budget, so a point at B steps is a run of B steps),
evaluated under the config's protocol (held-out goals). Curves:
  stage<k>   the 5 tasks of stage k of the 5-stage protocol, vs steps (--steps)
  mt25       all 25 tasks, vs steps (--mt25_steps)
  episodes   stage 1's tasks, vs teacher episodes per task (--episodes), --episodes_steps
  width      all 25 tasks, vs student width (--widths), --width_steps
Runs share one teacher-data directory: a run of n episodes per task reads the first n
episodes of the largest collection, so the episodes curve runs largest first. Finished
points are reused; with `--earlier=<an earlier <out>.json>` the points it has and the
workdir lacks are pooled in (a committed curve extended without its runs), under the same
evaluation protocol only. Output: `<out>.json` (per
curve, per point: per-task and mean success, teachers' success, wall time), `<out>.md`
and `<out>.png` / `<out>_episodes.png` / `<out>_width.png`.
"""

import importlib.util
import json
import pathlib
from concurrent import futures

import numpy as np
from absl import app, flags

import common

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/curves", "where runs go")
_OUT = flags.DEFINE_string("out", "experiments/results/learning_curves", "output prefix")
_CURVES = flags.DEFINE_list("curves", "stage1,stage2,stage3,stage4,stage5,mt25,episodes",
                            "curves to run (stage<k>, mt25, episodes, width)")
_STEPS = flags.DEFINE_list("steps", "2500,5000,10000", "budgets of the stage curves")
_MT25_STEPS = flags.DEFINE_list("mt25_steps", "5000,10000,20000", "budgets, mt25")
_EPISODES = flags.DEFINE_list("episodes", "10,20,50", "episodes per task (episodes curve)")
_EPISODES_STEPS = flags.DEFINE_integer("episodes_steps", 5000, "budget of the episodes curve")
_WIDTHS = flags.DEFINE_list("widths", "64,128", "student widths (width curve)")
_WIDTH_STEPS = flags.DEFINE_integer("width_steps", 10000, "budget of the width curve")
_SEED = flags.DEFINE_integer("seed", 0, "seed of every run")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "runs at a time")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for every run")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "only rebuild the report")
_EARLIER = flags.DEFINE_string("earlier", None, "an earlier curves JSON whose points fill "
                               "the (curve, x) points that the workdir has no run of")

X_LABELS = {"step": "gradient steps", "episodes": "teacher episodes per task",
            "dim": "student width (dim)"}


def _tasks_flag(tasks) -> str:
    return "--config.tasks=(" + ",".join(f"'{t}'" for t in tasks) + ",)"


def curve_specs(config) -> dict:
    """{curve: (x key, {x: extra flags of that point's run})}."""
    stream, size = list(config.tasks), config.continual.stage_sizes[0]
    steps = lambda n: [f"--config.distill.max_steps={n}"]
    specs = {}
    for name in _CURVES.value:
        if name.startswith("stage"):
            k = int(name[len("stage"):]) - 1
            tasks = _tasks_flag(stream[k * size:(k + 1) * size])
            specs[name] = ("step", {int(n): [tasks, *steps(n)] for n in _STEPS.value})
        elif name == "mt25":
            specs[name] = ("step", {int(n): [_tasks_flag(stream), *steps(n)]
                                    for n in _MT25_STEPS.value})
        elif name == "episodes":
            specs[name] = ("episodes", {int(n): [
                _tasks_flag(stream[:size]), *steps(_EPISODES_STEPS.value),
                f"--config.data.episodes_per_task={n}",
                f"--config.data.num_train_variations={min(int(n), 50)}"]
                for n in _EPISODES.value})
        elif name == "width":
            specs[name] = ("dim", {int(d): [_tasks_flag(stream), *steps(_WIDTH_STEPS.value),
                                            f"--config.student.dim={d}"]
                                   for d in _WIDTHS.value})
        else:
            raise app.UsageError(f"unknown curve {name!r}")
    return specs


def run_point(curve: str, x: int, flags_: list, root: pathlib.Path) -> None:
    common.run_main(_CONFIG.value, root / curve / str(x), [
        "--config.protocol=joint", f"--config.seed={_SEED.value}",
        f"--config.data.dir={root / 'data'}", *flags_, *_OVERRIDES.value])


def earlier_points(path: str | None, evaluation) -> tuple[dict, dict | None]:
    """({(curve, x): point} of an earlier curves JSON at `path`, each marked
    `"pooled_from": path`; the evaluation protocol of the whole report): ({}, evaluation)
    for no path. UsageError if it was evaluated under another protocol."""
    if not path:
        return {}, evaluation
    earlier = json.loads(pathlib.Path(path).read_text())
    if evaluation is not None and earlier["evaluation"] != evaluation:
        raise app.UsageError(f"{path} was evaluated under another protocol than the runs "
                             f"here ({earlier['evaluation']} vs {evaluation}): not pooled")
    points = {(curve, p[c["x"]]): {**p, "pooled_from": p.get("pooled_from", path)}
              for curve, c in earlier["curves"].items() for p in c["points"]}
    return points, earlier["evaluation"]


def write_report(root: pathlib.Path, specs: dict, out: pathlib.Path,
                 earlier: str | None = None) -> None:
    from cpd_jax.evaluation import report

    found, evaluation = {}, None
    for curve, (x_key, points) in specs.items():
        for x in points:
            path = root / curve / str(x) / "results.json"
            if path.exists():
                r = json.loads(path.read_text())
                evaluation = r["evaluation"]
                found[curve, x] = {
                    x_key: x, "mean_success": r["mean_success"],
                    "teacher_mean_success": r["teacher_mean_success"],
                    "per_task": {t: v["success_rate"] for t, v in r["per_task"].items()},
                    "train_time_s": r["time_s"]["train"], "wall_time_s": r["wall_time_s"]}
    pooled, evaluation = earlier_points(earlier, evaluation)
    curves = {}
    for curve, (x_key, points) in specs.items():
        rows = [found.get((curve, x), pooled.get((curve, x))) for x in sorted(points)]
        rows = [r for r in rows if r is not None]
        if rows:
            curves[curve] = {"x": x_key, "points": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"evaluation": evaluation,
                                                    "curves": curves}, indent=2))
    lines = ["| curve | x | held-out success (%) | teachers (%) | ratio | train s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for curve, c in curves.items():
        for p in c["points"]:
            lines.append(f"| {curve} | {c['x']} {p[c['x']]} | {100 * p['mean_success']:.1f} "
                         f"| {100 * p['teacher_mean_success']:.1f} | "
                         f"{p['mean_success'] / p['teacher_mean_success']:.2f} | "
                         f"{p['train_time_s']:.0f} |")
    reused = {}  # {source: [points pooled from it]}
    for curve, c in curves.items():
        for p in c["points"]:
            if "pooled_from" in p:
                reused.setdefault(p["pooled_from"], []).append(f"{curve} {c['x']} {p[c['x']]}")
    for source, points in reused.items():
        lines += ["", f"Points pooled from an earlier report, {source} (no run in this "
                  f"workdir): {', '.join(points)}."]
    lines += ["", report.evaluation_note(evaluation)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    for x_key, suffix in (("step", ""), ("episodes", "_episodes"), ("dim", "_width")):
        chosen = {n: c["points"] for n, c in curves.items() if c["x"] == x_key}
        if chosen:
            teacher = float(np.mean([p["teacher_mean_success"] for ps in chosen.values()
                                     for p in ps]))
            report.plot_learning_curves(out.parent / f"{out.name}{suffix}.png", chosen,
                                        teacher, xlabel=X_LABELS[x_key], x_key=x_key)


def main(argv):
    del argv
    spec = importlib.util.spec_from_file_location("config", _CONFIG.value)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    specs = curve_specs(module.get_config())
    root = pathlib.Path(_WORKDIR.value)
    if not _REPORT_ONLY.value:
        jobs = [(c, x, fl) for c, (_, points) in specs.items()
                for x, fl in sorted(points.items(), reverse=c == "episodes")]
        with futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
            for f in [pool.submit(run_point, c, x, fl, root) for c, x, fl in jobs]:
                f.result()
    write_report(root, specs, pathlib.Path(_OUT.value), _EARLIER.value)


if __name__ == "__main__":
    app.run(main)
