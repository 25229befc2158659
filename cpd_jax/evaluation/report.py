"""Result files of the continual protocol: accuracy matrices and the paper's Table 2.

Every writer returns {kind: path} of what it wrote. Numbers in tables are percentages
(the paper's convention); JSON files keep fractions in [0, 1].

One module despite its length: every table and figure of the continual protocol
shares its conventions (percent, mean ± sample std, pooling of seeds).
"""

import json
import math
import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cpd_jax.evaluation import metrics  # noqa: E402

PERCENT = 100.0
HEATMAP_CELL_INCHES = 0.45  # figure size per matrix cell; keeps task labels readable
PLOT_DPI = 120


def nan_to_none(x):
    """JSON has no NaN: missing values become null."""
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [nan_to_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def percent_text(x) -> str:
    """A fraction as a percent with one decimal; "—" for None or a non-finite value."""
    return "—" if x is None or not math.isfinite(x) else f"{PERCENT * x:.1f}"


def evaluation_note(evaluation: Mapping | None) -> str:
    """One markdown sentence naming the evaluation protocol (`protocol.describe`)."""
    if not evaluation:
        return ""
    v = evaluation["variations"]
    return (f"Evaluation protocol `{evaluation['protocol']}`: {evaluation['description']}; "
            f"{evaluation['episodes_per_task']} episodes per task (variations {v[0]}..{v[-1]}); "
            f"success = {evaluation['success']}; training goals {evaluation['training_goals']}.")


def write_accuracy_matrix(directory, R, tasks: Sequence[str], stage_of_task,
                          name: str = "accuracy_matrix", evaluation: Mapping | None = None
                          ) -> dict:
    """`name`.json / .md / .png: R float[S, T] (NaN = not evaluated) with per-stage metrics.

    The markdown has one row per stage (R in percent, then Acc / BWT / max forgetting).
    evaluation: the protocol that produced R (`protocol.describe`), written into both files.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    R = np.asarray(R, np.float64)
    sot = np.asarray(stage_of_task)
    if len(tasks) != R.shape[1]:
        raise ValueError(f"{len(tasks)} task names for {R.shape[1]} columns of R")
    summary = metrics.summarize(R, sot)
    paths = {k: directory / f"{name}.{k}" for k in ("json", "md", "png")}

    paths["json"].write_text(json.dumps(nan_to_none({
        "tasks": list(tasks), "stage_of_task": sot.tolist(), "R": R.tolist(),
        "summary": summary, "continual_world": metrics.continual_world(R, sot),
        "evaluation": evaluation}), indent=2))

    header = ["stage"] + [f"{t} (s{int(k) + 1})" for t, k in zip(tasks, sot)] + [
        "Acc", "BWT", "max forgetting"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for k, row in enumerate(R):
        s = summary[k]
        cells = [str(k + 1)] + [percent_text(v) for v in row] + [
            percent_text(s["Acc"]), percent_text(s["BWT"]), percent_text(s["MaxForgetting"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Success rates in percent; stages numbered from 1 as in the paper; "
              "(sN) = the stage that introduced the task; — = not evaluated / undefined.",
              "", evaluation_note(evaluation)]
    cw = metrics.continual_world(R, sot)
    lines += ["", f"Continual World metrics after stage {R.shape[0]} (Wołczyk et al. 2021): "
              f"average performance {percent_text(cw['average_performance'])}, forgetting "
              f"{percent_text(cw['forgetting'])} (mean over all seen tasks of own-stage − final "
              "success); forward transfer needs a reference learner (Table 2)."]
    paths["md"].write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(max(4.0, HEATMAP_CELL_INCHES * R.shape[1] + 2),
                                    max(2.5, HEATMAP_CELL_INCHES * R.shape[0] + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(R), vmin=0.0, vmax=1.0, cmap="viridis",
                      aspect="auto")
    ax.set_xticks(range(R.shape[1]), list(tasks), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(R.shape[0]), [f"after stage {k + 1}" for k in range(R.shape[0])])
    for (i, j), v in np.ndenumerate(R):
        if math.isfinite(v):
            ax.text(j, i, f"{PERCENT * v:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if v < 0.5 else "black")
    fig.colorbar(image, ax=ax, label="success rate")
    ax.set_title("accuracy matrix R[stage, task]")
    save_figure(fig, paths["png"])
    return paths


def save_figure(fig, path) -> pathlib.Path:
    """Lays out, writes (PNG at PLOT_DPI, cropped to what is drawn: colour bars and
    legends outside the axes stay in) and closes `fig`; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI, bbox_inches="tight")
    plt.close(fig)
    return pathlib.Path(path)


