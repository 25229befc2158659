"""Progress lines for long steps: done / total, rate and ETA, and compile notices.

One home for the wording of progress lines, so every long step of a run (data
collection, compile, training, evaluation, PPO chunks) reports the same way:

    <label>: 200/4000 steps (5%), 35.2 steps/s, ETA 1m48s | <detail>

`Progress` measures the rate from its own start (or the first `update` a caller marks
as the start), so a compile before it does not slow the reported rate down. The pure
pieces (`rate`, `eta_seconds`, `format_duration`, `progress_line`) are tested with a
fake clock.
"""

import contextlib
import time
import weakref
from typing import Callable

import jax
from absl import logging


def rate(done: float, elapsed_s: float) -> float:
    """Units per second; 0 before any time has passed (no division by zero)."""
    return done / elapsed_s if elapsed_s > 0 else 0.0


def eta_seconds(done: float, total: float, elapsed_s: float,
                done_at_start: float = 0) -> float | None:
    """Seconds left at the rate so far: `elapsed_s` is the time taken by the units done
    since the start (`done - done_at_start`). None while there is no rate yet, 0 once
    done >= total."""
    if done >= total:
        return 0.0
    per_second = rate(done - done_at_start, elapsed_s)
    return None if per_second <= 0 else (total - done) / per_second


def format_duration(seconds: float | None) -> str:
    """'45s', '12m05s', '3h07m'; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(label: str, done: float, total: float, unit: str, elapsed_s: float,
                  detail: str = "", done_at_start: float = 0) -> str:
    """'<label>: 200/4000 steps (5%), 35.2 steps/s, ETA 1m48s | <detail>' (rate and ETA
    from the units done since the start, see `eta_seconds`)."""
    share = 100.0 * done / total if total else 100.0
    per_second = rate(done - done_at_start, elapsed_s)
    left = eta_seconds(done, total, elapsed_s, done_at_start)
    line = (f"{label}: {done:,.0f}/{total:,.0f} {unit} ({share:.0f}%), "
            f"{per_second:,.1f} {unit}/s, ETA {format_duration(left)}")
    return f"{line} | {detail}" if detail else line


class Progress:
    """Counts `total` units of one step of a run and logs done / total, rate and ETA.

    clock: seconds, monotonic (a fake one in tests). log: where lines go (absl's
    logging.info by default; the PPO runner passes its own `log`).
    `restart(done)`: measure the rate from now, with `done` units already done before
    it (the distillation loop restarts after its first step, which compiles, so the
    compile does not drag the rate and the ETA down).
    """

    def __init__(self, label: str, total: float, unit: str = "steps",
                 clock: Callable[[], float] = time.monotonic, log: Callable = logging.info):
        self.label, self.total, self.unit = label, total, unit
        self._clock, self._log = clock, log
        self.restart(0)

    def restart(self, done: float = 0) -> None:
        self._start, self._done_at_start = self._clock(), done

    def rate(self, done: float) -> float:
        """Units per second since the start."""
        return rate(done - self._done_at_start, self._clock() - self._start)

    def line(self, done: float, detail: str = "") -> str:
        return progress_line(self.label, done, self.total, self.unit,
                             self._clock() - self._start, detail, self._done_at_start)

    def update(self, done: float, detail: str = "") -> str:
        """Logs and returns the progress line at `done` units."""
        text = self.line(done, detail)
        self._log(text)
        return text


@contextlib.contextmanager
def timed(what: str, log: Callable = logging.info, clock: Callable[[], float] = time.monotonic):
    """Logs `what` before a step of unknown length and its duration after it."""
    log(f"{what} ...")
    start = clock()
    yield
    log(f"{what}: done in {format_duration(clock() - start)}")


def compile_cache_note() -> str:
    """Where the compiled program will be kept for the next run (JAX's persistent
    compilation cache, which `cpd_jax.main` turns on: `cpd_jax.cache`)."""
    directory = jax.config.jax_compilation_cache_dir
    if not directory:
        return "no persistent compile cache: cpd_jax.main turns it on"
    return f"cached in the persistent compile cache {directory} for the next run"


# Functions whose first call has been announced: a train step reused by a later
# `distill` call (the joint learning curve) is not announced as compiling again.
_CALLED = weakref.WeakSet()


def log_first_call(fn: Callable, what: str, log: Callable = logging.info,
                   clock: Callable[[], float] = time.monotonic) -> Callable:
    """`fn` that, on its first call, says it is compiling `what` and, once the result
    is ready, how long compile + that call took; later calls go straight to `fn`.

    The first call of a jitted function is where XLA compiles it: minutes for an MJX
    program on a CPU, which would otherwise look like a hang. Waiting for the result
    (`block_until_ready`) changes no value, only when the line is written.
    """

    def wrapped(*args, **kwargs):
        if fn in _CALLED:
            return fn(*args, **kwargs)
        _CALLED.add(fn)
        log(f"compiling {what} on its first call ({compile_cache_note()})")
        start = clock()
        out = jax.block_until_ready(fn(*args, **kwargs))
        log(f"{what}: compiled and ran once in {format_duration(clock() - start)}")
        return out

    return wrapped
