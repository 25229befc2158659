"""Where the replayed episodes' goals sit, per replay selector (Figure 4's runs).

For every task in a finished run's replay buffer (after the last stage, so every
stage's selection): `replay.goal_spread`, the mean distance of the replayed episodes'
goals to the centroid of all the task's teacher-episode goals over the same mean for all
those episodes. 1 = as spread as the data; > 1 = the selector favours the edges of the
task's goal space.

    python experiments/replay_goal_spread.py --workdir=runs/figure4 --seeds=0,1,2 \
        --out=experiments/results/figure4_replay_goals

Reads `<workdir>/<variant>/seed<k>/checkpoints` (the last stage's replay buffer) and the
teacher data in `<workdir>/data`; trains nothing. Output `<out>.json` / `<out>.md`.
"""

import json
import pathlib

import numpy as np
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/figure4", "figure4_replay.py's workdir")
_VARIANTS = flags.DEFINE_list("variants", "dpp_0.1,farthest_first_0.1,random_0.1",
                              "run directories under --workdir")
_SEEDS = flags.DEFINE_list("seeds", "0,1,2", "seeds")
_OUT = flags.DEFINE_string("out", "experiments/results/figure4_replay_goals", "output prefix")

def main(argv):
    del argv
    from cpd_jax import checkpointing
    from cpd_jax.data import replay as replay_lib
    from cpd_jax.data import rollouts
    from cpd_jax.envs import MT25_TASKS

    root = pathlib.Path(_WORKDIR.value)
    goals_of = lambda t: rollouts.load(root / "data", MT25_TASKS[t]).obs[:, 0, replay_lib.GOAL]
    rows = {}
    for variant in _VARIANTS.value:
        ratios = []
        for seed in _SEEDS.value:
            tree, _ = checkpointing.RunCheckpointer(
                root / variant / f"seed{seed}" / "checkpoints").restore()
            buffer = replay_lib.ReplayBuffer.from_arrays(**tree["replay"])
            ratios += replay_lib.goal_spread(buffer, goals_of).values()
        ratios = np.asarray(ratios)
        rows[variant] = {"mean": float(ratios.mean()), "std": float(ratios.std(ddof=1)),
                         "stderr": float(ratios.std(ddof=1) / np.sqrt(len(ratios))),
                         "num_task_seeds": int(len(ratios))}
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"seeds": _SEEDS.value, "rows": rows},
                                                   indent=2))
    lines = ["| replay | goal spread of the replayed episodes (1 = the data's) "
             "| (task, seed) pairs |", "| --- | --- | --- |"]
    lines += [f"| {v} | {r['mean']:.3f} ± {r['stderr']:.3f} (std {r['std']:.3f}) "
              f"| {r['num_task_seeds']} |" for v, r in rows.items()]
    lines += ["", "Mean over the tasks in the replay buffer after the last stage (every "
              f"stage's selection) and the seeds {', '.join(_SEEDS.value)}; ± standard error."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
