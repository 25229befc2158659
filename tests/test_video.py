"""Evaluation videos really render (offscreen MuJoCo; OSMesa on a CPU machine): frames
change, the files decode back to the recorded frames, and each episode's recorded success
is the evaluation's success of that episode."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cpd_jax.envs import make_env
from cpd_jax.errors import UserError
from cpd_jax.evaluation import closed_loop, video
from cpd_jax.teachers import scripted

# reach-v3's scripted policy succeeds at step 43 on goal 50; drawer-close-v3's, pushed
# sideways by a constant action offset, does not within NUM_STEPS: one of each.
TASKS = ("reach-v3", "drawer-close-v3")
OFFSETS = {"reach-v3": np.zeros(4, np.float32),
           "drawer-close-v3": np.array([0.0, 0.9, 0.0, 0.0], np.float32)}
GOAL = 50
NUM_STEPS = 48
SPEC = video.VideoSpec(height=96, width=128, frame_every=8)
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rendering():
    try:
        return video.check_rendering()
    except UserError as e:  # the message names what to install (libosmesa6 / MUJOCO_GL)
        pytest.skip(f"offscreen rendering unavailable: {e}")


def _scripted_policy(history):
    """History -> float32[B, 4]: each env's task's scripted action plus its offset."""
    ids = np.asarray(history.task_id)
    obs = np.asarray(history.obs[:, -1])
    names = {0: "reach-v3", 5: "drawer-close-v3"}  # MT25 ids
    return np.stack([scripted.ScriptedTeacher(names[int(i)]).action_mean(o[None])[0]
                     + OFFSETS[names[int(i)]] for i, o in zip(ids, obs)])


def _make_reference(tasks):
    return make_env("reference", tasks)


@pytest.fixture(scope="module")
def recorded(rendering):
    """{task: [Episode]} of the scripted policy on GOAL, rendered."""
    return {t: video.record_episodes(_make_reference, _scripted_policy, t, [GOAL], 4, SPEC,
                                     num_steps=NUM_STEPS)
            for t in TASKS}


def test_recorded_success_is_the_evaluations_success_of_the_same_episode(recorded):
    evaluation = closed_loop.evaluate_tasks(_make_reference, _scripted_policy, list(TASKS),
                                            [GOAL], 4, num_steps=NUM_STEPS)
    for task in TASKS:
        (episode,) = recorded[task]
        assert episode.success == bool(evaluation[task]["success_rate"])
        assert episode.succeeded[-1] == episode.success  # the overlay's last frame agrees
    assert recorded["reach-v3"][0].success and not recorded["drawer-close-v3"][0].success


def test_frames_change_and_follow_the_frame_grid(recorded):
    for task in TASKS:
        (episode,) = recorded[task]
        frames = episode.frames
        assert frames.shape == (video.frames_in_episode(episode.steps, SPEC.frame_every),
                                SPEC.height, SPEC.width, 3)
        assert frames.dtype == np.uint8 and frames.std() > 10  # not a blank image
        moved = np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean(-1)
        assert (moved > 30).mean() > 0.01, task  # the arm moved across >1% of the image
    assert recorded["reach-v3"][0].steps < NUM_STEPS  # stopped at its success
    assert recorded["drawer-close-v3"][0].steps == NUM_STEPS


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_videos_decode_to_the_recorded_frames_and_manifest(recorded, tmp_path, fmt):
    import imageio.v2 as imageio

    spec = video.VideoSpec(height=SPEC.height, width=SPEC.width,
                           frame_every=SPEC.frame_every, format=fmt)
    manifest = video.write_videos(tmp_path, recorded, spec)
    written = json.loads((tmp_path / "videos.json").read_text())
    assert written == manifest
    for task in TASKS:
        (episode,) = recorded[task]
        entry = written["tasks"][task]["episodes"][0]
        assert (entry["success"], entry["steps"], entry["frames"], entry["variation"]) == (
            episode.success, episode.steps, len(episode.frames), GOAL)
        reader = imageio.get_reader(tmp_path / f"{task}.{fmt}",
                                    format="FFMPEG" if fmt == "mp4" else "GIF-PIL")
        # iter_data: the FFMPEG reader's len() is inf (unknown), so no list(reader)
        decoded = np.stack(list(reader.iter_data()))[..., :3]  # a GIF decodes to RGBA
        assert decoded.shape == (len(episode.frames), SPEC.height, SPEC.width, 3)
        # the picture (above the status bar) survives encoding
        picture = slice(0, SPEC.height - video.STATUS_BAR_PIXELS - 2)
        err = np.abs(decoded[:, picture].astype(int) - episode.frames[:, picture]).mean()
        assert err < 12, (task, err)
        bar = decoded[-1, -2, SPEC.width // 2].astype(int)  # last frame's status bar
        green = bar[1] - bar[0] > 40
        assert green == episode.success, (task, bar)
    sheet = imageio.imread(tmp_path / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[0] > SPEC.height // video.SHEET_DOWNSAMPLE


def test_mjx_states_render_like_the_mujoco_state_they_were_copied_from(rendering):
    """`mjx_scenes` copies a batched mjx.Data to MjData (no MJX compile: put_data)."""
    import jax
    import mujoco
    from mujoco import mjx

    from cpd_jax.envs.mjx import model_edit
    from cpd_jax.envs.mjx.tasks import registry

    task = registry.get_task("reach-v3")
    model = model_edit.build_model(task.XML, task.MODEL_EDITS)
    states = []
    for seed in range(2):  # two envs in different poses
        data = mujoco.MjData(model)
        data.qpos[:7] = np.random.default_rng(seed).uniform(-1, 1, 7)
        mujoco.mj_forward(model, data)
        states.append(data)
    batched = jax.tree.map(lambda *xs: np.stack(xs),
                           *[mjx.put_data(model, d) for d in states])
    scenes = video.mjx_scenes(["reach-v3", "reach-v3"], {"reach-v3": batched},
                              {"reach-v3": model})
    camera = video.free_camera(SPEC)
    with video.make_renderer(model, SPEC) as renderer:
        def render(data):
            renderer.update_scene(data, camera=camera)
            return renderer.render().astype(int)

        synced = [render(d) for _, d in scenes]
        direct = [render(d) for d in states]
    for a, b in zip(synced, direct):
        assert np.abs(a - b).mean() < 1.0
    assert np.abs(synced[0] - synced[1]).mean() > 1.0


@pytest.mark.parametrize("field,value", [("format", "avi"), ("height", 100),
                                         ("frame_every", 0), ("episodes_per_task", 21)])
def test_bad_video_settings_name_the_field(field, value):
    from cpd_jax.configs import quickstart

    c = quickstart.get_config()
    c.video[field] = value
    with pytest.raises(UserError, match=f"video.{field}"):
        video.check_video_config(c.video, c.eval.episodes_per_task)


def test_video_after_a_run_that_saves_no_student_is_refused_up_front():
    from cpd_jax.configs import quickstart

    c = quickstart.get_config()  # the joint protocol: no checkpoint to render
    with pytest.raises(UserError, match="protocol='joint'"):
        video.check_video_request(c, "train")


def test_student_checkpoint_videos_match_its_evaluation(rendering, tmp_path):
    """A tiny untrained student, saved as a continual run's checkpoint, through
    `render_checkpoint_videos` (the CLI's path) and `--mode=eval`'s evaluation."""
    import jax

    from cpd_jax import checkpointing, evaluate_checkpoint
    from cpd_jax.configs import quickstart
    from cpd_jax.continual import state
    from cpd_jax.student import Student, StudentSpec
    from cpd_jax.student.inputs import identity_obs_norm, obs_norm_to_tree, student_inputs

    c = quickstart.get_config()
    c.protocol, c.tasks, c.continual.stage_sizes = "stages", ("reach-v3",), (1,)
    c.student.task_context = "onehot"
    c.student.dim, c.student.num_blocks, c.student.num_experts, c.student.seq_len = 16, 1, 2, 4
    c.eval.episodes_per_task, c.video.episodes_per_task = 1, 1
    c.video.height, c.video.width, c.video.frame_every = 64, 64, 125
    norm = identity_obs_norm()
    history = closed_loop.empty_history(1, 4, 39, 4, [0])
    params = Student(StudentSpec.from_config(c.student)).init(
        jax.random.PRNGKey(0), student_inputs("onehot", history, obs_norm=norm),
        history.valid)["params"]
    checkpointing.RunCheckpointer(tmp_path / "checkpoints").save(
        1, {"params": params, "obs_norm": obs_norm_to_tree(norm)},
        {"format": state.CHECKPOINT_FORMAT, "stages_done": 1, "num_experts": 2,
         "config": c.to_dict()})

    manifest = video.render_checkpoint_videos(c, tmp_path / "checkpoints",
                                              tmp_path / "videos")
    evaluation = evaluate_checkpoint.run(c, tmp_path / "checkpoints", tmp_path / "eval")
    (episode,) = manifest["tasks"]["reach-v3"]["episodes"]
    assert episode["success"] == bool(evaluation["per_task"]["reach-v3"]["success_rate"])
    assert episode["frames"] == video.frames_in_episode(episode["steps"], 125)
    assert (tmp_path / "videos" / "reach-v3.mp4").stat().st_size > 0
    assert (tmp_path / "videos" / "contact_sheet.png").exists()


def test_cli_video_without_a_checkpoint_is_one_error_line(rendering, tmp_path):
    out = subprocess.run([sys.executable, "-m", "cpd_jax.main",
                          "--config=cpd_jax/configs/quickstart.py", f"--workdir={tmp_path}",
                          "--mode=eval", "--video"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    last = [line for line in out.stderr.splitlines() if line.strip()][-1]
    assert out.returncode == 2, out.stderr[-2000:]
    assert last.startswith("error: ") and "checkpoints" in last, last
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "videos").exists()


def test_rendering_that_cannot_start_is_a_user_error_naming_the_fix(rendering, monkeypatch):
    import mujoco

    def no_gl(*args, **kwargs):
        raise RuntimeError("cannot create an OSMesa context")

    monkeypatch.setattr(mujoco, "Renderer", no_gl)
    with pytest.raises(UserError, match="libosmesa6.*MUJOCO_GL=osmesa"):
        video.check_rendering()
    monkeypatch.setenv("MUJOCO_GL", "nosuchgl")
    with pytest.raises(UserError, match="MUJOCO_GL='nosuchgl'"):
        video.check_rendering()
