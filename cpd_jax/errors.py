"""The user-facing error: a config or command-line mistake, not a bug.

`python -m cpd_jax.main` prints a `UserError` as one line, `error: <message>`, and exits
with code 2 (no traceback unless `--traceback`). The message names the field or cause and
the fix. It subclasses ValueError so callers that catch ValueError keep working.
"""


class UserError(ValueError):
    """A mistake the user can fix (config value, task name, checkpoint, data dir)."""
