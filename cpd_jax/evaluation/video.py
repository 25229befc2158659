"""Evaluation videos: render closed-loop episodes offscreen with `mujoco.Renderer`.

The episodes run through `closed_loop.rollout_success`, the evaluation's own policy
loop, on an env wrapped by `FrameRecorder`, which renders each env's MuJoCo state after
reset and after every `frame_every`-th step it takes (and after its last step). The
recorded success of an episode is the one `rollout_success` returns, so it is the
evaluation's success of that episode (same policy, task and goal).

Output (`write_videos`), in one directory:
  <task>.mp4 (or .gif)  the task's episodes one after another; a bar along the bottom
                        turns from grey to green once the episode has succeeded
  contact_sheet.png     one row per task (its first episode), frames evenly spaced in time
  videos.json           per task, per episode: variation, success, steps, frames,
                        first_frame (index of its first frame in the task's video)

Backends: the reference env renders each metaworld env's own MjModel/MjData; the MJX
env's batched `mjx.Data` is copied to `MjData` with `mjx.get_data` for rendering.

One module despite its length: the GL backend checks, renderer, recorder and file
writers serve one feature, and nothing else imports them.
"""

import dataclasses
import importlib
import json
import math
import os
import pathlib
from typing import Callable, Sequence

import numpy as np

from cpd_jax.envs import MAX_EPISODE_STEPS, BatchedEnv
from cpd_jax.errors import UserError

# Meta-World steps at 80 Hz (5 substeps of 2.5 ms): a video at 80 / frame_every frames
# per second plays in real time.
ENV_STEPS_PER_SECOND = 80
VIDEO_FORMATS = ("mp4", "gif")
# MUJOCO_GL values that give mujoco.Renderer a context: offscreen (osmesa: software, any
# machine; egl: GPU) or a window system the user has (glfw).
GL_BACKENDS = ("osmesa", "egl", "glfw")
# H.264 encodes 16x16 macro-blocks; imageio-ffmpeg would resize other sizes (with a
# warning) and the decoded video would no longer have the rendered size.
MACRO_BLOCK = 16
STATUS_BAR_PIXELS = 6
SHEET_COLUMNS = 8
SHEET_DOWNSAMPLE = 2  # every 2nd pixel: a 25-task sheet stays a few MB
INSTALL_HINT = ("install libosmesa6 (apt-get install libosmesa6) and set MUJOCO_GL=osmesa, "
                "or set MUJOCO_GL=egl on a machine with a GPU driver")


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """What to render: frame size, which steps, how to encode, the camera.

    The camera is a free camera aimed at the table (every Meta-World task's objects lie
    on it), the same for every task and backend: the models' own named cameras
    ("corner2", ...) give upside-down pictures with `mujoco.Renderer`, and the MJX
    port's edited models need not keep them.
    """

    height: int = 240
    width: int = 320
    frame_every: int = 4
    format: str = "mp4"
    lookat: tuple = (0.0, 0.65, 0.2)
    distance: float = 1.6  # the hand's whole reach (x +-0.5 m, y 0.35..1.0 m) in view
    azimuth: float = 140.0
    elevation: float = -25.0

    @property
    def fps(self) -> float:
        return ENV_STEPS_PER_SECOND / self.frame_every

    @classmethod
    def from_config(cls, video_config) -> "VideoSpec":
        return cls(height=video_config.height, width=video_config.width,
                   frame_every=video_config.frame_every, format=video_config.format)


def check_video_config(video_config, eval_episodes: int) -> None:
    """Refuses (UserError naming the field) video settings that cannot be rendered."""
    v = video_config
    if v.format not in VIDEO_FORMATS:
        raise UserError(f"video.format={v.format!r}: choose from {VIDEO_FORMATS}")
    for field in ("height", "width"):
        size = getattr(v, field)
        if size < MACRO_BLOCK or size % MACRO_BLOCK:
            raise UserError(f"video.{field}={size} must be a positive multiple of "
                            f"{MACRO_BLOCK} (H.264 encodes {MACRO_BLOCK}x{MACRO_BLOCK} blocks)")
    if v.frame_every < 1:
        raise UserError(f"video.frame_every={v.frame_every} must be >= 1")
    if not 1 <= v.episodes_per_task <= eval_episodes:
        raise UserError(f"video.episodes_per_task={v.episodes_per_task} must be in 1.."
                        f"{eval_episodes} (eval.episodes_per_task: videos show the first "
                        "goals of the evaluation)")


