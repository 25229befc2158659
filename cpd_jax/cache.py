"""Where cpd_jax keeps caches: `$CPD_JAX_CACHE`, default `~/.cache/cpd_jax`.

Holds the MT50 variation vectors (`envs/variations.py`) and JAX's persistent
compilation cache (`jax_cc/`): MJX programs take minutes to compile on a CPU, so a
resumed or repeated job reads them back instead.
"""

import os
import pathlib


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CPD_JAX_CACHE", os.path.expanduser("~/.cache/cpd_jax")))


def enable_compilation_cache() -> None:
    """Turns on JAX's persistent compilation cache under `cache_root()/jax_cc`, unless
    `JAX_COMPILATION_CACHE_DIR` already names one (then JAX uses that)."""
    import jax

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax_cc"))
