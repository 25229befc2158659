"""Runs the continual comparison (methods x seeds) for a config and rebuilds Table 2.

    python experiments/run_comparison.py --config=cpd_jax/configs/mt25_5stage_cpu.py \
        --workdir=runs/table2 --methods=ours,finetune,replay_only,expert_only,independent \
        --seeds=0,1 [--parallel=2] [--override=--config.distill.max_steps=1000]

Each (method, seed) is its own `python -m cpd_jax.main` run in
`<workdir>/<method>/seed<k>` (so each resumes from its own checkpoints if killed),
sharing one teacher-data directory `<workdir>/data`. Then the per-run results are
gathered into `<workdir>/table2.{md,json,png}`; with `--earlier=<table.json>` the seeds
of an earlier table are pooled in (more seeds for a committed table without its runs). The ablations (no_te, no_shared_frozen,
no_freeze_gating) and ours_isolated are rows too (`VARIANTS`).
"""

import json
import pathlib
import time
from concurrent import futures

from absl import app, flags, logging

import common

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/table2", "output directory")
_METHODS = flags.DEFINE_list("methods", "ours,finetune,replay_only,expert_only,independent",
                             "methods (see cpd_jax/continual/methods.py) and ablations")
_SEEDS = flags.DEFINE_list("seeds", "0,1", "seeds")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "runs at a time")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for every run")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False,
                                 "run nothing: rebuild the table from finished runs")
_EARLIER = flags.DEFINE_string(
    "earlier", None, "an earlier table's JSON (e.g. experiments/results/table2.json): its "
    "seeds of --methods are pooled with this workdir's runs, which must have been made "
    "with the same flags and evaluation protocol")

ISOLATED = "cpd_jax/configs/mt25_5stage_cpu_isolated.py"
UNIFORM = "--config.distill.sampling=episode"  # the paper's draws: uniform over episodes
TOP2 = "--config.student.top_k=2"  # each token to its 2 best experts (the top-k ablation)
TRAINABLE_BACKBONE = "--config.continual.backbone=trainable"  # shared layers train every stage
FILM = "--config.student.task_film=True"  # per-task FiLM of every layer norm's output
# Rows of the table beyond the methods: name -> (method, config file or None for
# --config, config overrides). The paper's three ablations are "ours" with one flag
# changed; ours_isolated is ours with the extensions of mt25_5stage_cpu_isolated.py;
# "_uniform" rows draw windows uniformly over stage data + replay as the paper does,
# instead of the CPU config's task-balanced draws; "_top2" rows route each token to its
# two best experts (Switch routing is top-1), every method alike so that they compare;
# "_trainable_backbone" trains the shared layers at every stage (as no_shared_frozen);
# "_feature_anchor" does too, and keeps old tasks' MoE inputs where they were; "_film"
# rows give the student a per-task FiLM (student.task_film), every method alike.
VARIANTS = {
    "no_te": ("ours", None, ["--config.student.task_context=none"]),
    "no_shared_frozen": ("ours", None, [TRAINABLE_BACKBONE]),
    "no_freeze_gating": ("ours", None, ["--config.continual.freeze_gating=False"]),
    "ours_isolated": ("ours", ISOLATED, []),
    "ours_uniform": ("ours", None, [UNIFORM]),
    "ours_isolated_uniform": ("ours", ISOLATED, [UNIFORM]),
    "replay_only_uniform": ("replay_only", None, [UNIFORM]),
    "ours_top2": ("ours", None, [TOP2]),
    "ours_isolated_uniform_top2": ("ours", ISOLATED, [UNIFORM, TOP2]),
    "replay_only_top2": ("replay_only", None, [TOP2]),
    "independent_top2": ("independent", None, [TOP2]),
    "ours_isolated_trainable_backbone": ("ours", ISOLATED, [TRAINABLE_BACKBONE]),
    "ours_isolated_uniform_trainable_backbone": (
        "ours", ISOLATED, [UNIFORM, TRAINABLE_BACKBONE]),
    "ours_isolated_uniform_feature_anchor": (
        "ours", ISOLATED, [UNIFORM, TRAINABLE_BACKBONE,
                           "--config.continual.feature_anchor_coef=1.0"]),
    "ours_isolated_uniform_film": ("ours", ISOLATED, [UNIFORM, FILM]),
    "replay_only_uniform_film": ("replay_only", None, [UNIFORM, FILM]),
    "independent_film": ("independent", None, [FILM]),
}


def run_one(name: str, seed: int, root: pathlib.Path) -> dict:
    method, config, extra = VARIANTS.get(name, (name, None, []))
    return common.run_main(config or _CONFIG.value, root / name / f"seed{seed}", [
        f"--config.method={method}", f"--config.seed={seed}",
        f"--config.data.dir={root / 'data'}", *extra, *_OVERRIDES.value])


