"""experiments/common.py: a workdir's run is reused only for the command that made it."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import common  # noqa: E402

CONFIG = "cpd_jax/configs/mt25_5stage_cpu.py"


def _finished_run(workdir: pathlib.Path, flags: list[str]) -> dict:
    results = {"summary": [{"Acc": 0.5}], "R": [[0.5]]}
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps(results))
    (workdir / "DONE").write_text("1 s\n")
    (workdir / common.COMMAND_FILE).write_text(json.dumps({"config": CONFIG, "flags": flags}))
    return results


def test_finished_run_of_the_same_command_is_reused(tmp_path):
    flags = ["--config.method=ours", "--config.seed=0"]
    results = _finished_run(tmp_path / "run", flags)
    assert common.run_main(CONFIG, tmp_path / "run", flags) == results


def test_run_of_another_command_is_refused_and_left_alone(tmp_path):
    _finished_run(tmp_path / "run", ["--config.method=ours", "--config.seed=0"])
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ValueError, match=r"--config.seed=1.*another --workdir"):
        common.run_main(CONFIG, tmp_path / "run", ["--config.method=ours", "--config.seed=1"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


# --- run_comparison.py --earlier: pooling a committed table's seeds with new runs ------

EVALUATION = {"protocol": "heldout", "description": "held-out goals", "variations": [50, 51],
              "episodes_per_task": 2, "success": "any step", "training_goals": "0..49"}


def _continual_run(root: pathlib.Path, method: str, seed: int, flags: list[str]) -> None:
    """A finished 2-stage run of `method` under `<root>/<method>/seed<seed>`."""
    import numpy as np
    from cpd_jax.evaluation import metrics

    R = np.array([[0.8, np.nan], [0.6 + 0.1 * seed, 0.9]])
    sot = np.array([0, 1])
    summary = metrics.summarize(R, sot)
    for k, row in enumerate(summary):
        row["teacher_recovery"] = metrics.teacher_recovery(R[k, sot <= k], np.ones(k + 1))
    workdir = root / method / f"seed{seed}"
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps({
        "method": method, "seed": seed, "summary": summary, "stage_of_task": sot.tolist(),
        "R": [[None if np.isnan(v) else v for v in row] for row in R.tolist()],
        "wall_time_s": 1.0, "evaluation": EVALUATION}))
    (workdir / common.COMMAND_FILE).write_text(json.dumps({
        "config": CONFIG, "flags": [f"--config.method={method}", f"--config.seed={seed}",
                                    f"--config.data.dir={root / 'data'}", *flags]}))


def _report(workdir, earlier, seeds: str):
    import subprocess
    root = pathlib.Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, str(root / "experiments" / "run_comparison.py"), "--report_only",
         f"--workdir={workdir}", "--methods=finetune", f"--seeds={seeds}",
         f"--earlier={earlier}"], cwd=root, capture_output=True, text=True)


def test_report_pools_an_earlier_tables_seeds_and_refuses_other_flags(tmp_path):
    _continual_run(tmp_path / "old", "finetune", 0, [])
    first = _report(tmp_path / "old", tmp_path / "none.json", "0")
    assert first.returncode != 0  # no earlier table there
    done = _report(tmp_path / "old", "", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    _continual_run(tmp_path / "new", "finetune", 1, [])
    pooled = _report(tmp_path / "new", tmp_path / "old" / "table2.json", "1")
    assert pooled.returncode == 0, pooled.stderr[-2000:]
    table = json.loads((tmp_path / "new" / "table2.json").read_text())
    (entry,) = table["methods"]
    assert entry["seeds"] == [0, 1] and entry["final_acc"] == pytest.approx([75.0, 80.0])
    assert sorted(table["commands"]["finetune"]) == ["0", "1"]
    _continual_run(tmp_path / "other", "finetune", 1, ["--config.distill.sampling=episode"])
    refused = _report(tmp_path / "other", tmp_path / "old" / "table2.json", "1")
    assert refused.returncode != 0 and "other flags" in refused.stderr
    assert not (tmp_path / "other" / "table2.json").exists()


# --- learning_curves.py --earlier: a committed curve extended with new points ----------

def _joint_run(workdir: pathlib.Path, success: float, evaluation: dict) -> None:
    workdir.mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps({
        "mean_success": success, "teacher_mean_success": 1.0,
        "per_task": {"reach-v3": {"success_rate": success}}, "time_s": {"train": 1.0},
        "wall_time_s": 2.0, "evaluation": evaluation}))


def _curves_report(workdir, earlier):
    import subprocess
    root = pathlib.Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, str(root / "experiments" / "learning_curves.py"), "--report_only",
         f"--workdir={workdir}", "--curves=mt25", "--mt25_steps=5000,10000,20000",
         f"--out={workdir / 'lc'}", f"--earlier={earlier}"],
        cwd=root, capture_output=True, text=True)


def test_curves_pool_an_earlier_reports_points_the_workdir_lacks(tmp_path):
    _joint_run(tmp_path / "old" / "mt25" / "10000", 0.9, EVALUATION)
    _joint_run(tmp_path / "old" / "mt25" / "5000", 0.1, EVALUATION)
    assert _curves_report(tmp_path / "old", "").returncode == 0
    _joint_run(tmp_path / "new" / "mt25" / "5000", 0.7, EVALUATION)
    done = _curves_report(tmp_path / "new", tmp_path / "old" / "lc.json")
    assert done.returncode == 0, done.stderr[-2000:]
    points = json.loads((tmp_path / "new" / "lc.json").read_text())["curves"]["mt25"]["points"]
    # the workdir's own run wins over the earlier report's point at the same x
    assert [(p["step"], p["mean_success"]) for p in points] == [(5000, 0.7), (10000, 0.9)]
    assert "pooled_from" not in points[0] and points[1]["pooled_from"].endswith("lc.json")
    assert "pooled from an earlier report" in (tmp_path / "new" / "lc.md").read_text()
    _joint_run(tmp_path / "other" / "mt25" / "5000", 0.7, {**EVALUATION, "protocol": "x"})
    refused = _curves_report(tmp_path / "other", tmp_path / "old" / "lc.json")
    assert refused.returncode != 0 and "another protocol" in refused.stderr
    assert not (tmp_path / "other" / "lc.json").exists()


# --- step_budget.py: the same table at several steps per stage ------------------------

def _table(final_acc, new_task_acc, evaluation=EVALUATION):
    return {"evaluation": evaluation, "methods": [{
        "method": "ours", "seeds": list(range(len(final_acc))), "final_acc": final_acc,
        "final_bwt": [-1.0] * len(final_acc),
        "per_stage": [{"new_task_acc_mean": m, "new_task_acc_std": 0.1}
                      for m in new_task_acc]}]}


def test_step_budget_rows_match_a_direct_computation():
    import numpy as np
    import step_budget

    small, large = [88.0, 87.0, 91.0], [90.0, 94.0, 93.0]
    rows = step_budget.budget_rows(
        {10000: _table(large, [1.0, 0.9]), 5000: _table(small, [0.95, 0.8])}, ["ours"])
    first, second = rows["ours"]
    assert (first["steps"], second["steps"]) == (5000, 10000)  # sorted by budget
    assert first["acc_change"] is None
    assert second["acc"] == pytest.approx((np.mean(large), np.std(large, ddof=1)))
    assert second["acc_change"] == pytest.approx(np.mean(large) - np.mean(small))
    stderr = np.sqrt(np.var(large, ddof=1) / 3 + np.var(small, ddof=1) / 3)
    assert second["acc_change_stderr"] == pytest.approx(stderr)
    assert [m for m, _ in first["new_tasks"]] == pytest.approx([95.0, 80.0])
    assert "| ours | 10,000 | 3 |" in step_budget.markdown(rows, "protocol")


def test_step_budget_refuses_other_protocols_and_missing_rows():
    import step_budget

    other = _table([90.0], [1.0], {**EVALUATION, "protocol": "metaworld_plus"})
    with pytest.raises(ValueError, match="different protocols"):
        step_budget.budget_rows({5000: _table([90.0], [1.0]), 10000: other}, ["ours"])
    with pytest.raises(ValueError, match="'replay_only' is not in the 5000-step table"):
        step_budget.budget_rows({5000: _table([90.0], [1.0])}, ["replay_only"])
