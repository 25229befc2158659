"""Result files of the continual protocol: accuracy matrices and the paper's Table 2.

Every writer returns {kind: path} of what it wrote. Numbers in tables are percentages
(the paper's convention); JSON files keep fractions in [0, 1].
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


def _nan_to_none(x):
    """JSON has no NaN: missing values become null."""
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{PERCENT * x:.1f}"


def write_accuracy_matrix(directory, R, tasks: Sequence[str], stage_of_task,
                          name: str = "accuracy_matrix") -> dict:
    """`name`.json / .md / .png: R float[S, T] (NaN = not evaluated) with per-stage metrics.

    The markdown has one row per stage (R in percent, then Acc / BWT / max forgetting).
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    R = np.asarray(R, np.float64)
    sot = np.asarray(stage_of_task)
    if len(tasks) != R.shape[1]:
        raise ValueError(f"{len(tasks)} task names for {R.shape[1]} columns of R")
    summary = metrics.summarize(R, sot)
    paths = {k: directory / f"{name}.{k}" for k in ("json", "md", "png")}

    paths["json"].write_text(json.dumps(_nan_to_none({
        "tasks": list(tasks), "stage_of_task": sot.tolist(), "R": R.tolist(),
        "summary": summary}), indent=2))

    header = ["stage"] + [f"{t} (s{int(k) + 1})" for t, k in zip(tasks, sot)] + [
        "Acc", "BWT", "max forgetting"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for k, row in enumerate(R):
        s = summary[k]
        cells = [str(k + 1)] + [_pct(v) for v in row] + [
            _pct(s["Acc"]), _pct(s["BWT"]), _pct(s["MaxForgetting"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Success rates in percent; stages numbered from 1 as in the paper; "
              "(sN) = the stage that introduced the task; — = not evaluated / undefined."]
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
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=PLOT_DPI)
    plt.close(fig)
    return paths


def _std(values: np.ndarray) -> float:
    """Sample std over seeds (ddof=1); 0 for a single seed."""
    return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


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
                v = np.array([r[key] for r in reached], np.float64)
                row[f"{key}_mean"] = float(np.mean(v)) if np.all(np.isfinite(v)) else float("nan")
                row[f"{key}_std"] = _std(v) if np.all(np.isfinite(v)) else float("nan")
            rows.append(row)
        out[method] = rows
    return out


def _mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{PERCENT * mean:.1f} ± {PERCENT * std:.1f}"


def write_table2(directory, results: Mapping[str, Sequence[Sequence[dict]]],
                 name: str = "table2") -> dict:
    """Paper Table 2 layout: one row per method, per stage "Acc / BWT" (mean ± std, %).

    Writes `name`.md, `name`.json (the aggregated numbers, fractions) and `name`.png (Acc and
    BWT per stage per method, error bars = std over seeds).
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results)
    num_stages = max(len(rows) for rows in agg.values())
    paths = {k: directory / f"{name}.{k}" for k in ("json", "md", "png")}

    paths["json"].write_text(json.dumps(_nan_to_none(
        {"per_method": agg, "per_seed": {m: list(s) for m, s in results.items()}}), indent=2))

    header = ["method", "seeds"] + [f"stage {k + 1} Acc / BWT" for k in range(num_stages)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method, rows in agg.items():
        cells = [method, str(rows[0]["num_seeds"])]
        for k in range(num_stages):
            if k >= len(rows):
                cells.append("")
                continue
            r = rows[k]
            cells.append(f"{_mean_std(r['Acc_mean'], r['Acc_std'])} / "
                         f"{_mean_std(r['BWT_mean'], r['BWT_std'])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Acc = mean success over tasks seen so far; BWT = mean over earlier tasks of "
              "(success now − success after its own stage); percent, mean ± sample std over "
              "seeds; — = undefined (no earlier task)."]
    paths["md"].write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, rows in agg.items():
        stages = np.array([r["stage"] + 1 for r in rows])
        for ax, key in zip(axes, ("Acc", "BWT")):
            mean = PERCENT * np.array([r[f"{key}_mean"] for r in rows])
            std = PERCENT * np.array([r[f"{key}_std"] for r in rows])
            ok = np.isfinite(mean)
            ax.errorbar(stages[ok], mean[ok], yerr=std[ok], marker="o", capsize=3, label=method)
    for ax, key in zip(axes, ("Acc", "BWT")):
        ax.set_xlabel("stage")
        ax.set_ylabel(f"{key} (%)")
        ax.set_xticks(range(1, num_stages + 1))
        ax.grid(alpha=0.3)
    axes[1].axhline(0.0, color="gray", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=PLOT_DPI)
    plt.close(fig)
    return paths