def check_video_request(config, mode: str) -> None:
    """Before any work (`--video` or video.at_end): the video settings, that there will
    be a saved student to render, and that offscreen rendering works (UserError)."""
    check_video_config(config.video, config.eval.episodes_per_task)
    if mode == "train" and config.protocol != "stages":
        raise UserError(f"--video / video.at_end render a continual run's saved student, "
                        f"and protocol={config.protocol!r} saves none; use a stages config "
                        "or `--mode=eval --video` on a continual run's workdir")
    check_rendering()


# ---- offscreen OpenGL ---------------------------------------------------------------

def offscreen_gl_backend() -> str:
    """The MUJOCO_GL value to render with: the user's, else "egl" when JAX runs on a GPU
    (its driver ships EGL), else "osmesa" (software rendering, any CPU machine)."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    import jax
    return "egl" if jax.default_backend() == "gpu" else "osmesa"


def use_offscreen_gl() -> str:
    """Makes `mujoco.Renderer` use `offscreen_gl_backend()`'s GL context; returns it.

    MuJoCo picks its GL context class once, from MUJOCO_GL, when `mujoco` is first
    imported; unset, it picks GLFW, which needs a display and fails on a headless
    machine or CI. So MUJOCO_GL must be set before mujoco's GL is first used. By the time
    a video is asked for, metaworld has usually imported mujoco already, so besides
    setting the variable (for a mujoco not yet imported and for child processes) this
    points `mujoco.gl_context.GLContext`, which `mujoco.Renderer` reads when it is
    built, at the chosen backend's context class.
    """
    backend = offscreen_gl_backend()
    if backend not in GL_BACKENDS:
        raise UserError(f"MUJOCO_GL={backend!r} cannot render videos; set MUJOCO_GL to one "
                        f"of {GL_BACKENDS} (osmesa on a CPU, egl on a GPU)")
    os.environ["MUJOCO_GL"] = backend
    import mujoco.gl_context
    mujoco.gl_context.GLContext = importlib.import_module(f"mujoco.{backend}").GLContext
    return backend


def check_rendering() -> str:
    """Renders one tiny frame; UserError naming the fix if offscreen rendering fails
    (no libOSMesa, no EGL device, ...). Returns the MUJOCO_GL backend used."""
    import mujoco

    backend = offscreen_gl_backend()
    try:
        use_offscreen_gl()  # imports the backend's GL bindings: fails without its library
        model = mujoco.MjModel.from_xml_string(
            "<mujoco><worldbody><light pos='0 0 1'/><geom size='.1'/></worldbody></mujoco>")
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        with mujoco.Renderer(model, MACRO_BLOCK, MACRO_BLOCK) as renderer:
            renderer.update_scene(data)
            frame = renderer.render()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot render"
        raise UserError(f"offscreen rendering (MUJOCO_GL={backend}) "
                        f"failed: {type(e).__name__}: {e}; {INSTALL_HINT}") from e
    if not frame.any():
        raise UserError(f"offscreen rendering (MUJOCO_GL={backend}) gave a black frame; "
                        f"{INSTALL_HINT}")
    return backend


# ---- scenes of a batched env --------------------------------------------------------

def env_scenes(env: BatchedEnv) -> list[tuple]:
    """[(MjModel, MjData)] of every env of `env`, in env order, at its current state.

    Reference backend: the metaworld envs' own model and data (live, no copy). MJX
    backend: each task's host MjModel and its batched `mjx.Data` copied to MjData.
    """
    if hasattr(env, "metaworld_envs"):
        return [(e.model, e.data) for e in env.metaworld_envs]
    if hasattr(env, "states"):
        from cpd_jax.envs.mjx import host_env
        models = {t: host_env.get_env(t).mj_model for t in set(env.tasks)}
        return mjx_scenes(env.tasks, {t: s.data for t, s in env.states.items()}, models)
    raise UserError(f"cannot render a {type(env).__name__}: videos need the reference "
                    "or mjx env backend (env.backend)")


def mjx_scenes(tasks: Sequence[str], batched_data: dict, models: dict) -> list[tuple]:
    """[(MjModel, MjData)] per env i of `tasks` from {task: mjx.Data with a leading axis
    over that task's envs, in env order} (how `MjxHostEnv` groups them)."""
    import mujoco
    from mujoco import mjx

    scenes = [None] * len(tasks)
    for task, data in batched_data.items():
        model = models[task]
        per_env = mjx.get_data(model, data)  # a list: one MjData per env of the task
        ix = [i for i, t in enumerate(tasks) if t == task]
        for i, mj_data in zip(ix, per_env):
            # mjx.Data has no light (or camera) poses, so the copy's lights sit at the
            # origin and the scene renders dark; mj_camlight computes them from the body
            # poses alone (mj_kinematics would also redo the body poses from the shared
            # model, losing fixtures the env's reset moved through its own body_pos).
            mujoco.mj_camlight(model, mj_data)
            scenes[i] = (model, mj_data)
    return scenes


def free_camera(spec: VideoSpec):
    import mujoco

    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = spec.lookat
    camera.distance, camera.azimuth, camera.elevation = (spec.distance, spec.azimuth,
                                                         spec.elevation)
    return camera


def make_renderer(model, spec: VideoSpec):
    """A `mujoco.Renderer` for `model` at the spec's size, without shadows: on a software
    renderer the shadow pass triples the cost of a frame."""
    import mujoco

    renderer = mujoco.Renderer(model, spec.height, spec.width)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    return renderer


def frames_in_episode(steps: int, frame_every: int) -> int:
    """Frames `FrameRecorder` keeps of an episode of `steps` steps: the reset frame, one
    per `frame_every` steps, and the last step's when it is not on that grid."""
    return 1 + math.ceil(steps / frame_every)


class FrameRecorder:
    """A `BatchedEnv` that renders its envs while `closed_loop.rollout_success` drives it.

    Env i's frames (uint8[H, W, 3]) are `frames[i]`, with `succeeded[i]` (bool per
    frame: has the episode succeeded by then). A frame is taken after reset, after each
    step t (1-based) of env i that is active with t % frame_every == 0, and after its
    last step: step `num_steps`, or its first success when `stop_at_success` (then
    `rollout_success` stops stepping it). One renderer per env, built at the first
    reset and freed by `close()`.
    """

    def __init__(self, env: BatchedEnv, spec: VideoSpec, num_steps: int = MAX_EPISODE_STEPS,
                 stop_at_success: bool = True):
        self.tasks, self._env, self._spec = env.tasks, env, spec
        self._num_steps, self._stop_at_success = num_steps, stop_at_success
        self._camera = free_camera(spec)
        self._renderers = []
        self.frames: list[list[np.ndarray]] = []
        self.succeeded: list[list[bool]] = []

    def _record(self, which: np.ndarray, ever_succeeded: np.ndarray) -> None:
        if not which.any():
            return
        scenes = env_scenes(self._env)
        if not self._renderers:
            self._renderers = [make_renderer(model, self._spec) for model, _ in scenes]
        for i in np.flatnonzero(which):
            renderer = self._renderers[i]
            renderer.update_scene(scenes[i][1], camera=self._camera)
            self.frames[i].append(renderer.render().copy())
            self.succeeded[i].append(bool(ever_succeeded[i]))

    def reset(self, variations: Sequence[int]) -> np.ndarray:
        obs = self._env.reset(variations)
        n = len(self.tasks)
        self.frames, self.succeeded = [[] for _ in range(n)], [[] for _ in range(n)]
        self._t, self._ever = np.zeros(n, np.int64), np.zeros(n, bool)
        self._record(np.ones(n, bool), self._ever)
        return obs

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        active = np.ones(len(self.tasks), bool) if active is None else np.asarray(active)
        tr = self._env.step(actions, active)
        self._t += active
        self._ever |= tr.success & active
        last = (self._t == self._num_steps) | (self._stop_at_success & tr.success)
        due = active & ((self._t % self._spec.frame_every == 0) | last)
        self._record(due, self._ever)
        return tr

    def close(self) -> None:
        for renderer in self._renderers:
            renderer.close()
        self._renderers = []
        self._env.close()


# ---- recording episodes -------------------------------------------------------------

@dataclasses.dataclass
class Episode:
    """One recorded episode: frames uint8[F, H, W, 3], succeeded bool[F] (by that frame),
    success (the evaluation's: any step), steps run."""

    task: str
    variation: int
    success: bool
    steps: int
    frames: np.ndarray
    succeeded: np.ndarray


def record_episodes(make_env: Callable[[Sequence[str]], BatchedEnv], policy,
                    task: str, variations: Sequence[int], seq_len: int, spec: VideoSpec,
                    num_steps: int = MAX_EPISODE_STEPS,
                    stop_at_success: bool = True) -> list[Episode]:
    """Runs and renders one episode of `task` per variation, in one batch, through
    `closed_loop.rollout_success` (the evaluation's loop) with `policy(History) ->
    float32[B, 4]`."""
    from cpd_jax.evaluation import closed_loop

    recorder = FrameRecorder(make_env([task] * len(variations)), spec, num_steps,
                             stop_at_success)
    try:
        out = closed_loop.rollout_success(recorder, policy, variations, seq_len, num_steps,
                                          stop_at_success)
    finally:
        recorder.close()
    return [Episode(task=task, variation=int(v), success=bool(out["success"][i]),
                    steps=int(out["steps"][i]), frames=np.stack(recorder.frames[i]),
                    succeeded=np.asarray(recorder.succeeded[i]))
            for i, v in enumerate(variations)]


# ---- writing ------------------------------------------------------------------------

def with_status_bar(frames: np.ndarray, succeeded: np.ndarray) -> np.ndarray:
    """frames uint8[F, H, W, 3] with their bottom rows painted green where the episode
    has succeeded by that frame, grey before."""
    out = frames.copy()
    colour = np.where(succeeded[:, None], np.array([40, 200, 60], np.uint8),
                      np.array([128, 128, 128], np.uint8))
    out[:, -STATUS_BAR_PIXELS:] = colour[:, None, None, :]
    return out


def write_video(path: pathlib.Path, frames: np.ndarray, fps: float) -> None:
    """Writes frames uint8[F, H, W, 3] as an MP4 (H.264, imageio-ffmpeg) or a GIF,
    chosen by the path's suffix."""
    import imageio.v2 as imageio

    if path.suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1000.0 / fps, loop=0)
        return
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264",
                            macro_block_size=MACRO_BLOCK) as writer:
        for frame in frames:
            writer.append_data(frame)


