"""Entry point: `python -m cpd_jax.main --config=cpd_jax/configs/quickstart.py --workdir=DIR`.

Config fields are overridden with `--config.a.b=value`; the config is locked, so a
misspelt field is an error that names it. `--mode=eval --restore=<checkpoint dir>`
evaluates a saved student on `--eval_tasks` (default: the tasks it has seen).
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, checkpoints, results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train (and evaluate), or only evaluate a restored checkpoint.")
_RESTORE = flags.DEFINE_string("restore", None, "Checkpoint directory for --mode=eval.")
_EVAL_TASKS = flags.DEFINE_list("eval_tasks", None, "Tasks to evaluate in --mode=eval.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    from cpd_jax import parallel
    parallel.maybe_initialize_distributed(config)  # before any other JAX call
    from cpd_jax.cache import enable_compilation_cache
    enable_compilation_cache()  # a resumed job reads its compiled programs back
    logging.info("config:\n%s", config)
    if _MODE.value == "eval":
        from cpd_jax import evaluate_checkpoint
        if not _RESTORE.value:
            raise app.UsageError("--mode=eval needs --restore=<checkpoint directory>")
        evaluate_checkpoint.run(config, _RESTORE.value, _WORKDIR.value, _EVAL_TASKS.value)
    elif config.protocol == "joint":
        from cpd_jax import pipeline  # after flag parsing: keeps --help fast
        pipeline.train_and_evaluate(config, _WORKDIR.value)
    elif config.protocol == "teachers":
        from cpd_jax.teachers import ppo_runner
        logging.info("teachers written to %s", ppo_runner.train_teachers(config, _WORKDIR.value))
    elif config.protocol == "stages":
        from cpd_jax.continual import stages
        stages.run_continual(config, _WORKDIR.value)
    else:
        raise app.UsageError(f"unknown protocol {config.protocol!r}; use joint, stages or "
                             "teachers")


if __name__ == "__main__":
    app.run(main)
