"""Parameter freezing as an optimizer concern (paper §4.5), with optax labels.

Every leaf of the student's params gets one label (`label_params`):

  backbone        embed (observation projection), pos_embed, attention, layer norms,
                  final norm, action head
  task_context    the student's task-context projection (`Student` doc): trainable at
                  every stage (§4.5 keeps "the Task Embedding module" trainable); which
                  of its rows move is the stage loop's choice (`frozen_mask`
                  context_rows: with one-hot context, the rows of the stage's tasks)
  gate            router columns `moe/gate_e/{kernel, bias}` with e >= num_old_experts
  old_gate        router columns of the experts that existed before this stage
  old_expert      `moe/expert_e` with e < num_old_experts (existed before this stage)
  new_expert      `moe/expert_e` with e >= num_old_experts (added this stage; in
                  stage 1, num_old_experts = 0, so every expert is "new")

`make_optimizer` builds `optax.multi_transform` with one AdamW per trainable label and
`optax.set_to_zero()` per frozen label. Why this gives bitwise-frozen leaves:

* set_to_zero returns exact zeros and keeps no state, so neither weight decay nor a
  momentum accumulated while the leaf was trainable can reach it;
* every (stage, phase) builds its optimizer and a fresh state (`tx.init`), so a leaf
  frozen in this phase has no moments anywhere in the state;
* `distillation.apply_updates` returns a frozen leaf as the same array (no `p + 0.0`,
  which is bitwise equal to `p` for every value except -0.0, which becomes +0.0).

Schedules (`trainable_labels`), stage >= 2, with `backbone`:

  "frozen"      §4.5: the backbone is frozen for good after stage 1 (paper default)
  "phase2"      Algorithm 1, line 19: frozen in phase 1, trained in phase 2
  "trainable"   the "No Shared-Frozen" ablation: trained in every phase

    phase 1     gate + new experts train, old experts frozen
    phase 2     gate frozen, all experts train
  freeze_gating=False   ("No Freeze-Gating" ablation) one phase: gate + all experts
  old_experts="frozen"  (an extension, not the paper's) an expert and its router column
                        never train after the stage that created them: old tasks keep
                        their routes among old experts exactly, and only the new
                        experts' columns learn where the new tasks go

Stage 1 trains everything; the task context trains in every phase of every stage.
"""

from typing import Iterable

import numpy as np
import optax
from flax import traverse_util

from cpd_jax.student.transformer import TASK_CONTEXT as TASK_CONTEXT_KEY

BACKBONE = "backbone"
TASK_CONTEXT = "task_context"
GATE = "gate"
OLD_GATE = "old_gate"
OLD_EXPERT = "old_expert"
NEW_EXPERT = "new_expert"
LABELS = (BACKBONE, TASK_CONTEXT, GATE, OLD_GATE, OLD_EXPERT, NEW_EXPERT)
BACKBONE_SCHEDULES = ("frozen", "phase2", "trainable")
OLD_EXPERT_SCHEDULES = ("phase2", "frozen")


def _leaf_label(path: tuple[str, ...], num_old_experts: int) -> str:
    if path[0] == TASK_CONTEXT_KEY:
        return TASK_CONTEXT
    if "moe" in path:
        node = path[path.index("moe") + 1]
        kind, _, index = node.rpartition("_")
        if kind == "gate":
            return OLD_GATE if int(index) < num_old_experts else GATE
        if kind == "expert":
            return OLD_EXPERT if int(index) < num_old_experts else NEW_EXPERT
        raise ValueError(f"unexpected MoE parameter {'/'.join(path)}")
    return BACKBONE


def label_params(params, num_old_experts: int):
    """Pytree of label strings with the structure of `params` (a nested dict).

    num_old_experts: experts that existed before this stage's expansion (0 in stage 1).
    """
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {path: _leaf_label(path, num_old_experts) for path in flat})


def phases(stage: int, freeze_gating: bool = True) -> tuple[int, ...]:
    """The training phases of `stage` (1-based): (1, 2) from stage 2 with freeze-gating,
    else a single phase (1,)."""
    return (1, 2) if stage >= 2 and freeze_gating else (1,)


