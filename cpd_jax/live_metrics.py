"""Live metrics: the scalars a job computes anyway, written while it runs to TensorBoard
event files in its workdir (tensorboardX) and, if asked, to Weights & Biases.

    tensorboard --logdir runs        # every run's <workdir>/tb, live

Config, the `log` block (configs/default.py, which every config derives from):
  log.tensorboard    event files under `<workdir>/tb` (default True)
  log.wandb          also log the same scalars with wandb (default False); wandb is not a
                     dependency: without it installed the job stops before any work
                     with one line naming the package
  log.wandb_mode     "offline" (default: a run directory under `<workdir>/wandb`,
                     uploaded later by `wandb sync`) or "online"
  log.wandb_project  the W&B project name

Tags and their step (x axis). One rule: **the step of a distillation run is the number
of gradient steps taken so far in the whole run**. A continual run keeps counting across
stages and phases (stage k starts where stage k-1 ended; the stage lengths are kept in
the checkpoint, so a resumed run carries on from the right step), so successive stages'
curves follow each other instead of overlapping, and every tag of a run shares one
x axis. Stage-level scalars are written at the step at which their stage (or phase)
ended; `continual/stage` says which stage that was.

  distill/{loss,mse,aux_loss,aux_coef,grad_norm,penalty}, distill/steps_per_s
        every `distill.log_every` steps (joint and continual)
  success/<task>, success/mean
        held-out closed-loop success: joint at every `eval.curve_steps` point and at the
        end; continual at the end of each stage for every task seen so far (row k of R)
  continual/{Acc,BWT,MaxForgetting,num_experts,stage}
        end of each stage (BWT and MaxForgetting from stage 2 on)
  heldout_mse/<task>
        the student's MSE on held-out teacher actions, end of each phase
  ppo/<task>/{eval_success,eval_return,train_success,train_return,entropy,approx_kl,...}
        PPO teachers, every eval period, step = the task's env steps; the values come
        back from the jitted chunk as its per-period metrics (no host callback inside
        the scan), and the host writes them after each chunk
  ppo/<group>/env_steps_per_s
        per chunk (the first chunk's includes its compile)

Only process 0 writes (multi-host runs). A resumed run appends a new event file to the
same `tb/`; TensorBoard reads them as one run (a stage that was cut short and re-run
shows its steps twice).
"""

import math
import pathlib
from typing import Any, Mapping

from cpd_jax.errors import UserError

TENSORBOARD_DIR = "tb"
WANDB_MODES = ("offline", "online")


def tensorboard_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / TENSORBOARD_DIR


def plain_scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """{tag: float} of `values` without the None entries (a metric not defined at this
    point, e.g. BWT at stage 1). NaN is kept: it is a value the run computed."""
    return {tag: float(v) for tag, v in values.items() if v is not None}


def success_scalars(per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """`success/<task>` and `success/mean` from an evaluation's
    {task: {"success_rate": ...}} (`closed_loop.evaluate_student`)."""
    rates = {t: float(r["success_rate"]) for t, r in per_task.items()}
    out = {f"success/{t}": v for t, v in rates.items()}
    if rates:
        out["success/mean"] = math.fsum(rates.values()) / len(rates)
    return out


class _TensorBoardSink:
    """tensorboardX event files, opened at the first scalar (a run refused by its
    config checks leaves no empty event file behind)."""

    def __init__(self, logdir: pathlib.Path):
        self._logdir, self._writer = logdir, None

    def write(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(logdir=str(self._logdir))
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, global_step=step)
        # Every call: log points are seconds apart, and a live curve must reach the disk.
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def import_wandb():
    """The wandb module, or a UserError naming the package (it is optional)."""
    try:
        import wandb
    except ImportError:
        raise UserError("log.wandb=True needs the wandb package, which is not installed: "
                        "pip install wandb, or drop --config.log.wandb") from None
    return wandb


class _WandbSink:
    """wandb.log of the same scalars. Our step goes in as the metric `step` (every tag
    is plotted against it), not as wandb's own step: that one must only increase, while
    a teachers job restarts env steps at 0 for each env group."""

    def __init__(self, workdir: pathlib.Path, mode: str, project: str, config_dict: dict):
        if mode not in WANDB_MODES:
            raise UserError(f"log.wandb_mode={mode!r}; choose one of {WANDB_MODES}")
        self._wandb = import_wandb()  # now: before the job does any work
        self._init = dict(project=project, dir=str(workdir), mode=mode,
                          name=workdir.name, config=config_dict)
        self._run = None

    def write(self, step: int, values: dict[str, float]) -> None:
        if self._run is None:
            pathlib.Path(self._init["dir"]).mkdir(parents=True, exist_ok=True)
            self._run = self._wandb.init(**self._init)
            self._run.define_metric("step")
            self._run.define_metric("*", step_metric="step")
        self._run.log({**values, "step": step})

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()


class MetricWriter:
    """`scalars(step, {tag: value})` to every enabled sink; with none, a no-op.

    Use as a context manager (or call `close`) so event files and the W&B run are
    finished when the job ends or fails.
    """

    def __init__(self, sinks=()):
        self._sinks = list(sinks)

    @property
    def enabled(self) -> bool:
        return bool(self._sinks)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        values = plain_scalars(values)
        if values:
            for sink in self._sinks:
                sink.write(int(step), values)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self._sinks = []

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


DISABLED = MetricWriter()  # the writer of code called without one (tests, libraries)


def make_writer(config, workdir) -> MetricWriter:
    """The writer `config.log` asks for, writing under `workdir`. A config without a
    `log` block (one saved before it existed) writes nothing; so does every process but
    the first of a multi-host run."""
    log = config.get("log") if hasattr(config, "get") else None
    if log is None:
        return MetricWriter()
    import jax
    if jax.process_index() != 0:
        return MetricWriter()
    workdir = pathlib.Path(workdir)
    sinks = []
    if log.wandb:  # first: a missing package stops the job before anything is written
        sinks.append(_WandbSink(workdir, log.wandb_mode, log.wandb_project,
                                config.to_dict()))
    if log.tensorboard:
        sinks.append(_TensorBoardSink(tensorboard_dir(workdir)))
    return MetricWriter(sinks)
