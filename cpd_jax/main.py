"""Entry point: `python -m cpd_jax.main --config=cpd_jax/configs/quickstart.py --workdir=DIR`.

Config fields are overridden with `--config.a.b=value`; the config is locked, so a
misspelt field is an error that names it.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for data, checkpoints, results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from cpd_jax import pipeline  # after flag parsing: keeps --help fast

    logging.info("config:\n%s", _CONFIG.value)
    pipeline.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
