"""Which expert gets which task's tokens (paper Table 9), and task-embedding PCA (Fig. 3).

The student returns `aux['expert_index']` int32[num_blocks, B*L, k] with tokens
flattened batch-major (token b*L + l is step l of sequence b); `token_task_ids` builds
the matching per-token task ids. Fractions count routing choices: with top-k every
token contributes k choices, so each layer's fractions sum to 1 over experts.

Plots use matplotlib's Agg backend (no display), are written into a given directory,
and the functions return the paths they wrote.
"""

import json
import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from cpd_jax.evaluation import report


def token_task_ids(task_ids, seq_len: int) -> np.ndarray:
    """int[B] (task of each sequence) -> int[B * seq_len], the student's token order."""
    return np.repeat(np.asarray(task_ids), seq_len)


def expert_fractions(expert_index, num_experts: int, token_mask=None) -> np.ndarray:
    """float64[num_blocks, E]: fraction of (valid) routing choices each expert receives,
    per layer. expert_index int[num_blocks, N, k]; token_mask bool[N] or None."""
    idx = np.asarray(expert_index)
    blocks, n, _ = idx.shape
    mask = np.ones(n, bool) if token_mask is None else np.asarray(token_mask, bool)
    out = np.zeros((blocks, num_experts))
    for b in range(blocks):
        counts = np.bincount(idx[b][mask].reshape(-1), minlength=num_experts)
        out[b] = counts / max(counts.sum(), 1)
    return out


def per_task_fractions(expert_index, token_tasks, num_experts: int,
                       tasks: Sequence[int] | None = None, token_mask=None):
    """Per layer and task, the fraction of that task's routing choices per expert.

    expert_index int[num_blocks, N, k]; token_tasks int[N] (`token_task_ids`); tasks:
    the task ids to report (default: those present, sorted). Returns
    (tasks int[T], fractions float64[num_blocks, T, E]); rows of a task without valid
    tokens are zeros.
    """
    token_tasks = np.asarray(token_tasks)
    n = token_tasks.shape[0]
    mask = np.ones(n, bool) if token_mask is None else np.asarray(token_mask, bool)
    tasks = np.unique(token_tasks[mask]) if tasks is None else np.asarray(tasks)
    idx = np.asarray(expert_index)
    out = np.zeros((idx.shape[0], len(tasks), num_experts))
    for t, task in enumerate(tasks):
        out[:, t] = expert_fractions(idx, num_experts, mask & (token_tasks == task))
    return tasks, out


def expert_birth_stages(experts_after_stage: Sequence[int]) -> np.ndarray:
    """int[E]: the (0-based) stage that created each expert, from the expert count per
    MoE layer after each finished stage (e.g. [4, 5, 6] -> [0, 0, 0, 0, 1, 2])."""
    counts = np.asarray(experts_after_stage, np.int64)
    return np.repeat(np.arange(len(counts)), np.diff(counts, prepend=0))


def stage_routing_shares(fractions, task_stage, birth_stage, stage: int) -> dict:
    """How the routing after `stage` (0-based) splits tasks over old and new experts.

    fractions float[num_blocks, T, E] (`per_task_fractions`); task_stage int[T]: the stage
    that introduced each task; birth_stage int[E] (`expert_birth_stages`). Returns
    {"new_tasks_to_new_experts": the share of the routing choices of this stage's tasks
     that go to experts born in this stage (NaN at stage 0, where every expert is new),
     "old_tasks_to_later_experts": the share of earlier tasks' choices that go to experts
     born after the task's own stage (NaN without earlier tasks)},
    each a mean over layers and tasks.
    """
    frac = np.asarray(fractions, np.float64)
    task_stage, birth = np.asarray(task_stage), np.asarray(birth_stage)
    new = np.flatnonzero(task_stage == stage)
    old = np.flatnonzero(task_stage < stage)
    to_new = (float(np.mean(frac[:, new][..., birth == stage].sum(-1)))
              if stage > 0 and new.size else float("nan"))
    moved = [frac[:, j][:, birth > task_stage[j]].sum(-1).mean() for j in old]
    return {"new_tasks_to_new_experts": to_new,
            "old_tasks_to_later_experts": float(np.mean(moved)) if moved else float("nan")}


