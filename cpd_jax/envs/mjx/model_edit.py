"""Builds MJX-friendly MuJoCo models from the installed Meta-World MJCF files.

The XML is read from the `metaworld` package (never copied into this repo) and edited
with `mujoco.MjSpec`:

* every geom gets contype = conaffinity = 0 and the contacts that matter for a task are
  listed as explicit `<pair>`s (MJX cost grows with the number of candidate pairs and
  it rejects cylinder-box / cylinder-mesh pairs, so the default all-pairs filter is
  both slow and unsupported);
* selected cylinders become boxes of the same half-extents (r, r, h): MJX has no
  cylinder-box collision;
* solver iterations are cut (Newton converges in a few iterations for these small
  systems) and Euler damping is disabled where asked (it costs a factorisation).

A task names geoms by (body name, geom type) because most Meta-World collision geoms
are unnamed.
"""

import dataclasses
import os
from typing import Optional, Sequence

import mujoco
import numpy as np

# Meta-World's `reset_mocap_welds` rewrites every weld's eq_data to this (anchor 0,
# relpose pos 0, relpose quat (-1, 0, 0, 0), torquescale 5) right after loading.
METAWORLD_WELD_DATA = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])

# The gripper geoms that touch task objects: the two finger pads.
PAD_GEOMS = ("rightpad_geom", "leftpad_geom")
CLAW_GEOMS = ("rightclaw_it", "leftclaw_it")


@dataclasses.dataclass(frozen=True)
class GeomSel:
    """Selects the collision geoms of `body` (optionally only of `gtype`, e.g. "box",
    optionally only the `index`-th of those in model order, or the geom named `name`)."""

    body: Optional[str] = None
    gtype: Optional[str] = None
    index: Optional[int] = None
    name: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ModelEdits:
    """What to change in a task's MJCF. pairs: (a, b) geom selections; every geom of a is
    paired with every geom of b. cylinders_to_box: cylinders replaced by boxes."""

    pairs: Sequence[tuple[GeomSel, GeomSel]] = ()
    cylinders_to_box: Sequence[GeomSel] = ()
    iterations: int = 4
    ls_iterations: int = 8
    disable_eulerdamp: bool = False
    hand_proxy: str = "box"  # shape of HAND_PROXY when a pair uses it: "box" or "capsule"
    capsule_standins: Sequence[GeomSel] = ()  # boxes that get a capsule twin (`standin`)


# The Sawyer hand's collision mesh (`eGripperBase`, 6693 vertices, on body `right_hand`)
# is what pushes the window handles, the coffee button, the lever and the lock in the
# reference. Mesh pairs are the most expensive MJX collisions (in compile time and
# memory as well as per step), so tasks pair a primitive stand-in instead:
# HAND_PROXY, added to `right_hand` by `build_model` when a pair names it.
HAND_BODY = "right_hand"
HAND_PROXY_NAME = "mjx_hand_proxy"
HAND_PROXY = GeomSel(name=HAND_PROXY_NAME)


def metaworld_xml_path(rel: str) -> str:
    """Absolute path of `rel` (e.g. "sawyer_xyz/sawyer_drawer.xml") in the metaworld assets."""
    import metaworld
    return os.path.join(os.path.dirname(metaworld.__file__), "assets", rel)


def _is_collision_geom(m: mujoco.MjModel, i: int) -> bool:
    return bool(m.geom_contype[i] or m.geom_conaffinity[i])


def select_geoms(m: mujoco.MjModel, sel: GeomSel) -> list[int]:
    """Ids of the collision geoms (in the unedited model `m`) that `sel` names."""
    if sel.name is not None:
        return [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, sel.name)]
    ids = [i for i in range(m.ngeom) if _is_collision_geom(m, i)
           and (sel.body is None or m.body(int(m.geom_bodyid[i])).name == sel.body)
           and (sel.gtype is None
                or m.geom_type[i] == getattr(mujoco.mjtGeom, f"mjGEOM_{sel.gtype.upper()}"))]
    if sel.index is not None:
        ids = [ids[sel.index]]
    if not ids:
        raise ValueError(f"{sel} selects no collision geom")
    return ids