def finished_results(root: pathlib.Path) -> dict:
    """{method: [results.json of each seed]} of every run that finished all stages."""
    results = {}
    for name in _METHODS.value:
        for seed in _SEEDS.value:
            path = root / name / f"seed{seed}" / "results.json"
            if not path.exists():
                continue
            run = json.loads(path.read_text())
            if len(run["summary"]) == len(run["R"]):  # every stage finished
                results.setdefault(name, []).append(run)
    return results


def recorded_commands(root: pathlib.Path) -> dict:
    """{method: {seed: the config and flags its run was made with, <workdir> = root}};
    runs made before commands were recorded are left out."""
    commands = {}
    for name in _METHODS.value:
        for seed in _SEEDS.value:
            path = root / name / f"seed{seed}" / common.COMMAND_FILE
            if path.exists():  # the workdir's own path is machine-specific
                text = path.read_text().replace(str(root), "<workdir>")
                commands.setdefault(name, {})[seed] = json.loads(text)
    return commands


def paper_final(name: str):
    """The paper's final (Acc, BWT) for a row: its own, or for a paper method run with the
    paper's uniform draws, that method's; None for our extensions."""
    from cpd_jax.evaluation import paper

    if name in paper.TABLE2_FINAL:
        return paper.TABLE2_FINAL[name]
    method, config, extra = VARIANTS.get(name, (name, None, []))
    return paper.TABLE2_FINAL.get(method) if config is None and extra == [UNIFORM] else None


def _without_seed(command: dict) -> dict:
    """A run's command with what differs between seeds and machines taken out."""
    return {"config": command["config"], "flags": [
        f for f in command["flags"]
        if not f.startswith(("--config.seed=", "--config.data.dir="))]}


def earlier_table(path: str, commands: dict, evaluation) -> tuple[dict, dict, list | None]:
    """({method: entry}, {method: {seed: command}}, FT reference) of the earlier table at
    `path`, for the methods of --methods. UsageError where pooling would mix different
    things: another evaluation protocol, or another command for a method."""
    table = json.loads(pathlib.Path(path).read_text())
    if evaluation is not None and table["evaluation"] != evaluation:
        raise app.UsageError(f"{path} was evaluated under another protocol than the runs "
                             f"here ({table['evaluation']} vs {evaluation}): not pooled")
    entries = {e["method"]: e for e in table["methods"] if e["method"] in _METHODS.value}
    earlier_commands = {m: {s: c for s, c in table["commands"][m].items()
                            if int(s) in entries[m]["seeds"]}
                        for m in entries if m in table["commands"]}
    for method, seeds in commands.items():
        before = {json.dumps(_without_seed(c)) for c in earlier_commands.get(method, {}).values()}
        now = {json.dumps(_without_seed(c)) for c in seeds.values()}
        if before and before != now:
            raise app.UsageError(f"{method}: the runs here were made with other flags than "
                                 f"{path}'s ({sorted(now)} vs {sorted(before)}): not pooled")
    return entries, earlier_commands, table.get("ft_reference")


def write_table(root: pathlib.Path):
    from cpd_jax.evaluation import report

    results = finished_results(root)
    commands = recorded_commands(root)
    evaluation = next((rs[0].get("evaluation") for rs in results.values()), None)
    earlier, earlier_commands, reference = {}, {}, None
    if _EARLIER.value:
        earlier, earlier_commands, reference = earlier_table(_EARLIER.value, commands,
                                                             evaluation)
        evaluation = evaluation or json.loads(pathlib.Path(_EARLIER.value).read_text()
                                              )["evaluation"]
    if not results and not earlier:
        raise app.UsageError(f"no finished runs of {_METHODS.value} (seeds {_SEEDS.value}) "
                             f"under {root}: nothing to tabulate")
    if "independent" in results:  # Continual World's FT reference
        if "independent" in earlier:
            raise app.UsageError("independent has runs here and in --earlier: the earlier "
                                 "rows' forward transfer used another reference; rerun all")
        reference = report.independent_reference(results["independent"])
    rows = {m: results.get(m, []) for m in _METHODS.value if m in results or m in earlier}
    for method, seeds in earlier_commands.items():
        commands[method] = {**seeds, **commands.get(method, {})}
    return report.write_table2(root, rows, {name: paper_final(name) for name in rows},
                               commands=commands, ft_reference=reference, earlier=earlier,
                               evaluation=evaluation)


def main(argv):
    del argv
    root = pathlib.Path(_WORKDIR.value)
    if _REPORT_ONLY.value:
        logging.info("table written: %s", write_table(root))
        return
    jobs = [(m, int(s)) for s in _SEEDS.value for m in _METHODS.value]  # seed-major
    start = time.time()
    # The first run collects the teacher data alone, so later runs only read it.
    run_one(*jobs[0], root)
    with futures.ThreadPoolExecutor(_PARALLEL.value) as pool:
        for f in futures.as_completed([pool.submit(run_one, m, s, root) for m, s in jobs[1:]]):
            f.result()  # re-raises a failed run's error
    logging.info("table written: %s (%.0f s in all)", write_table(root), time.time() - start)


if __name__ == "__main__":
    app.run(main)
