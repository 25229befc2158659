"""Continual metrics on a hand-made accuracy matrix; expected values computed by hand."""

import math

import numpy as np
import pytest

from cpd_jax.evaluation import metrics

NAN = float("nan")
# 3 stages, 4 tasks: tasks 0,1 in stage 0, task 2 in stage 1, task 3 in stage 2.
SOT = np.array([0, 0, 1, 2])
R = np.array([[0.8, 0.6, NAN, NAN],
              [0.5, 0.7, 0.9, NAN],
              [0.6, 0.2, 0.7, 1.0]])


def test_average_accuracy_by_hand():
    assert metrics.average_accuracy(R, 0, SOT) == pytest.approx(0.7)
    assert metrics.average_accuracy(R, 1, SOT) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics.average_accuracy(R, 2, SOT) == pytest.approx(2.5 / 4)
    # Without stage_of_task the finite entries of the row are the seen tasks.
    assert metrics.average_accuracy(R, 1) == pytest.approx(0.7)


def test_average_incremental_accuracy_by_hand():
    acc = [0.7, (0.5 + 0.7 + 0.9) / 3, 2.5 / 4]
    for k in range(3):
        assert metrics.average_incremental_accuracy(R, SOT, k) == pytest.approx(
            sum(acc[:k + 1]) / (k + 1))


def test_new_task_accuracy_by_hand():
    assert metrics.new_task_accuracy(R, SOT, 0) == pytest.approx((0.8 + 0.6) / 2)
    assert metrics.new_task_accuracy(R, SOT, 1) == pytest.approx(0.9)
    assert metrics.new_task_accuracy(R, SOT, 2) == pytest.approx(1.0)
    assert math.isnan(metrics.new_task_accuracy(R, np.array([0, 0, 2, 2]), 1))


def test_backward_transfer_by_hand():
    assert math.isnan(metrics.backward_transfer(R, SOT, 0))
    assert metrics.backward_transfer(R, SOT, 1) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.6)) / 2)
    assert metrics.backward_transfer(R, SOT, 2) == pytest.approx(
        ((0.6 - 0.8) + (0.2 - 0.6) + (0.7 - 0.9)) / 3)


def test_max_forgetting_by_hand():
    assert math.isnan(metrics.max_forgetting(R, SOT, 0))
    assert metrics.max_forgetting(R, SOT, 1) == pytest.approx(0.3)  # task 0: 0.8 -> 0.5
    assert metrics.max_forgetting(R, SOT, 2) == pytest.approx(0.5)  # task 1: best 0.7 -> 0.2


def test_teacher_recovery_is_ratio_of_means():
    assert metrics.teacher_recovery([0.5, 0.7], [1.0, 0.8]) == pytest.approx(1.2 / 1.8)
    assert math.isnan(metrics.teacher_recovery([0.5], [0.0]))
    with pytest.raises(ValueError):
        metrics.teacher_recovery([0.5, 0.1], [0.5])


def test_continual_world_by_hand():
    cw = metrics.continual_world(R, SOT, reference=[0.5, 0.5, 0.8, 1.0])
    assert cw["average_performance"] == pytest.approx(2.5 / 4)
    # own-stage minus final, over all 4 tasks (task 3 is last: 0)
    assert cw["forgetting"] == pytest.approx((0.2 + 0.4 + 0.2 + 0.0) / 4)
    # own-stage minus reference over all 4 tasks: 0.3, 0.1, 0.1, 0.0
    assert cw["forward_transfer"] == pytest.approx(0.5 / 4)
    # The final Acc and CW's average performance are the same number.
    assert cw["average_performance"] == pytest.approx(metrics.average_accuracy(R, 2, SOT))
    no_ref = metrics.continual_world(R[:2], SOT)  # a run after its second stage
    assert no_ref["average_performance"] == pytest.approx(0.7)
    assert no_ref["forgetting"] == pytest.approx((0.3 - 0.1 + 0.0) / 3)
    assert math.isnan(no_ref["forward_transfer"])


def test_summarize_rows():
    rows = metrics.summarize(R, SOT)
    assert [r["stage"] for r in rows] == [0, 1, 2]
    assert [r["num_tasks"] for r in rows] == [2, 3, 4]
    assert rows[2]["Acc"] == pytest.approx(0.625)
    assert rows[1]["BWT"] == pytest.approx(-0.1)
    assert math.isnan(rows[0]["BWT"]) and math.isnan(rows[0]["MaxForgetting"])


def test_partial_matrix_of_a_run_in_progress():
    # Two stages done of three: task 3 (stage 2) is not seen yet and may be NaN throughout.
    rows = metrics.summarize(R[:2], SOT)
    assert len(rows) == 2 and rows[1]["Acc"] == pytest.approx(0.7)