def _mixed_pair_params(m: mujoco.MjModel, g1: int, g2: int) -> dict:
    """Contact parameters MuJoCo would have used for the (g1, g2) geom-filter contact."""
    s1, s2 = m.geom_solmix[g1], m.geom_solmix[g2]
    mix = 0.5 if s1 + s2 < mujoco.mjMINVAL else s1 / (s1 + s2)
    return dict(
        condim=int(max(m.geom_condim[g1], m.geom_condim[g2])),
        # geom friction (slide, spin, roll) -> pair friction (slide, slide, spin, roll, roll)
        friction=np.maximum(m.geom_friction[g1], m.geom_friction[g2])[[0, 0, 1, 2, 2]],
        solref=mix * m.geom_solref[g1] + (1 - mix) * m.geom_solref[g2],
        solimp=mix * m.geom_solimp[g1] + (1 - mix) * m.geom_solimp[g2],
        margin=float(max(m.geom_margin[g1], m.geom_margin[g2])),
        gap=float(max(m.geom_gap[g1], m.geom_gap[g2])),
    )


def hand_mesh_geom(m: mujoco.MjModel) -> int:
    """Id of the hand's collision mesh geom (the only mesh geom on `right_hand`)."""
    body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, HAND_BODY)
    ids = [i for i in range(m.ngeom) if m.geom_bodyid[i] == body
           and m.geom_type[i] == mujoco.mjtGeom.mjGEOM_MESH]
    if len(ids) != 1:
        raise ValueError(f"expected one mesh geom on {HAND_BODY}, found {ids}")
    return ids[0]


def hand_proxy_geometry(m: mujoco.MjModel, shape: str) -> dict:
    """Body-frame geometry {type, size, pos, quat} of a primitive covering the hand mesh.

    MuJoCo stores the mesh geom in the mesh's principal frame; in that frame the mesh is
    roughly a cylinder of radius ~0.029 along its z (the hand's y: across the gripper),
    0.106 long, with a small bump on one side. "box": the mesh's bounding box in that
    frame (`geom_aabb`: centre offset + half-extents), i.e. flat end faces like the
    mesh's (coffee-button and door-lock are pushed with an end face). "capsule": along
    the same axis, radius = the x half-extent (~0.029), same total length.
    """
    g = hand_mesh_geom(m)
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, m.geom_quat[g])
    centre, half = m.geom_aabb[g][:3], m.geom_aabb[g][3:]
    pos = m.geom_pos[g] + rot.reshape(3, 3) @ centre
    if shape == "box":
        return dict(type=mujoco.mjtGeom.mjGEOM_BOX, size=half.copy(), pos=pos,
                    quat=m.geom_quat[g].copy())
    if shape == "capsule":
        r = float(half[0])  # the bump makes the y half-extent larger than the radius
        return dict(type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=np.array([r, half[2] - r, 0.0]),
                    pos=pos, quat=m.geom_quat[g].copy())
    raise ValueError(f"unknown hand proxy shape {shape!r}")


def _add_hand_proxy(spec: mujoco.MjSpec, shape: str) -> None:
    """Adds HAND_PROXY to the hand body: contype = conaffinity = 0 (it collides only in
    explicit pairs) and the mesh geom's contact parameters, so the mixed pair
    parameters are those the mesh pair would have had. `right_hand` has an explicit
    <inertial>, so the extra geom does not change the body's mass or inertia."""
    m = spec.compile()
    g = hand_mesh_geom(m)
    geo = hand_proxy_geometry(m, shape)
    body = spec.body(HAND_BODY)
    proxy = body.add_geom(name=HAND_PROXY_NAME, type=geo["type"], size=geo["size"],
                          pos=geo["pos"], quat=geo["quat"], contype=0, conaffinity=0,
                          group=3, rgba=[0.2, 0.8, 0.2, 0.3])
    _copy_contact_params(proxy, m, g)


def _copy_contact_params(dst, m: mujoco.MjModel, g: int) -> None:
    """Gives the new spec geom `dst` the contact parameters of geom `g` of `m`, so a
    stand-in touches things exactly as the geom it replaces."""
    dst.condim = int(m.geom_condim[g])
    dst.friction = m.geom_friction[g].copy()
    dst.solref = m.geom_solref[g].copy()
    dst.solimp = m.geom_solimp[g].copy()
    dst.solmix = float(m.geom_solmix[g])
    dst.margin = float(m.geom_margin[g])
    dst.gap = float(m.geom_gap[g])
    dst.priority = int(m.geom_priority[g])


def standin(box_name: str) -> GeomSel:
    """Selects the capsule twin of the box geom `box_name` (see `_add_capsule_standins`)."""
    return GeomSel(name=f"{box_name}_capsule")


