"""The continual methods compared in the paper's Table 2, as data.

A method is a set of switches the stage loop reads; the ablations of Table 2 are config
flags on top of "ours" (`continual.freeze_backbone`, `continual.freeze_gating`,
`student.task_context`).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    expand: bool = False  # add experts at every stage >= 2 (§4.2)
    freeze: bool = False  # backbone / gate / old-expert freezing schedule (§4.5)
    replay: bool = False  # DPP-selected replay of earlier stages (§4.4)
    fresh_student: bool = False  # a new student per stage (Independent)
    penalty: str = "none"  # "none", "ewc" (diagonal Fisher) or "kl" (to previous student)
    optimizer: str = "adamw"  # "adamw" or "trac" (parameter-free, Muppidi et al. 2024)


METHODS: dict[str, Method] = {
    "ours": Method(expand=True, freeze=True, replay=True),
    "finetune": Method(),
    "replay_only": Method(replay=True),
    "expert_only": Method(expand=True, freeze=True),
    "independent": Method(fresh_student=True),
    "ewc": Method(penalty="ewc"),
    "kl": Method(penalty="kl"),
    "trac": Method(optimizer="trac"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]