def test_missing_seen_entry_is_an_error():
    bad = R.copy()
    bad[2, 1] = NAN
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        metrics.summarize(bad, SOT)
    with pytest.raises(ValueError, match="stage_of_task"):
        metrics.summarize(R, SOT[:3])
    with pytest.raises(IndexError):
        metrics.average_accuracy(R, 3, SOT)


def test_stage_of_task_from_stages():
    sot = metrics.stage_of_task_from_stages([["a", "b"], ["c"], ["d"]])
    np.testing.assert_array_equal(sot, SOT)
    np.testing.assert_array_equal(
        metrics.stage_of_task_from_stages([["a"], ["b"]], tasks=["b", "a"]), [1, 0])
    with pytest.raises(ValueError, match="appears"):
        metrics.stage_of_task_from_stages([["a"], ["a"]])


# --- report files -----------------------------------------------------------------------

import json  # noqa: E402

from cpd_jax.evaluation import report  # noqa: E402

PNG_MAGIC = b"\x89PNG"


def test_write_accuracy_matrix(tmp_path):
    paths = report.write_accuracy_matrix(tmp_path / "out", R, ["a", "b", "c", "d"], SOT)
    assert set(paths) == {"json", "md", "png"} and all(p.exists() for p in paths.values())
    data = json.loads(paths["json"].read_text())
    assert data["R"][0][2] is None and data["R"][2][3] == 1.0
    assert data["summary"][0]["BWT"] is None
    assert data["summary"][2]["Acc"] == pytest.approx(0.625)
    md = paths["md"].read_text().splitlines()
    # row of stage 3: R in percent, then Acc 62.5, BWT -26.7, max forgetting 50.0
    assert md[4].split("|")[1:-1] == [" 3 ", " 60.0 ", " 20.0 ", " 70.0 ", " 100.0 ",
                                      " 62.5 ", " -26.7 ", " 50.0 "]
    assert paths["png"].read_bytes()[:4] == PNG_MAGIC


def _run(R_, seed, method="ours"):
    """A results.json-like dict of one (method, seed) run of R_."""
    summary = metrics.summarize(R_, SOT)
    teacher = np.ones(R_.shape[1])
    for k, row in enumerate(summary):
        row["teacher_recovery"] = metrics.teacher_recovery(R_[k, SOT <= k], teacher[SOT <= k])
    stages = [{"stage": k, "routing": {"new_tasks_to_new_experts": 0.5 + 0.1 * seed,
                                       "old_tasks_to_later_experts": 0.1},
               "phase_mse": [{"phase": 1, "mse": {"a": 0.002, "b": 0.004 + seed}}]}
              for k in range(R_.shape[0])]
    return {"method": method, "seed": seed, "summary": summary, "stages": stages,
            "R": [[None if math.isnan(v) else v for v in row] for row in R_.tolist()],
            "stage_of_task": SOT.tolist(),
            "wall_time_s": 10.0 + seed, "evaluation": None}


def test_write_table2_numbers_equal_metrics(tmp_path):
    r_seed1 = R.copy()
    r_seed1[2] = [0.4, 0.4, 0.9, 0.6]
    runs = {"ours": [_run(R, 0), _run(r_seed1, 1)], "finetune": [_run(R, 0, "finetune")]}
    paths = report.write_table2(tmp_path, runs, paper_final={"ours": (69.4, 2.3)})
    assert all(p.exists() for p in paths.values())
    assert paths["png"].read_bytes()[:4] == PNG_MAGIC
    table = paths["md"].read_text().split("\n\n")[0]  # the Table 2 layout comes first
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    accs = np.array([metrics.average_accuracy(r, 2, SOT) for r in (R, r_seed1)])
    bwts = np.array([metrics.backward_transfer(r, SOT, 2) for r in (R, r_seed1)])
    expected = (f"{100 * accs.mean():.1f} ± {100 * accs.std(ddof=1):.1f} / "
                f"{100 * bwts.mean():.1f} ± {100 * bwts.std(ddof=1):.1f}")
    assert rows["ours"][0] == "2" and rows["ours"][3] == expected
    assert rows["ours"][1] == "70.0 ± 0.0 / —"  # stage 1: both seeds equal, no BWT
    assert rows["ours"][-1] == "69.4 / +2.3" and rows["finetune"][-1] == "—"
    incremental = np.array([(0.7 + 0.7 + 0.625) / 3, (0.7 + 0.7 + 0.575) / 3])  # by hand
    assert rows["ours"][-2] == (f"{100 * incremental.mean():.1f} ± "
                                f"{100 * incremental.std(ddof=1):.1f}")
    assert rows["finetune"][3] == "62.5 / -26.7"  # one seed: no spread to show
    table = json.loads(paths["json"].read_text())
    assert table["methods"][1]["per_stage"][2]["Acc_std"] is None
    ours = table["methods"][0]
    assert ours["method"] == "ours" and ours["seeds"] == [0, 1]
    np.testing.assert_allclose(ours["final_acc"], 100 * accs)
    np.testing.assert_allclose(ours["final_bwt"], 100 * bwts)
    np.testing.assert_allclose(ours["avg_incremental_acc"], 100 * incremental)
    assert ours["per_stage"][2]["Acc_mean"] == pytest.approx(accs.mean())
    assert ours["per_stage"][0]["BWT_mean"] is None
    assert ours["per_stage"][1]["new_tasks_to_new_experts_mean"] == pytest.approx(0.55)
    # mean over tasks, then over seeds: (0.003 + 0.503) / 2
    assert ours["per_stage"][0]["mse_phase1_mean"] == pytest.approx(0.253)
    assert "new → new 55.0, old → later 10.0; MSE 253.0" in paths["md"].read_text()
    # stage 3's new task (task 3): 1.0 in seed 0, 0.6 in seed 1
    assert ours["per_stage"][2]["new_task_acc_mean"] == pytest.approx(0.8)
    assert "| ours | new tasks 70.0; new → new 55.0" in paths["md"].read_text()