def sample_std(values) -> float:
    """Sample std over seeds (ddof=1); NaN for a single seed (no spread is measured)."""
    values = np.asarray(values, np.float64)
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


def _stats(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return (float(np.mean(v)), sample_std(v)) if v.size and np.all(np.isfinite(v)) else (
        float("nan"), float("nan"))


def aggregate(results: Mapping[str, Sequence[Sequence[dict]]], keys=("Acc", "BWT")) -> dict:
    """{method: [{stage, <key>_mean, <key>_std, num_seeds} per stage]} from per-seed summaries.

    results: {method: [summary of seed 0, summary of seed 1, ...]}, each summary the list
    `metrics.summarize` returns. Seeds may have run different numbers of stages (a run in
    progress); a stage's statistics use the seeds that reached it. NaN values (BWT at
    stage 1) stay NaN.
    """
    out = {}
    for method, seeds in results.items():
        if not seeds:
            raise ValueError(f"method {method!r} has no seeds")
        num_stages = max(len(s) for s in seeds)
        rows = []
        for k in range(num_stages):
            reached = [s[k] for s in seeds if len(s) > k]
            row = {"stage": k, "num_seeds": len(reached)}
            for key in keys:
                row[f"{key}_mean"], row[f"{key}_std"] = _stats([r[key] for r in reached])
            rows.append(row)
        out[method] = rows
    return out


def mean_std(mean: float, std: float) -> str:
    """A fraction as 'mean ± std' in percent; the mean alone for one seed (std NaN)."""
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(std):  # one seed
        return f"{PERCENT * mean:.1f}"
    return f"{PERCENT * mean:.1f} ± {PERCENT * std:.1f}"


def method_entry(method: str, runs: Sequence[Mapping], ft_reference=None) -> dict:
    """One method's Table-2 entry from its per-seed `results.json` dicts (all stages done).

    Per-seed lists are in percent (`final_acc`, `final_bwt`, `teacher_recovery`,
    `avg_incremental_acc`: mean of Acc over the stages; `continual_world`: Continual
    World's metrics, `metrics.continual_world`, FT against `ft_reference`); per
    stage, mean/std over seeds of Acc, BWT and teacher recovery (fractions), and of the
    routing shares where the method grows experts.
    """
    seeds = [r["seed"] for r in runs]
    final = [r["summary"][-1] for r in runs]
    per_stage = aggregate({method: [r["summary"] for r in runs]},
                          keys=("Acc", "BWT", "teacher_recovery"))[method]
    for k, row in enumerate(per_stage):
        new_acc = [metrics.new_task_accuracy(r["R"], r["stage_of_task"], k) for r in runs
                   if "R" in r and k < len(r["R"])]
        if new_acc:
            row["new_task_acc_mean"], row["new_task_acc_std"] = _stats(new_acc)
        logs = [r["stages"][k] for r in runs if k < len(r.get("stages", []))]
        for share in ("new_tasks_to_new_experts", "old_tasks_to_later_experts"):
            values = [log["routing"][share] for log in logs if "routing" in log]
            if values:
                row[f"{share}_mean"], row[f"{share}_std"] = _stats(values)
        phases = {p["phase"] for log in logs for p in log.get("phase_mse", [])}
        for phase in sorted(phases):  # mean over tasks, then mean/std over seeds
            values = [np.mean(list(p["mse"].values())) for log in logs
                      for p in log["phase_mse"] if p["phase"] == phase]
            row[f"mse_phase{phase}_mean"], row[f"mse_phase{phase}_std"] = _stats(values)
    return {"method": method, "seeds": seeds,
            "final_acc": [PERCENT * f["Acc"] for f in final],
            "final_bwt": [PERCENT * f["BWT"] for f in final],
            "teacher_recovery": [PERCENT * f["teacher_recovery"] for f in final],
            "avg_incremental_acc": [PERCENT * metrics.average_incremental_accuracy(
                r["R"], r["stage_of_task"], len(r["R"]) - 1) for r in runs],
            "continual_world": _continual_world_percent(runs, ft_reference),
            "per_stage": per_stage,
            "wall_time_s": [r["wall_time_s"] for r in runs]}


def pooled_stats(parts: Sequence[tuple[int, float, float]]) -> tuple[float, float]:
    """(mean, sample std) of the union of groups given as (count, mean, sample std): what
    `_stats` gives on all their values at once. A group of one value has std NaN/None
    (no spread); a NaN mean anywhere gives NaN (e.g. BWT at stage 1)."""
    n = np.array([c for c, _, _ in parts], np.float64)
    m = np.array([np.nan if x is None else x for _, x, _ in parts], np.float64)
    s = np.array([0.0 if c == 1 or x is None else x for c, _, x in parts], np.float64)
    total = n.sum()
    if not np.all(np.isfinite(m)):
        return float("nan"), float("nan")
    mean = float((n * m).sum() / total)
    if total < 2:
        return mean, float("nan")
    squares = ((n - 1) * s ** 2 + n * (m - mean) ** 2).sum()
    return mean, float(np.sqrt(squares / (total - 1)))


PER_SEED_KEYS = ("seeds", "final_acc", "final_bwt", "teacher_recovery",
                 "avg_incremental_acc", "wall_time_s")


def pool_entries(earlier: Mapping, new: Mapping) -> dict:
    """One `method_entry` of the seeds of two entries of the same method (e.g. an
    earlier table's seeds 0 and a new run's seeds 1-2): per-seed lists concatenated,
    per-stage means and stds pooled exactly (`pooled_stats`). ValueError if a seed is
    in both or the entries measured different things."""
    if earlier["method"] != new["method"]:
        raise ValueError(f"pooling {earlier['method']!r} with {new['method']!r}")
    both = set(earlier["seeds"]) & set(new["seeds"])
    if both:
        raise ValueError(f"{new['method']}: seeds {sorted(both)} are in both tables")
    out = {"method": new["method"]}
    for key in PER_SEED_KEYS:
        out[key] = list(earlier[key]) + list(new[key])
    if earlier["continual_world"].keys() != new["continual_world"].keys():
        raise ValueError(f"{new['method']}: Continual World metrics differ between tables")
    out["continual_world"] = {k: list(earlier["continual_world"][k]) + list(v)
                              for k, v in new["continual_world"].items()}
    if len(earlier["per_stage"]) != len(new["per_stage"]):
        raise ValueError(f"{new['method']}: {len(earlier['per_stage'])} stages in one table, "
                         f"{len(new['per_stage'])} in the other")
    out["per_stage"] = []
    for a, b in zip(earlier["per_stage"], new["per_stage"]):
        names = {k[:-len("_mean")] for k in a if k.endswith("_mean")}
        if names != {k[:-len("_mean")] for k in b if k.endswith("_mean")}:
            raise ValueError(f"{new['method']}: stage {a['stage'] + 1} measured other "
                             "quantities in the two tables")
        row = {"stage": a["stage"], "num_seeds": a["num_seeds"] + b["num_seeds"]}
        for name in sorted(names):
            row[f"{name}_mean"], row[f"{name}_std"] = pooled_stats(
                [(r["num_seeds"], r[f"{name}_mean"], r[f"{name}_std"]) for r in (a, b)])
        out["per_stage"].append(row)
    return out


def entry_from_json(entry: Mapping) -> dict:
    """A `method_entry` as read back from a table's JSON (NaN written as null) with its
    NaNs back, so it pools and renders like a fresh one."""
    nan = lambda x: float("nan") if x is None else x
    return {**entry, "per_stage": [{k: nan(v) for k, v in row.items()}
                                   for row in entry["per_stage"]]}


def _continual_world_percent(runs: Sequence[Mapping], reference) -> dict:
    """{metric: per-seed list}: `metrics.continual_world` of each run, in percent."""
    values = [metrics.continual_world(r["R"], r["stage_of_task"], reference) for r in runs]
    return {k: [PERCENT * v[k] for v in values] for k in values[0]}


def independent_reference(runs: Sequence[Mapping]) -> np.ndarray:
    """float[T]: each task's success right after its own stage, mean over the seeds of a
    reference learner (the "independent" row: a fresh student per stage) — the reference
    of Continual World's forward transfer."""
    own = []
    for r in runs:
        R = np.asarray(r["R"], np.float64)
        own.append(R[r["stage_of_task"], np.arange(R.shape[1])])
    return np.mean(own, axis=0)


def write_table2(directory, runs: Mapping[str, Sequence[Mapping]], paper_final=None,
                 name: str = "table2", commands: Mapping | None = None,
                 ft_reference=None, earlier: Mapping[str, Mapping] | None = None,
                 evaluation: Mapping | None = None) -> dict:
    """Paper Table 2 layout: one row per method, per stage "Acc / BWT" (mean ± std over
    seeds, %), then the paper's final Acc / BWT beside ours.

    runs: {method: [results.json dict of each seed]} (`continual.results.write_continual_results`).
    paper_final: {method: (Acc, BWT or None)} in percent (`cpd_jax.evaluation.paper`).
    commands: what produced each row (e.g. {method: [config and flags of each seed]}),
    stored as given in the JSON so that a table says how to rerun it.
    ft_reference: float[T] per-task success of a reference learner for Continual World's
    forward transfer (`independent_reference`); without it FT is left out.
    earlier: {method: entry} of an earlier table (its JSON's "methods"): pooled with this
    call's runs of the method (`pool_entries`), or a row of its own where `runs` has
    none (`runs` may map a method to [] to place it); evaluation: the protocol of the
    runs (default: the first run's).
    Writes `name`.md, `name`.json ({"evaluation", "methods": [method_entry, ...]}) and
    `name`.png (Acc and BWT per stage per method, error bars = std over seeds).
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paper_final = paper_final or {}
    earlier = {m: entry_from_json(e) for m, e in (earlier or {}).items()}
    entries = []
    for m in list(runs) + [m for m in earlier if m not in runs]:
        new = method_entry(m, runs[m], ft_reference) if runs.get(m) else None
        entries.append(pool_entries(earlier[m], new) if new and m in earlier else
                       new or earlier[m])
    if evaluation is None:
        evaluation = next((rs[0].get("evaluation") for rs in runs.values() if rs), None)
    num_stages = max(len(e["per_stage"]) for e in entries)
    paths = {k: directory / f"{name}.{k}" for k in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(nan_to_none(
        {"evaluation": evaluation, "methods": entries,
         "paper_final": {e["method"]: paper_final.get(e["method"]) for e in entries},
         "commands": dict(commands or {}),
         "ft_reference": None if ft_reference is None else list(map(float, ft_reference))}),
        indent=2))

    header = (["method", "seeds"] + [f"stage {k + 1} Acc / BWT" for k in range(num_stages)]
              + ["teacher recovery", "avg incremental Acc", "paper final Acc / BWT"])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for e in entries:
        cells = [e["method"], str(len(e["seeds"]))]
        for k in range(num_stages):
            r = e["per_stage"][k]
            cells.append(f"{mean_std(r['Acc_mean'], r['Acc_std'])} / "
                         f"{mean_std(r['BWT_mean'], r['BWT_std'])}")
        last = e["per_stage"][-1]
        cells.append(mean_std(last["teacher_recovery_mean"], last["teacher_recovery_std"]))
        incremental = np.asarray(e["avg_incremental_acc"]) / PERCENT
        cells.append(mean_std(float(incremental.mean()), sample_std(incremental)))
        acc, bwt = paper_final.get(e["method"]) or (None, None)
        cells.append("—" if acc is None else
                     f"{acc:.1f} / {'—' if bwt is None else f'{bwt:+.1f}'}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Acc = mean success over tasks seen so far; BWT = mean over earlier tasks of "
              "(success now − success after its own stage); teacher recovery = student / "
              "teacher success after the last stage; avg incremental Acc = mean of Acc "
              "over the stages (counts forgetting that later replay repaired); percent, "
              "mean ± sample std over seeds; "
              "— = undefined or not given.", "", evaluation_note(evaluation)]
    lines += ["", "Per stage: new tasks = the stage's new tasks' success right after it "
              "(plasticity; Acc mixes it with forgetting); new → new = share of the stage's "
              "new tasks' tokens routed to the experts born in that stage; old → later = "
              "share of earlier tasks' tokens routed to experts born after their own stage "
              "(held-out teacher windows, mean over MoE layers); MSE p1 / p2 = held-out "
              "teacher-action MSE at the end of phase 1 / 2 "
              "(mean over the seen tasks; x1000). Means over seeds.", "",
              "| method | " + " | ".join(f"stage {k + 1}" for k in range(num_stages)) + " |",
              "|" + " --- |" * (num_stages + 1)]
    for e in entries:
        cells = [e["method"]]
        for row in e["per_stage"]:
            parts = []
            if "new_task_acc_mean" in row:
                parts.append(f"new tasks {percent_text(row['new_task_acc_mean'])}")
            if "new_tasks_to_new_experts_mean" in row:
                parts.append(f"new → new {percent_text(row['new_tasks_to_new_experts_mean'])}, "
                             f"old → later {percent_text(row['old_tasks_to_later_experts_mean'])}")
            mse = [f"{1000 * row[f'mse_phase{p}_mean']:.1f}" for p in (1, 2)
                   if math.isfinite(row.get(f"mse_phase{p}_mean", float("nan")))]
            if mse:
                parts.append("MSE " + " / ".join(mse))
            cells.append("; ".join(parts) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_continual_world_table(entries)]
    paths["md"].write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for e in entries:
        rows = e["per_stage"]
        stages = np.array([r["stage"] + 1 for r in rows])
        for ax, key in zip(axes, ("Acc", "BWT")):
            mean = PERCENT * np.array([r[f"{key}_mean"] for r in rows])
            std = PERCENT * np.array([r[f"{key}_std"] for r in rows])
            ok = np.isfinite(mean)
            ax.errorbar(stages[ok], mean[ok], yerr=np.nan_to_num(std[ok]), marker="o",
                        capsize=3, label=e["method"])  # one seed: no error bar
    for ax, key in zip(axes, ("Acc", "BWT")):
        ax.set_xlabel("stage")
        ax.set_ylabel(f"{key} (%)")
        ax.set_xticks(range(1, num_stages + 1))
        ax.grid(alpha=0.3)
    axes[1].axhline(0.0, color="gray", lw=0.8)
    axes[0].legend(fontsize=8)
    save_figure(fig, paths["png"])
    return paths


def _continual_world_table(entries) -> list[str]:
    """Markdown lines: Continual World's final metrics per method (mean ± std, %)."""
    lines = ["Continual World metrics after the last stage (Wołczyk et al. 2021; "
             "`metrics.continual_world`): average performance (= final Acc), forgetting "
             "(own-stage − final success, mean over all tasks, the last stage's count 0; "
             "positive = forgotten), forward transfer (own-stage success − the independent "
             "row's, mean over all tasks: CW's numerator, end-of-stage success in place of "
             "the training-curve AUC, unnormalised because 1 − ref is ~0 at these "
             "successes). Percent, mean ± std over seeds.", "",
             "| method | average performance | forgetting | forward transfer |",
             "| --- | --- | --- | --- |"]
    for e in entries:
        cw = e["continual_world"]
        cells = [e["method"]]
        for key in ("average_performance", "forgetting", "forward_transfer"):
            v = np.asarray(cw[key], np.float64) / PERCENT
            cells.append(mean_std(float(v.mean()), sample_std(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_learning_curves(path, curves: Mapping[str, Sequence[dict]],
                         teacher_success: float | None = None, xlabel="gradient steps",
                         x_key: str = "step") -> pathlib.Path:
    """Mean held-out success vs `x_key` for each labelled curve (points are dicts with
    `x_key`, "mean_success" and optionally "std"), with the teachers' level dashed."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        x = [p[x_key] for p in points]
        y = [PERCENT * p["mean_success"] for p in points]
        err = [PERCENT * p.get("std", 0.0) for p in points]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    if teacher_success is not None:
        ax.axhline(PERCENT * teacher_success, color="gray", ls="--", lw=1, label="teachers")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