def check_schedule(backbone: str, freeze_gating: bool, old_experts: str = "phase2") -> None:
    """Names a schedule that does not exist or cannot apply."""
    if backbone not in BACKBONE_SCHEDULES:
        raise ValueError(f"unknown continual.backbone {backbone!r}; choose from "
                         f"{BACKBONE_SCHEDULES}")
    if old_experts not in OLD_EXPERT_SCHEDULES:
        raise ValueError(f"unknown continual.old_experts {old_experts!r}; choose from "
                         f"{OLD_EXPERT_SCHEDULES}")
    if backbone == "phase2" and not freeze_gating:
        raise ValueError("continual.backbone='phase2' needs the two phases of "
                         "continual.freeze_gating=True")


def trainable_labels(stage: int, phase: int, backbone: str = "frozen",
                     freeze_gating: bool = True, old_experts: str = "phase2"
                     ) -> frozenset[str]:
    """Labels that train in (stage, phase); stage and phase are 1-based."""
    check_schedule(backbone, freeze_gating, old_experts)
    if stage < 1 or phase not in phases(stage, freeze_gating):
        raise ValueError(f"stage {stage} has phases {phases(max(stage, 1), freeze_gating)}, "
                         f"got phase {phase}")
    if stage == 1:
        return frozenset(LABELS)
    labels = {TASK_CONTEXT}
    if backbone == "trainable" or (backbone == "phase2" and phase == 2):
        labels.add(BACKBONE)
    if not freeze_gating:
        labels |= {GATE, OLD_EXPERT, NEW_EXPERT}
    elif phase == 1:
        labels |= {GATE, NEW_EXPERT}
    else:
        labels |= {OLD_EXPERT, NEW_EXPERT}
    if GATE in labels and old_experts != "frozen":
        labels.add(OLD_GATE)  # the router trains as a whole
    if old_experts == "frozen":
        labels.discard(OLD_EXPERT)
    return frozenset(labels)


def make_optimizer_from_labels(labels, trainable: Iterable[str], learning_rate,
                               weight_decay: float, **adamw_kwargs
                               ) -> optax.GradientTransformation:
    """multi_transform: AdamW(learning_rate, weight_decay) for each label in `trainable`,
    set_to_zero for every other label. One AdamW per label, so each label's moments and
    step count live in their own subtree of the state."""
    trainable = frozenset(trainable)
    unknown = trainable - set(LABELS)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; known: {LABELS}")
    transforms = {
        label: (optax.adamw(learning_rate, weight_decay=weight_decay, **adamw_kwargs)
                if label in trainable else optax.set_to_zero())
        for label in LABELS}
    return optax.multi_transform(transforms, labels)


def make_optimizer(params, num_old_experts: int, stage: int, phase: int, learning_rate,
                   weight_decay: float, backbone: str = "frozen", freeze_gating: bool = True,
                   old_experts: str = "phase2", **adamw_kwargs
                   ) -> optax.GradientTransformation:
    """The optimizer of (stage, phase) for `params` (see module doc for the schedule).

    learning_rate: float or optax schedule (paper: AdamW lr 1e-4).
    Extra keyword arguments go to `optax.adamw` (b1, b2, eps, mask, ...).
    """
    labels = label_params(params, num_old_experts)
    trainable = trainable_labels(stage, phase, backbone, freeze_gating, old_experts)
    return make_optimizer_from_labels(labels, trainable, learning_rate, weight_decay,
                                      **adamw_kwargs)


def frozen_mask(params, num_old_experts: int, trainable: Iterable[str], context_rows=None):
    """Pytree with the structure of `params`: True where the leaf is frozen.

    context_rows: optional bool[C], the rows of the task-context projection that may
    train (`task_context/kernel` float[C, D] and, with a task FiLM,
    `task_context/film_kernel` float[C, S, 2, D]); each such entry is then the array
    bool[C, 1, ...] (True = frozen row, broadcast over the leaf's other axes) instead of
    one bool, so that e.g. with one-hot context only the rows of this stage's tasks
    move. Ignored when the label is frozen anyway.
    """
    trainable = frozenset(trainable)
    flat = traverse_util.flatten_dict(label_params(params, num_old_experts))
    mask = {p: lab not in trainable for p, lab in flat.items()}
    if context_rows is not None:
        leaves = traverse_util.flatten_dict(params)
        frozen_rows = ~np.asarray(context_rows, bool)
        for path in mask:
            if path[0] == TASK_CONTEXT_KEY and not mask[path]:
                ndim = np.ndim(leaves[path])
                mask[path] = frozen_rows.reshape((-1,) + (1,) * (ndim - 1))
    return traverse_util.unflatten_dict(mask)
