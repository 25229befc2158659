"""Table 2 at several training budgets: has each method reached its plateau?

    python experiments/step_budget.py \
        --tables=5000:experiments/results/table2_unit_scale.json,10000:experiments/results/table2_10k_steps.json \
        --methods=ours_isolated_uniform,replay_only_uniform,independent \
        --out=experiments/results/table2_step_budget

Reads Table 2 JSONs (`run_comparison.py`) that differ only in the gradient steps per
stage (each label is that number) and writes `<out>.json` / `.md` / `.png`: per method
and budget, the final Acc / BWT and the stage's new tasks' success right after each
stage (mean ± sample std over seeds), and the change of final Acc from the smallest
budget with its standard error. A method whose final Acc still rises by more than the
noise between two budgets was compared below its plateau at the smaller one. Trains
nothing; refuses tables evaluated under different protocols.
"""

import json
import math
import pathlib

import numpy as np
from absl import app, flags

_TABLES = flags.DEFINE_list("tables", None, "STEPS:path of each table JSON, any order")
_METHODS = flags.DEFINE_list("methods", None, "rows to compare (in every table)")
_OUT = flags.DEFINE_string("out", "experiments/results/table2_step_budget", "output prefix")


def _mean_std(values) -> tuple[float, float]:
    """(mean, sample std; NaN for one seed), in the units of `values`."""
    from cpd_jax.evaluation.report import sample_std

    return float(np.mean(values)), sample_std(values)


def budget_rows(tables: dict[int, dict], methods: list[str]) -> dict:
    """{method: [{steps, seeds, acc, bwt (mean, std in %), new_tasks [(mean, std) per
    stage, %], acc_change, acc_change_stderr (vs the smallest budget; None there)}]}
    from {steps per stage: Table 2 JSON}. ValueError naming a method missing from a table
    or tables under different evaluation protocols."""
    protocols = {json.dumps(t["evaluation"], sort_keys=True) for t in tables.values()}
    if len(protocols) > 1:
        raise ValueError("the tables were evaluated under different protocols: "
                         + " vs ".join(sorted(protocols)))
    rows = {}
    for method in methods:
        entries = []
        for steps in sorted(tables):
            found = [e for e in tables[steps]["methods"] if e["method"] == method]
            if not found:
                raise ValueError(f"method {method!r} is not in the {steps}-step table")
            entries.append((steps, found[0]))
        base = entries[0][1]["final_acc"]
        rows[method] = []
        for steps, entry in entries:
            acc = entry["final_acc"]
            change = float(np.mean(acc) - np.mean(base))
            stderr = math.sqrt(_mean_std(acc)[1] ** 2 / len(acc)
                               + _mean_std(base)[1] ** 2 / len(base))
            first = steps == entries[0][0]
            rows[method].append({
                "steps": steps, "seeds": entry["seeds"], "acc": _mean_std(acc),
                "bwt": _mean_std(entry["final_bwt"]),
                "new_tasks": [(100 * s["new_task_acc_mean"], 100 * s.get("new_task_acc_std",
                                                                         math.nan))
                              for s in entry["per_stage"]],
                "acc_change": None if first else change,
                "acc_change_stderr": None if first else stderr})
    return rows


def _text(mean_std) -> str:
    mean, std = mean_std
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def markdown(rows: dict, evaluation_note: str) -> str:
    lines = ["| method | steps per stage | seeds | final Acc (%) | final BWT (%) | Acc change "
             "vs fewest steps (± s.e.) | new tasks right after stages 1..5 (%) |",
             "| --- | ---: | ---: | --- | --- | --- | --- |"]
    for method, budgets in rows.items():
        for b in budgets:
            change = ("—" if b["acc_change"] is None
                      else f"{b['acc_change']:+.1f} ± {b['acc_change_stderr']:.1f}")
            new = " / ".join(f"{m:.0f}" for m, _ in b["new_tasks"])
            lines.append(f"| {method} | {b['steps']:,} | {len(b['seeds'])} | {_text(b['acc'])} "
                         f"| {_text(b['bwt'])} | {change} | {new} |")
    lines += ["", "Mean ± sample std over seeds; s.e. = standard error of the difference of "
              "two means. A change within about 2 s.e. is inside the noise.", "",
              evaluation_note]
    return "\n".join(lines) + "\n"


def plot(path: pathlib.Path, rows: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpd_jax.evaluation import report

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method, budgets in rows.items():
        steps = [b["steps"] for b in budgets]
        left.errorbar(steps, [b["acc"][0] for b in budgets],
                      yerr=[0 if math.isnan(b["acc"][1]) else b["acc"][1] for b in budgets],
                      marker="o", capsize=3, label=method)
        for b in budgets:
            right.plot(range(1, len(b["new_tasks"]) + 1), [m for m, _ in b["new_tasks"]],
                       marker="o", label=f"{method}, {b['steps']:,} steps")
    stages = max(len(b["new_tasks"]) for budgets in rows.values() for b in budgets)
    right.set_xticks(range(1, stages + 1))
    left.set_xticks(sorted({b["steps"] for budgets in rows.values() for b in budgets}))
    left.set(xlabel="gradient steps per stage", ylabel="final Acc, held-out (%)",
             title="final Acc vs training budget")
    right.set(xlabel="stage", ylabel="new tasks right after the stage (%)",
              title="plasticity per stage")
    left.legend(fontsize=7)
    right.legend(fontsize=6)
    report.save_figure(fig, path)


def main(argv):
    del argv
    from cpd_jax.evaluation import report

    if not _TABLES.value or not _METHODS.value:
        raise app.UsageError("--tables and --methods are required")
    tables = {}
    for item in _TABLES.value:
        steps, _, path = item.partition(":")
        if not steps.isdigit() or not path:
            raise app.UsageError(f"--tables entry {item!r} is not STEPS:path")
        tables[int(steps)] = json.loads(pathlib.Path(path).read_text())
    try:
        rows = budget_rows(tables, _METHODS.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    evaluation = next(iter(tables.values()))["evaluation"]
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"evaluation": evaluation, "tables": {str(s): p for s, p in
                                              (i.split(":", 1) for i in _TABLES.value)},
         "rows": rows}, indent=2))
    text = markdown(rows, report.evaluation_note(evaluation))
    out.with_suffix(".md").write_text(text)
    plot(out.with_suffix(".png"), rows)
    print(text)


if __name__ == "__main__":
    app.run(main)
