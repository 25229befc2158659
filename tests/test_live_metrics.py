"""Live metrics and progress: tiny real jobs write TensorBoard events that the library's
own reader gives back equal to what the job returned; the progress arithmetic by hand."""

import json
import sys
import types

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cpd_jax import live_metrics, pipeline, progress
from cpd_jax.configs import quickstart
from cpd_jax.continual import stages
from cpd_jax.errors import UserError
from cpd_jax.rl.ppo import runner
from tests.helpers import runner_config, tiny_continual_config


def read_scalars(logdir) -> dict:
    """{tag: [(step, value), ...]} of every event file under `logdir`, by the reader
    TensorBoard itself uses."""
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every one
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def steps(events, tag):
    return [s for s, _ in events[tag]]


def values(events, tag):
    return [v for _, v in events[tag]]


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


# -------------------------------------------------------------- progress and ETA


class FakeClock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def test_eta_is_the_units_left_at_the_rate_since_the_restart():
    clock, lines = FakeClock(100.0), []
    meter = progress.Progress("train", 1000, "steps", clock=clock, log=lines.append)
    clock.now = 110.0  # the first step took 10 s: it compiled
    meter.restart(done=1)
    clock.now = 130.0  # 200 more steps in 20 s: 10 steps/s; 799 left: 79.9 s
    assert meter.rate(201) == pytest.approx(10.0)
    assert meter.update(201, "loss 0.5") == (
        "train: 201/1,000 steps (20%), 10.0 steps/s, ETA 1m20s | loss 0.5")
    assert lines == ["train: 201/1,000 steps (20%), 10.0 steps/s, ETA 1m20s | loss 0.5"]
    assert progress.eta_seconds(201, 1000, 20.0, done_at_start=1) == pytest.approx(79.9)
    assert progress.eta_seconds(0, 10, 5.0) is None  # no rate yet
    assert progress.eta_seconds(10, 10, 5.0) == 0.0
    assert [progress.format_duration(s) for s in (None, 44.6, 725, 11220)] == [
        "?", "45s", "12m05s", "3h07m"]


def test_first_call_is_announced_as_a_compile_and_timed_once():
    clock, lines = FakeClock(), []

    def slow_double(x):
        clock.now += 12.0
        return 2 * x

    fn = progress.log_first_call(slow_double, "the thing", log=lines.append, clock=clock)
    assert fn(3) == 6 and fn(4) == 8
    assert len(lines) == 2
    assert lines[0].startswith("compiling the thing on its first call (")
    assert lines[1] == "the thing: compiled and ran once in 12s"


# ------------------------------------------------------------ jobs -> event files


def tiny_joint_config(shared_data):
    c = quickstart.get_config()
    c.tasks = ("reach-v3",)
    c.data.dir = str(shared_data)
    c.data.episodes_per_task = 2
    c.student.dim, c.student.num_blocks, c.student.seq_len = 16, 1, 4
    c.distill.max_steps, c.distill.log_every = 20, 10
    c.eval.episodes_per_task = 2
    c.eval.curve_steps = (10,)
    return c


def test_joint_run_events_equal_its_results(tmp_path, shared_data):
    results = pipeline.train_and_evaluate(tiny_joint_config(shared_data), tmp_path)
    events = read_scalars(tmp_path / "tb")
    assert steps(events, "distill/loss") == [10, 20]  # every log_every gradient steps
    np.testing.assert_allclose(values(events, "distill/loss"),
                               [p["loss"] for p in results["curve"]], rtol=1e-6)
    np.testing.assert_allclose(values(events, "distill/aux_coef"),
                               [p["aux_coef"] for p in results["curve"]], rtol=1e-6)
    assert all(v > 0 for v in values(events, "distill/steps_per_s"))
    # held-out success at each curve point; the last one is results.json's
    saved = json.loads((tmp_path / "results.json").read_text())
    assert steps(events, "success/mean") == [10, 20]
    np.testing.assert_allclose(values(events, "success/mean"),
                               [p["mean_success"] for p in saved["learning_curve"]])
    assert values(events, "success/mean")[-1] == pytest.approx(saved["mean_success"])
    assert values(events, "success/reach-v3")[-1] == pytest.approx(
        saved["per_task"]["reach-v3"]["success_rate"])


