"""What a PPO teachers job shows: each teacher's learning curve (PNG) and the success
table over every teacher in a teachers dir (paper Table 3 style)."""

import json
import os

import numpy as np

from cpd_jax.teachers.ppo_teacher import METADATA_FILE


def plot_curve(path: str, task: str, curve: dict) -> None:
    """Success and return (eval and train) against env steps, written to `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = np.asarray(curve["env_steps"])
    axes[0].plot(steps, curve["eval_success"], label="eval (deterministic)")
    axes[0].plot(steps, curve["train_success"], label="train (stochastic)")
    axes[0].set_ylabel("success rate")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend()
    axes[1].plot(steps, curve["eval_return"], label="eval")
    axes[1].plot(steps, curve["train_return"], label="train")
    axes[1].set_ylabel("episode return")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("env steps")
    fig.suptitle(task)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_success_table(teachers_dir: str) -> str:
    """`success_table(teachers_dir)`, written to `<teachers_dir>/success_table.md` (whole,
    atomically) and returned."""
    text = success_table(teachers_dir)
    path = os.path.join(teachers_dir, "success_table.md")
    with open(f"{path}.{os.getpid()}.tmp", "w") as f:  # jobs sharing the dir may race:
        f.write(text)  # each replaces the file whole, never half-written
    os.replace(f"{path}.{os.getpid()}.tmp", path)
    return text


def success_table(teachers_dir: str) -> str:
    """Markdown table (paper Table 3 style) over every exported teacher in the dir."""
    rows = []
    for task in sorted(os.listdir(teachers_dir)):
        meta_path = os.path.join(teachers_dir, task, METADATA_FILE)
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                rows.append(json.load(f))
    lines = ["| task | final success | best success | env steps | early-stopped |",
             "| --- | --- | --- | --- | --- |"]
    for m in rows:
        lines.append(f"| {m['task']} | {m['final_eval_success']:.3f} | "
                     f"{m['best_eval_success']:.3f} | {m['env_steps']:,} | "
                     f"{'yes' if m['early_stopped'] else 'no'} |")
    if rows:
        mean = np.mean([m["final_eval_success"] for m in rows])
        lines.append(f"| **mean** | **{mean:.3f}** | | | |")
    return "\n".join(lines) + "\n"
