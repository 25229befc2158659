"""Figure 3 at CPU size: the contrastive task embeddings z of every task after the last
stage of a continual run (PCA of held-out windows), how separable they are, and how far
old tasks' z moved at each stage.

    python experiments/figure3_embedding.py --workdir=runs/figure3 \
        --out=experiments/results/figure3_embedding [--run=<workdir of a finished run>]

Without --run it first runs "ours" with task_context=contrastive (`<workdir>/run`).
Output: `<out>.png` (PCA of z of held-out teacher windows, one colour per task),
`<out>.json` / `<out>.md`: nearest-centroid task accuracy of held-out windows
(centroids from the training data's windows) and the per-stage drift of old tasks' z
(mean 1 - cos(z after, z before) over their replay windows).
"""

import json
import os
import pathlib

import numpy as np
from absl import app, flags

import common

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/figure3", "where the run goes")
_RUN = flags.DEFINE_string("run", None, "workdir of a finished contrastive continual run")
_OUT = flags.DEFINE_string("out", "experiments/results/figure3_embedding", "output prefix")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for the run")


def main(argv):
    del argv
    import jax

    from cpd_jax import evaluate_checkpoint
    from cpd_jax.data import collection
    from cpd_jax.continual.encoder import encoder_windows
    from cpd_jax.envs import MT25_TASKS
    from cpd_jax.evaluation import report, routing_stats
    from cpd_jax.student import task_embedding

    run = pathlib.Path(_RUN.value or pathlib.Path(_WORKDIR.value) / "run")
    if _RUN.value is None:
        common.run_main(_CONFIG.value, run, [
            "--config.method=ours", "--config.student.task_context=contrastive",
            f"--config.data.dir={pathlib.Path(_WORKDIR.value) / 'data'}", *_OVERRIDES.value])
    results = json.loads((run / "results.json").read_text())
    config, _, _, meta, encoder = evaluate_checkpoint.restore_student(run / "checkpoints")
    if encoder is None:
        raise app.UsageError(f"{run} has no task encoder (task_context is "
                             f"{config.student.task_context!r}, not 'contrastive')")
    tasks = results["tasks"]
    embed = jax.jit(task_embedding.embed)

    def z_of(trajectories):
        windows, ids = encoder_windows(config, trajectories)
        return np.asarray(embed(encoder, *windows)), ids

    train = [collection.collect_or_load(config, t, collection.data_dir(config, run)) for t in tasks]
    heldout = [collection.collect_or_load(config, t, collection.heldout_data_dir(config, run),
                                        collection.heldout_variations(config)) for t in tasks]
    z_train, y_train = z_of(train)
    z_test, y_test = z_of(heldout)
    accuracy = task_embedding.nearest_centroid_accuracy(z_train, y_train, z_test, y_test)
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    routing_stats.plot_task_embedding_pca(z_test, y_test, dict(enumerate(MT25_TASKS)),
                                          str(out.parent), filename=out.name + ".png")
    drift = [{"stage": s["stage"] + 1, "drift": s["encoder_drift"]} for s in results["stages"]]
    summary = {"run": os.path.relpath(run),  # no machine path in a results file
               "stages_done": meta["stages_done"],
               "nearest_centroid_accuracy": accuracy, "drift_per_stage": drift,
               "evaluation": results["evaluation"]}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    lines = [f"Task embeddings after stage {meta['stages_done']} ({len(tasks)} tasks): "
             f"nearest-centroid task accuracy of held-out windows **{100 * accuracy:.1f}%**.",
             "", "| stage | old tasks' z drift, mean (max) of 1 - cos |", "| --- | --- |"]
    for d in drift[1:]:
        v = list(d["drift"].values())
        lines.append(f"| {d['stage']} | {np.mean(v):.4f} ({np.max(v):.4f}) |" if v else
                     f"| {d['stage']} | — |")
    lines += ["", report.evaluation_note(results["evaluation"])]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
