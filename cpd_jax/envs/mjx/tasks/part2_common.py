"""Helpers shared by the part-2 task modules (the 15 non-MT10 MT25 tasks).

Kept separate from `common.py` (owned by the base port) so the two branches merge
trivially. Pure jax unless stated otherwise.
"""

from cpd_jax.envs.mjx.model_edit import CLAW_GEOMS, PAD_GEOMS, GeomSel

FINGERS = PAD_GEOMS + CLAW_GEOMS  # the four finger collision boxes

# Meta-World's unnamed bodies: `GeomSel(body="")` selects the collision geoms of every
# body whose name is empty; in the wall tasks that is only the wall.
UNNAMED_BODY = ""


def fingers_with(*targets: GeomSel, claws: bool = True) -> list[tuple[GeomSel, GeomSel]]:
    """Pairs of each finger pad (and claw) with each target selection."""
    fingers = FINGERS if claws else PAD_GEOMS
    return [(GeomSel(name=f), t) for f in fingers for t in targets]
