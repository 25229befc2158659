"""Figure 4 at CPU size: how the replay is chosen and how large it is, for "ours" on the
5-stage protocol: DPP vs farthest-first vs uniform random selection at the paper's 10%
budget, and DPP at several budgets.

    python experiments/figure4_replay.py --workdir=runs/figure4 --seeds=0,1,2 \
        --size_seeds=0 --out=experiments/results/figure4_replay

Each point is a continual run (`python -m cpd_jax.main`, `<workdir>/<variant>/seed<k>`,
one shared teacher-data directory). Output `<out>.json` / `<out>.md` / `<out>.png`: final
Acc and BWT (mean ± std over seeds) per selector and per replay fraction.
"""

import json
import pathlib

import numpy as np
from absl import app, flags

import common

_CONFIG = flags.DEFINE_string("config", "cpd_jax/configs/mt25_5stage_cpu.py", "config file")
_WORKDIR = flags.DEFINE_string("workdir", "runs/figure4", "where runs go")
_OUT = flags.DEFINE_string("out", "experiments/results/figure4_replay", "output prefix")
_SEEDS = flags.DEFINE_list("seeds", "0", "seeds of the selector sweep")
_SIZE_SEEDS = flags.DEFINE_list("size_seeds", None, "seeds of the replay-size sweep's "
                                "other fractions (default: --seeds)")
_SELECTORS = flags.DEFINE_list("selectors", "dpp,farthest_first,random", "at --fraction")
_FRACTION = flags.DEFINE_float("fraction", 0.1, "replay fraction of the selector sweep")
_FRACTIONS = flags.DEFINE_list("fractions", "0.05,0.1,0.2", "replay fractions (DPP)")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "extra --config.x=y for every run")


def variants() -> dict:
    """{name: (selector, fraction, seeds)}; the DPP run at --fraction is shared by both
    sweeps (with the selector sweep's seeds)."""
    size_seeds = _SIZE_SEEDS.value or _SEEDS.value
    out = {f"dpp_{float(f):g}": ("dpp", float(f), size_seeds) for f in _FRACTIONS.value}
    out.update({f"{s}_{_FRACTION.value:g}": (s, _FRACTION.value, _SEEDS.value)
                for s in _SELECTORS.value})
    return out


def main(argv):
    del argv
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpd_jax.evaluation import report

    root, out = pathlib.Path(_WORKDIR.value), pathlib.Path(_OUT.value)
    rows, evaluation = {}, None
    for name, (selector, fraction, seeds) in variants().items():
        finals = []
        for s in seeds:
            r = common.run_main(_CONFIG.value, root / name / f"seed{s}", [
                "--config.method=ours", f"--config.seed={s}",
                f"--config.continual.replay_selector={selector}",
                f"--config.continual.replay_fraction={fraction}",
                f"--config.data.dir={root / 'data'}", *_OVERRIDES.value])
            evaluation = r["evaluation"]
            finals.append((100 * r["summary"][-1]["Acc"], 100 * r["summary"][-1]["BWT"]))
        acc, bwt = np.array(finals).T
        std = report.sample_std  # NaN for one seed: no spread measured
        rows[name] = {"selector": selector, "fraction": fraction, "seeds": [int(s) for s in seeds],
                      "final_acc": acc.tolist(),
                      "final_bwt": bwt.tolist(), "acc_mean": float(acc.mean()),
                      "acc_std": std(acc), "bwt_mean": float(bwt.mean()), "bwt_std": std(bwt)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report.nan_to_none(
        {"evaluation": evaluation, "runs": rows}), indent=2))
    cell = lambda mean, std: report.mean_std(mean / report.PERCENT, std / report.PERCENT)
    lines = ["| selector | replay fraction | seeds | final Acc (%) | final BWT (%) |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['selector']} | {r['fraction']:g} | {len(r['seeds'])} "
              f"| {cell(r['acc_mean'], r['acc_std'])} | {cell(r['bwt_mean'], r['bwt_std'])} |"
              for r in sorted(rows.values(), key=lambda r: (r["selector"] != "dpp",
                                                             r["selector"], r["fraction"]))]
    lines += ["", "Method ours; mean ± sample std over seeds "
              "(one seed: its value alone, no spread measured). "
              + report.evaluation_note(evaluation)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    sel = [r for r in rows.values() if r["fraction"] == _FRACTION.value]
    x = np.arange(len(sel))
    for offset, key, label in ((-0.2, "acc", "Acc"), (0.2, "bwt", "BWT")):
        ax1.bar(x + offset, [r[f"{key}_mean"] for r in sel], width=0.4, label=label,
                yerr=np.nan_to_num([r[f"{key}_std"] for r in sel]), capsize=3)
    ax1.set_xticks(x, [r["selector"] for r in sel])
    ax1.axhline(0, color="gray", lw=0.8)
    ax1.legend(fontsize=8)
    ax1.set_ylabel("final Acc / BWT (%)")
    ax1.set_title(f"replay selection ({_FRACTION.value:.0%} budget)")
    dpp = sorted((r for r in rows.values() if r["selector"] == "dpp"),
                 key=lambda r: r["fraction"])
    ax2.errorbar([100 * r["fraction"] for r in dpp], [r["acc_mean"] for r in dpp],
                 yerr=np.nan_to_num([r["acc_std"] for r in dpp]), marker="o", capsize=3,
                 label="Acc")
    ax2.errorbar([100 * r["fraction"] for r in dpp], [r["bwt_mean"] for r in dpp],
                 yerr=np.nan_to_num([r["bwt_std"] for r in dpp]), marker="s", capsize=3,
                 label="BWT")
    ax2.set_xlabel("replay budget (% of a stage's trajectories)")
    ax2.set_ylabel("%")
    ax2.axhline(0, color="gray", lw=0.8)
    ax2.legend(fontsize=8)
    ax2.set_title("DPP replay size")
    report.save_figure(fig, out.with_suffix(".png"))


if __name__ == "__main__":
    app.run(main)
