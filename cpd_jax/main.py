"""Entry point: `python -m cpd_jax.main --config=cpd_jax/configs/quickstart.py --workdir=DIR`.

Config fields are overridden with `--config.a.b=value`; the config is locked, so a
misspelt field is an error that names it. `--mode=eval --restore=<checkpoint dir>`
evaluates a saved student on `--eval_tasks` (default: the tasks it has seen; --restore
defaults to <workdir>/checkpoints). `--video` also renders episodes of the saved student
into <workdir>/videos (`cpd_jax.evaluation.video`; after a run with video.at_end).

A user mistake (`cpd_jax.errors.UserError`: a config value out of range, an unknown task,
a checkpoint that is not the run's, a diverged loss) prints one line, `error: ...`, and
exits with code 2; `--traceback` shows the Python traceback instead.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cpd_jax import config_checks
from cpd_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, checkpoints, results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (and evaluate), or only evaluate a restored checkpoint.")
_RESTORE = flags.DEFINE_string("restore", None, "Checkpoint directory for --mode=eval "
                               "(default: <workdir>/checkpoints).")
_VIDEO = flags.DEFINE_bool("video", False, "Also render videos of the saved student into "
                           "<workdir>/videos (settings: --config.video.*).")
_EVAL_TASKS = flags.DEFINE_list("eval_tasks", None, "Tasks to evaluate in --mode=eval.")
_TRACEBACK = flags.DEFINE_bool("traceback", False,
                                "On a user error, raise it with its traceback instead of "
                                "printing one line.")
flags.mark_flags_as_required(["config", "workdir"])
USER_ERROR_EXIT_CODE = 2  # as for a command-line usage error


def run(config):
    """Checks the config and the command, then runs the mode / protocol."""
    config_checks.check_config(config)  # before any data, compilation or JAX call
    from cpd_jax import checkpointing
    checkpointing.quiet_orbax_logs()
    if _EVAL_TASKS.value:
        config_checks.check_tasks(_EVAL_TASKS.value, "--eval_tasks")
    from cpd_jax import parallel
    if config.protocol != "teachers":  # teachers share no array: each process is its own
        parallel.maybe_initialize_distributed(config)  # before any other JAX call
    from cpd_jax.cache import enable_compilation_cache
    enable_compilation_cache()  # a resumed job reads its compiled programs back
    logging.info("config:\n%s", config)
    want_video = _VIDEO.value or config.video.at_end
    if want_video:
        from cpd_jax.evaluation import video
        video.check_video_request(config, _MODE.value)  # before any data or training
    checkpoints = _RESTORE.value or os.path.join(_WORKDIR.value, "checkpoints")
    if _MODE.value == "eval":
        from cpd_jax import evaluate_checkpoint
        evaluate_checkpoint.run(config, checkpoints, _WORKDIR.value, _EVAL_TASKS.value)
    elif config.protocol == "joint":
        from cpd_jax import pipeline  # after flag parsing: keeps --help fast
        pipeline.train_and_evaluate(config, _WORKDIR.value)
    elif config.protocol == "teachers":
        from cpd_jax.rl.ppo import runner
        logging.info("teachers written to %s", runner.train_teachers(config, _WORKDIR.value))
    elif config.protocol == "stages":
        from cpd_jax.continual import stages
        stages.run_continual(config, _WORKDIR.value)
    else:
        raise app.UsageError(f"unknown protocol {config.protocol!r}; use joint, stages or "
                             "teachers")
    if want_video and parallel.is_main_process():  # one process renders, as it writes
        video.render_checkpoint_videos(config, checkpoints,
                                       os.path.join(_WORKDIR.value, "videos"), _EVAL_TASKS.value)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        run(_CONFIG.value)
    except UserError as e:
        if _TRACEBACK.value:
            raise
        # One line, last on stderr (after any log lines), so a wrapper can show it as is.
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT_CODE)


if __name__ == "__main__":
    app.run(main)