def test_continual_steps_continue_across_stages_phases_and_a_resume(tmp_path, shared_data):
    # 12 steps per stage, log every 6; stage 1: 1 phase, later: 6 + 6
    c = tiny_continual_config()
    c.tasks = c.tasks[:2]
    c.continual.stage_sizes = (1, 1)
    c.data.dir = str(shared_data)
    stages.run_continual(c, tmp_path, max_stages=1)  # "killed" after stage 1...
    out = stages.run_continual(c, tmp_path)  # ...and resumed: a second event file
    events = read_scalars(tmp_path / "tb")
    # stage 1: 6, 12; stage 2 phase 1 ends at 12 + 6, phase 2 at 12 + 12
    assert steps(events, "distill/loss") == [6, 12, 18, 24]
    assert [s["train_steps"] for s in out["stages"]] == [12, 12]
    assert steps(events, "continual/Acc") == [12, 24]
    np.testing.assert_allclose(values(events, "continual/Acc"),
                               [row["Acc"] for row in out["summary"]], rtol=1e-6)
    assert events["continual/BWT"] == [(24, pytest.approx(out["summary"][1]["BWT"]))]
    assert values(events, "continual/stage") == [1, 2]
    R = np.asarray(out["R"], float)
    assert events["success/reach-v3"] == [(12, pytest.approx(R[0, 0])),
                                          (24, pytest.approx(R[1, 0]))]
    assert events["success/drawer-close-v3"] == [(24, pytest.approx(R[1, 1]))]
    # held-out MSE at the end of each phase: stage 1 at 12, stage 2 at 18 and 24
    assert steps(events, "heldout_mse/reach-v3") == [12, 18, 24]
    expected = [p["mse"]["reach-v3"] for s in out["stages"] for p in s["phase_mse"]]
    np.testing.assert_allclose(values(events, "heldout_mse/reach-v3"), expected, rtol=1e-6)


def test_ppo_chunks_reach_the_event_files(tmp_path):
    config = runner_config(4)  # 2 chunks of 2 eval periods, 2 toy tasks, one program
    runner.train_teachers(config, str(tmp_path), log=lambda *a: None)
    events = read_scalars(tmp_path / "tb")
    for task in config.teachers.tasks:
        curve = json.loads((tmp_path / "teachers" / task / "curve.json").read_text())
        assert steps(events, f"ppo/{task}/eval_success") == curve["env_steps"]
        np.testing.assert_allclose(values(events, f"ppo/{task}/eval_success"),
                                   curve["eval_success"], rtol=1e-6)
        np.testing.assert_allclose(values(events, f"ppo/{task}/train_return"),
                                   curve["train_return"], rtol=1e-6)
        for metric in ("entropy", "approx_kl", "eval_return", "train_success"):
            assert len(events[f"ppo/{task}/{metric}"]) == 4
    assert steps(events, "ppo/point_mass/env_steps_per_s") == [2 * 2 * 16 * 25,
                                                                4 * 2 * 16 * 25]


def test_chunk_scalars_skip_periods_after_an_early_stop():
    m = {"env_steps": np.array([[100, 200], [100, 100]]),
         "active": np.array([[True, True], [True, False]]),
         "stopped": np.array([[False, False], [True, True]]),
         "eval_success": np.array([[0.1, 0.2], [1.0, 1.0]])}
    assert runner.chunk_scalars(m, ["a", "b"]) == [
        (100, {"ppo/a/eval_success": 0.1}), (200, {"ppo/a/eval_success": 0.2}),
        (100, {"ppo/b/eval_success": 1.0})]


# ---------------------------------------------------------------- switched off, W&B


def test_disabled_tensorboard_writes_nothing(tmp_path):
    config = runner_config(2)
    config.log.tensorboard = False
    runner.train_teachers(config, str(tmp_path), log=lambda *a: None)
    assert (tmp_path / "teachers").is_dir()  # the job ran...
    assert not (tmp_path / "tb").exists()  # ...and wrote no event file
    writer = live_metrics.MetricWriter()
    assert not writer.enabled
    writer.scalars(1, {"x": 1.0})  # a no-op, not an error


def test_missing_wandb_is_one_user_error_before_any_work(tmp_path, monkeypatch, shared_data):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    c = tiny_joint_config(shared_data)
    c.data.dir = ""  # collection would make <workdir>/data
    c.log.wandb = True
    with pytest.raises(UserError, match="wandb package.*pip install wandb"):
        pipeline.train_and_evaluate(c, tmp_path)
    assert not (tmp_path / "data").exists() and not (tmp_path / "tb").exists()


def test_wandb_gets_the_same_scalars_offline_against_our_step(tmp_path, monkeypatch):
    calls = {"log": [], "define": [], "finished": False}

    class FakeRun:
        def define_metric(self, name, **kwargs):
            calls["define"].append((name, kwargs))

        def log(self, values):
            calls["log"].append(values)

        def finish(self):
            calls["finished"] = True

    def init(**kwargs):
        calls["init"] = kwargs
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    c = quickstart.get_config()
    c.log.wandb, c.log.tensorboard = True, False
    with live_metrics.make_writer(c, tmp_path / "run") as writer:
        writer.scalars(7, {"distill/loss": np.float32(0.5), "continual/BWT": None})
    assert calls["init"]["mode"] == "offline" and calls["init"]["dir"] == str(tmp_path / "run")
    assert calls["init"]["config"]["distill"]["max_steps"] == 4000
    assert calls["log"] == [{"distill/loss": 0.5, "step": 7}]
    assert ("*", {"step_metric": "step"}) in calls["define"]
    assert calls["finished"]