def test_table2_continual_world_metrics(tmp_path):
    r_indep = R.copy()
    r_indep[[0, 0, 1, 2], [0, 1, 2, 3]] = [0.5, 0.5, 0.8, 1.0]  # own-stage successes
    reference = report.independent_reference([_run(r_indep, 0, "independent")])
    np.testing.assert_allclose(reference, [0.5, 0.5, 0.8, 1.0])
    paths = report.write_table2(tmp_path, {"ours": [_run(R, 0)]}, ft_reference=reference)
    cw = json.loads(paths["json"].read_text())["methods"][0]["continual_world"]
    # by hand as in test_continual_world_by_hand, in percent
    np.testing.assert_allclose(cw["average_performance"], [62.5])
    np.testing.assert_allclose(cw["forgetting"], [20.0])
    np.testing.assert_allclose(cw["forward_transfer"], [12.5])
    assert "| ours | 62.5 | 20.0 | 12.5 |" in paths["md"].read_text()


def test_pooled_stats_equal_stats_of_all_values():
    rng = np.random.default_rng(0)
    values = rng.normal(size=7)
    for split in ([1, 6], [3, 4], [1, 1, 5], [2, 2, 3]):
        groups = np.split(values, np.cumsum(split)[:-1])
        parts = [(len(g), *report._stats(g)) for g in groups]
        np.testing.assert_allclose(report.pooled_stats(parts), report._stats(values))
    assert np.isnan(report.pooled_stats([(1, 0.5, None)])[1])  # one value: no spread
    assert np.isnan(report.pooled_stats([(1, float("nan"), None), (2, 0.1, 0.0)])[0])


def test_table_pooled_from_two_tables_equals_one_table_of_all_seeds(tmp_path):
    seeds = []
    for seed in range(3):
        r = R.copy()
        r[2] = [0.4 + 0.1 * seed, 0.4, 0.9 - 0.2 * seed, 0.6]
        r[1, 2] = 0.5 + 0.2 * seed
        seeds.append(_run(r, seed))
    all_at_once = json.loads(report.write_table2(tmp_path / "all", {"ours": seeds})["json"]
                             .read_text())["methods"][0]
    earlier = json.loads(report.write_table2(tmp_path / "a", {"ours": seeds[:1]})["json"]
                         .read_text())["methods"][0]
    pooled_paths = report.write_table2(tmp_path / "b", {"ours": seeds[1:], "finetune": []},
                                       earlier={"ours": earlier, "finetune": earlier
                                                | {"method": "finetune"}})
    pooled = json.loads(pooled_paths["json"].read_text())["methods"]
    assert [e["method"] for e in pooled] == ["ours", "finetune"]
    ours = pooled[0]
    for key in report.PER_SEED_KEYS:
        np.testing.assert_allclose(ours[key], all_at_once[key], err_msg=key)
    assert ours["continual_world"] == all_at_once["continual_world"]
    for a, b in zip(ours["per_stage"], all_at_once["per_stage"]):
        assert a.keys() == b.keys() and a["num_seeds"] == 3
        for k in a:
            if a[k] is None:
                assert b[k] is None, k
            else:
                assert a[k] == pytest.approx(b[k], abs=1e-12), k
    # the earlier-only method keeps its one seed, and both rows render
    assert pooled[1]["seeds"] == [0]
    assert "| finetune | 1 |" in pooled_paths["md"].read_text()
    with pytest.raises(ValueError, match=r"seeds \[1\] are in both"):
        report.pool_entries(all_at_once, all_at_once | {"seeds": [1, 3]})
