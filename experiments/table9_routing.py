"""Table 9 at CPU size: which expert each task's tokens go to, with and without the
load-balancing loss (Eq. 2), after joint distillation of MT10 (one stage of the
continual loop, so the run writes its routing statistics).

    python experiments/table9_routing.py --workdir=runs/table9 --seeds=0 \
        --out=experiments/results/table9_routing

Output `<out>.json` / `<out>.md`: per setting, per MoE layer, each task's share of tokens
per expert (held-out teacher windows), the experts' overall load, its squared
coefficient of variation (0 = perfectly balanced), the mean per-task routing entropy
(low = tasks specialise), and held-out success; the per-layer heatmaps are copied
beside it.
"""

import json
import pathlib
import shutil

import numpy as np
from absl import app, flags

import common

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/table9", "where runs go")
_OUT = flags.DEFINE_string("out", "experiments/results/table9_routing", "output prefix")
_SEEDS = flags.DEFINE_list("seeds", "0", "seeds")
_STEPS = flags.DEFINE_integer("steps", 10000, "gradient steps")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for every run")

SETTINGS = {
    "with_aux": [],
    "without_aux": ["--config.distill.aux_coef_start=0.0", "--config.distill.aux_coef_min=0.0"],
}


def routing_summary(fractions: np.ndarray) -> dict:
    """fractions float[layers, tasks, experts] -> balance and specialisation per layer."""
    load = fractions.mean(1)  # tasks weigh equally
    entropy = -np.sum(np.where(fractions > 0, fractions * np.log(fractions + 1e-12), 0.0), -1)
    return {"load": load.tolist(),
            "load_cv2": (load.var(-1) / load.mean(-1) ** 2).tolist(),
            "task_entropy_nats": entropy.mean(-1).tolist(),
            "max_entropy_nats": float(np.log(fractions.shape[-1]))}


def main(argv):
    del argv
    from cpd_jax.envs import MT10_TASKS
    from cpd_jax.evaluation import report

    root, out = pathlib.Path(_WORKDIR.value), pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = "--config.tasks=(" + ",".join(f"'{t}'" for t in MT10_TASKS) + ",)"
    table, lines = {}, []
    for name, extra in SETTINGS.items():
        per_seed = []
        for s in _SEEDS.value:
            workdir = root / name / f"seed{s}"
            r = common.run_main(_CONFIG.value, workdir, [
                "--config.method=ours", tasks, "--config.continual.stage_sizes=(10,)",
                f"--config.seed={s}", f"--config.distill.max_steps={_STEPS.value}",
                f"--config.data.dir={root / 'data'}", *extra, *_OVERRIDES.value])
            routing = json.loads((workdir / "routing.json").read_text())
            fractions = np.asarray(routing["fractions"])
            per_seed.append({"seed": int(s), "success": r["summary"][0]["Acc"],
                             "tasks": routing["tasks"], "fractions": fractions.tolist(),
                             **routing_summary(fractions)})
            if s == _SEEDS.value[0]:
                shutil.copy(workdir / "routing_all_layers.png",
                            out.parent / f"{out.name}_{name}.png")
        table[name] = per_seed
        first = per_seed[0]
        success = np.array([p["success"] for p in per_seed])
        cv2 = np.array([p["load_cv2"] for p in per_seed])  # [seeds, layers]
        entropy = np.array([p["task_entropy_nats"] for p in per_seed])
        lines += [f"## {name}", "",
                  f"held-out success "
                  f"{report.mean_std(success.mean(), report.sample_std(success))}% "
                  f"({len(success)} seeds, ± = sample std over seeds); per layer, mean over "
                  f"seeds: "
                  f"load CV² {np.round(cv2.mean(0), 3).tolist()}, mean task routing entropy "
                  f"{np.round(entropy.mean(0), 2).tolist()} nats (uniform = "
                  f"{first['max_entropy_nats']:.2f})", ""]
        for layer, frac in enumerate(np.asarray(first["fractions"])):
            header = ["task"] + [f"e{e}" for e in range(frac.shape[1])]
            lines += [f"layer {layer} (seed {first['seed']}), share of each task's tokens:", "",
                      "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join([t] + [f"{v:.2f}" for v in row]) + " |"
                      for t, row in zip(first["tasks"], frac)]
            lines.append("")
    evaluation = json.loads((root / "with_aux" / f"seed{_SEEDS.value[0]}" /
                             "results.json").read_text())["evaluation"]
    lines.append(report.evaluation_note(evaluation))
    out.with_suffix(".json").write_text(json.dumps({"evaluation": evaluation,
                                                    "settings": table}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
