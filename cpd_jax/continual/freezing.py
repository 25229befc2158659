"""Parameter freezing as an optimizer concern (paper §4.5), with optax labels.

Every leaf of the student's params gets one label (`label_params`):

  backbone        embed, pos_embed, attention, layer norms, final norm, action head
  gate            router columns `moe/gate_e/{kernel, bias}`
  old_expert      `moe/expert_e` with e < num_old_experts (existed before this stage)
  new_expert      `moe/expert_e` with e >= num_old_experts (added this stage; in
                  stage 1, num_old_experts = 0, so every expert is "new")
  task_embedding  a top-level `task_embedding` subtree, if someone nests the task
                  encoder's params in the student tree. By default the encoder is
                  trained on its own with InfoNCE (`cpd_jax.student.task_embedding`)
                  and is not part of this tree; the label exists so a joint tree
                  still gets a well-defined treatment (frozen unless asked).

`make_optimizer` builds `optax.multi_transform` with one AdamW per trainable label and
`optax.set_to_zero()` per frozen label. Why this gives bitwise-frozen leaves:

* set_to_zero returns exact zeros and keeps no state, so neither weight decay nor a
  momentum accumulated while the leaf was trainable can reach it;
* a new optimizer is built (and its state initialised) at every phase switch; only the
  state of labels that stay trainable is carried over (`growth.transfer_opt_state`
  matches by tree path), so a leaf that was trainable in phase 1 and is frozen in
  phase 2 has no moments anywhere in the phase-2 state;
* `apply_updates` below returns a frozen leaf as the same array (no `p + 0.0`, which
  is bitwise equal to `p` for every value except -0.0, which becomes +0.0).

Schedules (`trainable_labels`):

  stage 1            everything trains (backbone, gate, experts)
  stage >= 2         backbone frozen for good (freeze_backbone=True; the
                     "No Shared-Frozen" ablation sets it False)
    phase 1          gate + new experts train, old experts frozen
    phase 2          gate frozen, all experts train
  freeze_gating=False   ("No Freeze-Gating" ablation) one phase: gate + all experts
"""

from typing import Iterable

import optax
from flax import traverse_util

BACKBONE = "backbone"
GATE = "gate"
OLD_EXPERT = "old_expert"
NEW_EXPERT = "new_expert"
TASK_EMBEDDING = "task_embedding"
LABELS = (BACKBONE, GATE, OLD_EXPERT, NEW_EXPERT, TASK_EMBEDDING)

TASK_EMBEDDING_KEY = "task_embedding"  # top-level key of a nested encoder subtree


def _leaf_label(path: tuple[str, ...], num_old_experts: int) -> str:
    if path[0] == TASK_EMBEDDING_KEY:
        return TASK_EMBEDDING
    if "moe" in path:
        node = path[path.index("moe") + 1]
        kind, _, index = node.rpartition("_")
        if kind == "gate":
            return GATE
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


def trainable_labels(stage: int, phase: int, freeze_backbone: bool = True,
                     freeze_gating: bool = True,
                     train_task_embedding: bool = False) -> frozenset[str]:
    """Labels that train in (stage, phase); stage and phase are 1-based.

    train_task_embedding only matters when the encoder's params are nested in the tree.
    """
    if stage < 1 or phase not in phases(stage, freeze_gating):
        raise ValueError(f"stage {stage} has phases {phases(max(stage, 1), freeze_gating)}, "
                         f"got phase {phase}")
    extra = {TASK_EMBEDDING} if train_task_embedding else set()
    if stage == 1:
        return frozenset({BACKBONE, GATE, OLD_EXPERT, NEW_EXPERT} | extra)
    labels = set(extra)
    if not freeze_backbone:
        labels.add(BACKBONE)
    if not freeze_gating:
        labels |= {GATE, OLD_EXPERT, NEW_EXPERT}
    elif phase == 1:
        labels |= {GATE, NEW_EXPERT}
    else:
        labels |= {OLD_EXPERT, NEW_EXPERT}
    return frozenset(labels)


def make_optimizer_from_labels(labels, trainable: Iterable[str], learning_rate,
                               weight_decay: float, **adamw_kwargs
                               ) -> optax.GradientTransformation:
    """multi_transform: AdamW(learning_rate, weight_decay) for each label in `trainable`,
    set_to_zero for every other label. One AdamW per label, so each label's moments and
    step count live in their own subtree of the state (and can be carried over by path
    when the phase changes)."""
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
                   weight_decay: float, freeze_backbone: bool = True,
                   freeze_gating: bool = True, train_task_embedding: bool = False,
                   **adamw_kwargs) -> optax.GradientTransformation:
    """The optimizer of (stage, phase) for `params` (see module doc for the schedule).

    learning_rate: float or optax schedule (paper: AdamW lr 1e-4).
    Extra keyword arguments go to `optax.adamw` (b1, b2, eps, mask, ...).
    """
    labels = label_params(params, num_old_experts)
    trainable = trainable_labels(stage, phase, freeze_backbone, freeze_gating,
                                 train_task_embedding)
    return make_optimizer_from_labels(labels, trainable, learning_rate, weight_decay,
                                      **adamw_kwargs)


def frozen_mask(params, num_old_experts: int, trainable: Iterable[str]):
    """Pytree of bools, True where the leaf is frozen."""
    trainable = frozenset(trainable)
    flat = traverse_util.flatten_dict(label_params(params, num_old_experts))
    return traverse_util.unflatten_dict({p: lab not in trainable for p, lab in flat.items()})


def apply_updates(params, updates, frozen):
    """optax.apply_updates that returns frozen leaves untouched (the same array).

    frozen: pytree of Python bools (`frozen_mask`), static under jit.
    """
    flat_p = traverse_util.flatten_dict(params)
    flat_u = traverse_util.flatten_dict(updates)
    flat_f = traverse_util.flatten_dict(frozen)
    out = {path: p if flat_f[path] else optax.apply_updates(p, flat_u[path])
           for path, p in flat_p.items()}
    return traverse_util.unflatten_dict(out)