def write_fractions_json(path: str, tasks, fractions, task_names=None) -> str:
    """Writes {"tasks": [...], "fractions": [layer][task][expert]}; returns path."""
    names = [str(t) for t in tasks] if task_names is None else list(task_names)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"tasks": names, "fractions": np.asarray(fractions).tolist()}, f)
    return path


def plot_routing_heatmaps(fractions, task_names: Sequence[str], out_dir: str,
                          prefix: str = "routing", annotate: bool = True) -> list[str]:
    """One heatmap per layer (rows: tasks, columns: experts, cell: fraction of the task's
    routing choices), like the paper's Table 9, plus one figure with all layers side by
    side. fractions float[num_blocks, T, E]. Returns the written PNG paths."""
    fractions = np.asarray(fractions)
    blocks, num_tasks, num_experts = fractions.shape
    os.makedirs(out_dir, exist_ok=True)

    def draw(ax, frac, title, names=True):
        im = ax.imshow(frac, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(num_experts))
        ax.set_yticks(range(num_tasks))
        ax.set_yticklabels(task_names if names else [], fontsize=7)
        ax.set_xlabel("expert")
        ax.set_title(title)
        if annotate and num_tasks * num_experts <= 400:  # text stays legible
            for t in range(num_tasks):
                for e in range(num_experts):
                    ax.text(e, t, f"{frac[t, e]:.2f}", ha="center", va="center", fontsize=5,
                            color="w" if frac[t, e] < 0.5 else "k")
        return im

    paths = []
    size = (1.0 + 0.5 * num_experts, 1.0 + 0.3 * num_tasks)
    for b in range(blocks):
        fig, ax = plt.subplots(figsize=size)
        fig.colorbar(draw(ax, fractions[b], f"layer {b}"), ax=ax)
        path = os.path.join(out_dir, f"{prefix}_layer{b}.png")
        paths.append(str(report.save_figure(fig, path)))
    fig, axes = plt.subplots(1, blocks, figsize=(size[0] * blocks, size[1]), squeeze=False)
    for b in range(blocks):
        draw(axes[0, b], fractions[b], f"layer {b}", names=b == 0)  # labels once
    path = os.path.join(out_dir, f"{prefix}_all_layers.png")
    return paths + [str(report.save_figure(fig, path))]


def pca_2d(z) -> tuple[np.ndarray, np.ndarray]:
    """Projects float[N, D] onto its first two principal components.

    Returns (coords float64[N, 2], explained-variance ratio float64[2]).
    """
    z = np.asarray(z, np.float64)
    centered = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    var = s**2
    coords = centered @ vt[:2].T
    ratio = var[:2] / max(var.sum(), 1e-300)
    pad = 2 - coords.shape[1]  # D == 1 (or N == 1): callers always get two columns
    if pad > 0:
        coords = np.pad(coords, ((0, 0), (0, pad)))
        ratio = np.pad(ratio, (0, pad))
    return coords, ratio


def plot_task_embedding_pca(z, task_ids, task_names, out_dir: str,
                            filename: str = "task_embedding_pca.png") -> str:
    """Scatter of the 2-D PCA of task embeddings z float[N, D], coloured by task
    (the paper's Fig. 3). task_names maps a task id to its label (dict or sequence
    indexed by id) or is None (ids are the labels). Returns the PNG path."""
    coords, ratio = pca_2d(z)
    task_ids = np.asarray(task_ids)
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab20")
    for i, task in enumerate(np.unique(task_ids)):
        sel = task_ids == task
        label = str(task) if task_names is None else str(task_names[int(task)])
        # tab20 has 20 colours: past 20 tasks the marker tells tasks of one colour apart
        ax.scatter(coords[sel, 0], coords[sel, 1], s=8, color=cmap(i % 20),
                   marker="o^s"[(i // 20) % 3], label=label)
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%})")
    ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_title("task embeddings (PCA)")
    return str(report.save_figure(fig, os.path.join(out_dir, filename)))