def _add_capsule_standins(spec: mujoco.MjSpec, sels: Sequence[GeomSel]) -> None:
    """For each selected named box (longest half-extent along its local z), adds a
    massless capsule twin on the same body with the same frame: radius = the larger of
    the x/y half-extents, same total length, contype = conaffinity = 0, the box's contact
    parameters. Tasks pair the twin instead of the box where MJX's box-box contact is
    not faithful: at the same state MJX 3.3.0's `box_box` reported twice native MuJoCo's
    penetration for some face-face contacts (peg-insert-side: right pad x peg -0.0070 vs
    -0.0035, peg x table -0.00018 vs -0.00009; the left pad, whose normal is slightly
    tilted, agreed), so the box-box grasp settled with the fingers ~4 mm wider."""
    m = spec.compile()
    for sel in sels:
        for g in select_geoms(m, sel):
            name = m.geom(g).name
            size = m.geom_size[g]
            if m.geom_type[g] != mujoco.mjtGeom.mjGEOM_BOX or not name or size[2] < size[:2].max():
                raise ValueError(f"capsule stand-in needs a named box long along z: {sel}")
            body = spec.body(m.body(int(m.geom_bodyid[g])).name)
            r = float(size[:2].max())
            twin = body.add_geom(name=f"{name}_capsule", type=mujoco.mjtGeom.mjGEOM_CAPSULE,
                                 size=[r, float(size[2]) - r, 0.0], pos=m.geom_pos[g].copy(),
                                 quat=m.geom_quat[g].copy(), contype=0, conaffinity=0,
                                 group=3, mass=0.0)
            _copy_contact_params(twin, m, g)


def _uses_hand_proxy(edits: ModelEdits) -> bool:
    return any(sel == HAND_PROXY for pair in edits.pairs for sel in pair)


def build_model(xml_rel: str, edits: ModelEdits) -> mujoco.MjModel:
    """The task model with `edits` applied, plus Meta-World's weld rewrite."""
    spec = mujoco.MjSpec.from_file(metaworld_xml_path(xml_rel))
    if _uses_hand_proxy(edits):
        _add_hand_proxy(spec, edits.hand_proxy)
    if edits.capsule_standins:
        _add_capsule_standins(spec, edits.capsule_standins)
    m0 = spec.compile()
    geoms = list(spec.geoms)
    assert len(geoms) == m0.ngeom, "spec/model geom order mismatch"
    # spec.geoms and the compiled model must list geoms in the same order (the edits
    # below index one by the other); check it where it is checkable.
    assert all(g.name == m0.geom(i).name for i, g in enumerate(geoms) if g.name), \
        "spec/model geom order mismatch"

    pair_ids = [(select_geoms(m0, a), select_geoms(m0, b)) for a, b in edits.pairs]
    to_box = {i for sel in edits.cylinders_to_box for i in select_geoms(m0, sel)}

    for i, g in enumerate(geoms):
        g.contype = 0
        g.conaffinity = 0
        if not g.name:
            g.name = f"mjx_geom{i}"
        if i in to_box:
            if m0.geom_type[i] != mujoco.mjtGeom.mjGEOM_CYLINDER:
                raise ValueError(f"geom {i} is not a cylinder")
            r, h = m0.geom_size[i][:2]
            g.type = mujoco.mjtGeom.mjGEOM_BOX
            g.size = [r, r, h]  # same half-extents along the cylinder's local axes
    for ids_a, ids_b in pair_ids:
        for a in ids_a:
            for b in ids_b:
                p = spec.add_pair(geomname1=geoms[a].name, geomname2=geoms[b].name)
                for k, v in _mixed_pair_params(m0, a, b).items():
                    setattr(p, k, v)
    spec.option.iterations = edits.iterations
    spec.option.ls_iterations = edits.ls_iterations
    if edits.disable_eulerdamp:
        spec.option.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    model = spec.compile()
    for i in range(model.neq):
        if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
            model.eq_data[i] = METAWORLD_WELD_DATA
    return model


def pads_with(*targets: GeomSel, claws: bool = False) -> list[tuple[GeomSel, GeomSel]]:
    """Pairs of each finger pad (and claw, if asked) with each target selection."""
    fingers = PAD_GEOMS + (CLAW_GEOMS if claws else ())
    return [(GeomSel(name=f), t) for f in fingers for t in targets]


TABLE = GeomSel(body="tablelink")