def contact_sheet_grid(rows: Sequence[np.ndarray], columns: int = SHEET_COLUMNS,
                       downsample: int = 1) -> np.ndarray:
    """uint8[R * h, columns * w, 3] with h, w = ceil(H / downsample), ceil(W / downsample):
    for each row's frames uint8[F, H, W, 3], `columns` frames evenly spaced from the
    first to the last (repeats when F < columns)."""
    picked = []
    for frames in rows:
        idx = np.linspace(0, len(frames) - 1, columns).round().astype(int)
        small = frames[idx, ::downsample, ::downsample]
        picked.append(np.concatenate(list(small), axis=1))
    return np.concatenate(picked, axis=0)


def write_contact_sheet(path: pathlib.Path, episodes: Sequence[Episode],
                        columns: int = SHEET_COLUMNS) -> None:
    """PNG of tasks x time: one row per episode, labelled with task, goal and success."""
    import matplotlib
    matplotlib.use("Agg")  # headless: files only, no display
    import matplotlib.pyplot as plt

    grid = contact_sheet_grid([e.frames for e in episodes], columns, SHEET_DOWNSAMPLE)
    h = grid.shape[0] // len(episodes)
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 100 + 2.2, grid.shape[0] / 100 + 0.5),
                           dpi=100)
    ax.imshow(grid)
    ax.set_yticks([h * (i + 0.5) for i in range(len(episodes))])
    ax.set_yticklabels([f"{e.task}\ngoal {e.variation}: "
                        f"{'success' if e.success else 'failure'}" for e in episodes])
    ax.set_xticks([])
    ax.set_xlabel("time (first to last step of the episode) →")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_videos(out_dir, episodes_by_task: dict, spec: VideoSpec) -> dict:
    """Writes <task>.<format> per task, contact_sheet.png (the first episode of each
    task) and videos.json (returned): {"fps", "frame_every", "height", "width",
    "tasks": {task: {"video", "episodes": [{variation, success, steps, frames,
    first_frame}]}}}."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"fps": spec.fps, "frame_every": spec.frame_every, "height": spec.height,
                "width": spec.width, "tasks": {}}
    for task, episodes in episodes_by_task.items():
        name = f"{task}.{spec.format}"
        frames = np.concatenate([with_status_bar(e.frames, e.succeeded) for e in episodes])
        write_video(out_dir / name, frames, spec.fps)
        starts = np.cumsum([0] + [len(e.frames) for e in episodes])
        manifest["tasks"][task] = {"video": name, "episodes": [
            {"variation": e.variation, "success": e.success, "steps": e.steps,
             "frames": len(e.frames), "first_frame": int(start)}
            for e, start in zip(episodes, starts)]}
    write_contact_sheet(out_dir / "contact_sheet.png",
                        [episodes[0] for episodes in episodes_by_task.values()])
    (out_dir / "videos.json").write_text(json.dumps(manifest, indent=2))
    return manifest


# ---- a checkpoint's videos (the CLI) ------------------------------------------------

def student_policy_from_checkpoint(checkpoint_dir):
    """(policy History -> float32[B, 4], the run's config, its metadata), restored like
    `--mode=eval` restores it (expert count from the checkpoint)."""
    from cpd_jax import evaluate_checkpoint
    from cpd_jax.continual.encoder import embed_fn_for
    from cpd_jax.evaluation import closed_loop
    from cpd_jax.student import make_student

    saved_config, params, obs_norm, meta, encoder = evaluate_checkpoint.restore_student(
        checkpoint_dir)
    model = make_student(saved_config)  # the checkpoint's expert count (restore_student)
    policy = closed_loop.student_policy(model, params, saved_config.student.task_context,
                                        embed_fn=embed_fn_for(encoder),
                                        obs_norm=obs_norm)
    return policy, saved_config, meta


def render_checkpoint_videos(config, checkpoint_dir, out_dir, tasks=None) -> dict:
    """Videos of a continual run's saved student on `tasks` (default: every task it has
    seen): the first `video.episodes_per_task` goals of `config.eval`'s protocol, on
    `config.env.backend`. Returns the videos.json manifest."""
    from absl import logging

    from cpd_jax import evaluate_checkpoint
    from cpd_jax.config_checks import check_tasks
    from cpd_jax.envs import make_env
    from cpd_jax.evaluation import protocol

    check_video_config(config.video, config.eval.episodes_per_task)
    evaluate_checkpoint.check_checkpoint(checkpoint_dir)
    backend = check_rendering()
    policy, saved_config, meta = student_policy_from_checkpoint(checkpoint_dir)
    tasks = check_tasks(tasks if tasks is not None
                        else evaluate_checkpoint.seen_tasks(saved_config, meta), "--eval_tasks")
    variations = protocol.eval_variations(config)[:config.video.episodes_per_task]
    spec = VideoSpec.from_config(config.video)
    episodes = {}
    for done, task in enumerate(tasks):
        episodes[task] = record_episodes(
            lambda ts: make_env(config.env.backend, ts), policy, task, variations,
            saved_config.student.seq_len, spec, stop_at_success=config.eval.stop_at_success)
        logging.info("video %d/%d: %s, success %s", done + 1, len(tasks), task,
                     [e.success for e in episodes[task]])
    manifest = write_videos(out_dir, episodes, spec)
    logging.info("videos (MUJOCO_GL=%s) written to %s", backend, out_dir)
    return manifest
