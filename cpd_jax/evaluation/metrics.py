"""Continual-learning metrics on the accuracy matrix (pure numpy).

Conventions (shared by every function here):

  R              float[S, T]  R[i, j] = success rate on task j after stage i, in [0, 1].
                              NaN where task j was not evaluated after stage i (normally:
                              not yet introduced). Stages are 0-based: the paper's
                              "stage 1" is row 0.
  stage_of_task  int[T]       the stage that introduced task j (its "own" stage). Values
                              >= S are allowed for tasks of stages not yet run (a partial
                              R of a run in progress).

Definitions (paper §5 / PAPER_RESULTS.md, per-task columns):

  Acc(k)            = mean_{j: sot[j] <= k} R[k, j]
  BWT(k)            = mean_{j: sot[j] <  k} (R[k, j] - R[sot[j], j])      (NaN at k = 0)
  MaxForgetting(k)  = max_{j: sot[j] < k} (max_{sot[j] <= i < k} R[i, j] - R[k, j])
  teacher recovery  = sum_j student[j] / sum_j teacher[j]   (ratio of mean successes)
  Continual World's average performance / forgetting / forward transfer (against a
  reference learner's per-task success): `continual_world`.
"""

from typing import Optional, Sequence

import numpy as np


def _check(R, stage_of_task=None):
    """Validates shapes; every entry of a task at or after its own stage must be finite."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2:
        raise ValueError(f"R must be float[S, T], got shape {R.shape}")
    if stage_of_task is None:
        return R, None
    sot = np.asarray(stage_of_task)
    if sot.shape != (R.shape[1],) or not np.issubdtype(sot.dtype, np.integer):
        raise ValueError(f"stage_of_task must be int[{R.shape[1]}], got {sot.dtype}{sot.shape}")
    if np.any(sot < 0):
        raise ValueError(f"stage_of_task has negative stages: {sot.tolist()}")
    seen = np.arange(R.shape[0])[:, None] >= sot[None, :]
    missing = np.argwhere(seen & ~np.isfinite(R))
    if missing.size:
        raise ValueError("R has no finite value for seen (stage, task) entries "
                         f"{[tuple(map(int, m)) for m in missing[:10]]}")
    return R, sot


def _check_stage(R, stage):
    if not 0 <= stage < R.shape[0]:
        raise IndexError(f"stage {stage} outside 0..{R.shape[0] - 1}")


def average_accuracy(R, stage: int, stage_of_task=None) -> float:
    """Acc after `stage`: mean of R[stage, j] over the tasks seen by then.

    Seen = `stage_of_task[j] <= stage` when given, else the finite entries of the row.
    """
    R, sot = _check(R, stage_of_task)
    _check_stage(R, stage)
    row = R[stage]
    seen = (sot <= stage) if sot is not None else np.isfinite(row)
    if not np.any(seen):
        return float("nan")
    return float(np.mean(row[seen]))


def average_incremental_accuracy(R, stage_of_task, stage: int) -> float:
    """Mean of Acc after stages 0..`stage` (Rebuffi et al., iCaRL): unlike the final Acc,
    it counts a task forgotten at one stage and relearned from replay at a later one."""
    R, sot = _check(R, stage_of_task)
    _check_stage(R, stage)
    return float(np.mean([average_accuracy(R, k, sot) for k in range(stage + 1)]))


def backward_transfer(R, stage_of_task, stage: int) -> float:
    """BWT after `stage`: mean over tasks introduced before `stage` of R[stage,j] - R[own,j].

    NaN when no task was introduced before `stage` (always at stage 0). Negative = forgetting.
    """
    R, sot = _check(R, stage_of_task)
    _check_stage(R, stage)
    old = np.flatnonzero(sot < stage)
    if old.size == 0:
        return float("nan")
    return float(np.mean(R[stage, old] - R[sot[old], old]))


def new_task_accuracy(R, stage_of_task, stage: int) -> float:
    """Plasticity at `stage`: mean success of the tasks introduced at `stage`, right after
    it (mean_j R[stage, j] over sot[j] == stage). NaN when the stage introduced no task."""
    R, sot = _check(R, stage_of_task)
    _check_stage(R, stage)
    new = np.flatnonzero(sot == stage)
    return float(np.mean(R[stage, new])) if new.size else float("nan")


def max_forgetting(R, stage_of_task, stage: int) -> float:
    """Largest drop of any earlier task from its best past value to its value at `stage`.

    For j with sot[j] < stage: max_{sot[j] <= i < stage} R[i, j] - R[stage, j]; the max over
    j. Can be negative (every old task improved). NaN when no earlier task exists.
    """
    R, sot = _check(R, stage_of_task)
    _check_stage(R, stage)
    old = np.flatnonzero(sot < stage)
    if old.size == 0:
        return float("nan")
    drops = [np.max(R[sot[j]:stage, j]) - R[stage, j] for j in old]
    return float(np.max(drops))


def teacher_recovery(student_acc, teacher_acc) -> float:
    """How much of the teachers' success the student keeps: sum(student) / sum(teacher).

    student_acc, teacher_acc: float[T] per-task success rates of the same tasks. A ratio of
    means (not a mean of ratios) so tasks the teacher barely solves cannot dominate.
    NaN when the teachers never succeed.
    """
    s = np.asarray(student_acc, np.float64)
    t = np.asarray(teacher_acc, np.float64)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"student/teacher success must both be float[T]; got {s.shape}, {t.shape}")
    total = np.sum(t)
    return float(np.sum(s) / total) if total > 0 else float("nan")


def continual_world(R, stage_of_task, reference=None) -> dict:
    """Continual World's metrics (Wołczyk et al. 2021, §3.2) after the last row of R, so
    results read against the CW10/CW20 literature. Over ALL tasks seen by then:

      average_performance = mean_j R[-1, j]                        (= the final Acc)
      forgetting          = mean_j (R[sot[j], j] - R[-1, j])       (the last stage's tasks
                            count 0, as in CW; -BWT averages over earlier tasks only)
      forward_transfer    = mean_j (R[sot[j], j] - ref[j]), ref = a reference learner's
                            success on task j trained without the earlier tasks (our
                            "independent" row); NaN without a reference.
    CW's FT is normalised, (AUC_j - AUC_ref) / (1 - AUC_ref), over the area under task j's
    training curve. The runs evaluate once per stage, so the end-of-stage success stands
    in for the AUC, and then the normalisation is unbounded (a reference of 0.95 turns a
    45-point drop into -900%): we report the numerator. Positive FT = earlier tasks
    helped learn task j; positive forgetting = forgetting.
    """
    R, sot = _check(R, stage_of_task)
    last = R.shape[0] - 1
    seen = np.flatnonzero(sot <= last)
    own = R[sot[seen], seen]
    out = {"average_performance": float(np.mean(R[last, seen])),
           "forgetting": float(np.mean(own - R[last, seen])),
           "forward_transfer": float("nan")}
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        if ref.shape != (R.shape[1],):
            raise ValueError(f"reference must be float[{R.shape[1]}], got shape {ref.shape}")
        out["forward_transfer"] = float(np.mean(own - ref[seen]))
    return out


def summarize(R, stage_of_task) -> list[dict]:
    """Per-stage metrics: [{"stage", "num_tasks", "Acc", "BWT", "MaxForgetting"}] for each row.

    BWT and MaxForgetting are NaN at stage 0.
    """
    R, sot = _check(R, stage_of_task)
    return [{"stage": k, "num_tasks": int(np.sum(sot <= k)),
             "Acc": average_accuracy(R, k, sot),
             "BWT": backward_transfer(R, sot, k),
             "MaxForgetting": max_forgetting(R, sot, k)} for k in range(R.shape[0])]


def stage_of_task_from_stages(stages: Sequence[Sequence[str]],
                              tasks: Optional[Sequence[str]] = None) -> np.ndarray:
    """int[T] from a stage list like [["reach", "push"], ["door"]] (tasks in stage order).

    `tasks` fixes the column order (default: stage order); each task in exactly one stage.
    """
    owner = {}
    for k, stage_tasks in enumerate(stages):
        for t in stage_tasks:
            if t in owner:
                raise ValueError(f"task {t!r} appears in stages {owner[t]} and {k}")
            owner[t] = k
    tasks = list(owner) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in owner]
    if unknown:
        raise ValueError(f"tasks not in any stage: {unknown}")
    return np.array([owner[t] for t in tasks], np.int64)
