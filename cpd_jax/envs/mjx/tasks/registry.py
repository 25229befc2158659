"""Task registry: Meta-World v3 name -> task module (one module per task)."""

import importlib
from types import ModuleType

# name -> module under cpd_jax.envs.mjx.tasks: the 25 MT25 tasks, MT10 first.
_MODULES = {
    "reach-v3": "reach",
    "push-v3": "push",
    "pick-place-v3": "pick_place",
    "door-open-v3": "door_open",
    "drawer-open-v3": "drawer_open",
    "drawer-close-v3": "drawer_close",
    "button-press-topdown-v3": "button_press_topdown",
    "peg-insert-side-v3": "peg_insert_side",
    "window-open-v3": "window_open",
    "window-close-v3": "window_close",
    # the other 15 MT25 tasks
    "button-press-wall-v3": "button_press_wall",
    "button-press-topdown-wall-v3": "button_press_topdown_wall",
    "coffee-button-v3": "coffee_button",
    "dial-turn-v3": "dial_turn",
    "faucet-open-v3": "faucet_open",
    "faucet-close-v3": "faucet_close",
    "lever-pull-v3": "lever_pull",
    "door-lock-v3": "door_lock",
    "coffee-pull-v3": "coffee_pull",
    "pick-place-wall-v3": "pick_place_wall",
    "pick-out-of-hole-v3": "pick_out_of_hole",
    "basketball-v3": "basketball",
    "sweep-into-v3": "sweep_into",
    "stick-pull-v3": "stick_pull",
    "disassemble-v3": "disassemble",
}


def ported_tasks() -> tuple[str, ...]:
    return tuple(_MODULES)


def get_task(name: str) -> ModuleType:
    if name not in _MODULES:
        raise KeyError(f"task {name!r} has no MJX port yet; ported: {sorted(_MODULES)}")
    return importlib.import_module(f"cpd_jax.envs.mjx.tasks.{_MODULES[name]}")
