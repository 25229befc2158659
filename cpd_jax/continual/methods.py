"""The continual methods compared in the paper's Table 2, as objects.

A `Method` says what the stage loop does around distillation (grow experts, keep a
replay buffer, start a fresh student) and builds the two parts that differ between
methods: each phase's optimizer (`Method.optimizer`, with the freezing schedule of §4.5
for methods that freeze) and the penalty anchored at the previous stage's student
(`Method.penalty`: EWC, KL, or the routing terms of the `continual.route_*` extension).
The stage loop (`stages.py`) asks the method and never switches on its name.

The paper's ablations (no_te, no_shared_frozen, no_freeze_gating) are "ours" with one
config flag changed (`student.task_context`, `continual.backbone`,
`continual.freeze_gating`), not methods of their own: each flag is read where it acts
(the student, the freezing schedule), so any method and any combination of flags can be
run from `--config`; `experiments/run_comparison.py` names the combinations of Table 2.
"""

import dataclasses
from typing import Callable

import jax
import numpy as np

from cpd_jax import distillation
from cpd_jax.continual import freezing, penalties, trac
from cpd_jax.data.rollouts import Trajectories
from cpd_jax.student import Student
from cpd_jax.student.inputs import ObsNorm, student_inputs


@dataclasses.dataclass(frozen=True)
class Previous:
    """The previous stage's student, which a penalty is anchored at.

    old_task_ids: MT25 ids of the tasks seen before this stage. data: loads the previous
    stage's teacher data (`Trajectories` per task) when a penalty needs it (EWC's Fisher).
    """

    model: Student
    params: dict
    obs_norm: ObsNorm
    old_task_ids: list
    data: Callable[[], list[Trajectories]]


# (config, previous, key) -> penalty_fn for `distillation.make_train_step`
AnchorPenalty = Callable[[object, Previous, jax.Array], Callable]


def kl_anchor(config, previous: Previous, key) -> Callable:
    """KL to the previous student's action distribution (the LwF-style baseline)."""
    del key
    return penalties.kl_penalty(previous.model, previous.params, config.continual.kl_coef)


def ewc_anchor(config, previous: Previous, key) -> Callable:
    """EWC with the diagonal Fisher of the previous student on the previous stage's
    data (`continual.fisher_batches` minibatches)."""
    source = distillation.make_window_source(previous.data(), config.student.seq_len)
    batches = []
    for i in range(config.continual.fisher_batches):
        history, targets = distillation.sample_batch(jax.random.fold_in(key, i), source,
                                                     config.distill.batch_size)
        inputs = student_inputs(config.student.task_context, history, None, previous.obs_norm)
        batches.append((inputs, history.valid, targets))
    fisher = penalties.diagonal_fisher(previous.model, previous.params, batches)
    return penalties.ewc_penalty(previous.params, fisher, config.continual.ewc_coef)


@dataclasses.dataclass(frozen=True)
class Method:
    expand: bool = False  # add experts at every stage >= 2 (§4.2)
    freeze: bool = False  # backbone / gate / old-expert freezing schedule (§4.5)
    replay: bool = False  # DPP-selected replay of earlier stages (§4.4)
    fresh_student: bool = False  # a new student per stage (Independent)
    anchor: AnchorPenalty | None = None  # a penalty toward the previous stage's student
    # wraps the phase's AdamW (TRAC: parameter-free scaling, Muppidi et al. 2024)
    wrap_optimizer: Callable | None = None

    def phases(self, config, stage: int) -> tuple[int, ...]:
        """The phases of 1-based `stage` (`freezing.phases`; one without freezing)."""
        return freezing.phases(stage, config.continual.freeze_gating) if self.freeze else (1,)

    def optimizer(self, config, params, num_old: int, stage: int, phase: int,
                  total_steps: int, steps_done: int, rows: np.ndarray | None = None):
        """(tx, frozen mask or None) for one phase of 1-based `stage`. The learning-rate
        schedule spans the stage: this phase starts at `steps_done` of `total_steps`.
        num_old: experts that existed before the stage. rows: the task-context rows
        that train (`stages.context_rows`)."""
        if self.freeze:
            lr = distillation.learning_rate(config.distill, total_steps, steps_done)
            schedule = dict(backbone=config.continual.backbone,
                            freeze_gating=config.continual.freeze_gating,
                            old_experts=config.continual.old_experts)
            tx = freezing.make_optimizer(params, num_old, stage, phase, lr,
                                         config.distill.weight_decay, **schedule)
            trainable = freezing.trainable_labels(stage, phase, **schedule)
            return tx, freezing.frozen_mask(params, num_old, trainable, rows)
        tx = distillation.make_optimizer(config.distill, total_steps, steps_done)
        if self.wrap_optimizer is not None:
            tx = self.wrap_optimizer(tx)
        return tx, None

    def penalty(self, config, previous: Previous | None, key) -> Callable | None:
        """The stage's penalty_fn (None for none): the isolation terms for a method that
        grows experts when `continual.route_anchor_coef`/`route_new_coef`/
        `feature_anchor_coef` are set, else the method's anchor. None at the first stage
        or with a fresh student."""
        if previous is None:
            return None
        cont = config.continual
        coefs = (cont.route_anchor_coef, cont.route_new_coef, cont.feature_anchor_coef)
        if self.expand and any(c > 0 for c in coefs):
            return penalties.isolation_penalty(previous.model, previous.params,
                                               previous.old_task_ids, *coefs)
        if self.anchor is None:
            return None
        return self.anchor(config, previous, key)


METHODS: dict[str, Method] = {
    "ours": Method(expand=True, freeze=True, replay=True),
    "finetune": Method(),
    "replay_only": Method(replay=True),
    "expert_only": Method(expand=True, freeze=True),
    "independent": Method(fresh_student=True),
    "ewc": Method(anchor=ewc_anchor),
    "kl": Method(anchor=kl_anchor),
    "trac": Method(wrap_optimizer=trac.trac),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]
