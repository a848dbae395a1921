"""What a model is made of, as the stages need it: muscles (F_max, side, region), joints, key
bodies and feet (from its correspondence file), and mass. Above `retarget/`, whose
correspondence files name the key bodies and feet."""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from msconvert.emulator.model import (
    body_regions,
    body_side,
    collides_with,
    floor_geom,
    foot_contact_geoms,
    locked_parts,
    model_name,
    model_sha256,
    muscle_actuators,
    muscle_fmax,
    muscle_moment_arms,
    muscle_names,
    phantom_bodies,
    qpos_names,
    qvel_names,
)
from msconvert.emulator.retarget.correspondence import (
    CorrespondenceError,
    default_correspondence_path,
    load_correspondence,
)


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """What the stages need to know about a model: muscles, joints, key bodies, feet, mass."""

    name: str
    sha256: str
    timestep: float
    muscle_names: tuple[str, ...]
    muscle_actuators: np.ndarray  # (M,) actuator index of each muscle
    fmax: np.ndarray  # (M,) peak isometric force, N
    muscle_side: tuple[str, ...]  # 'r', 'l' or 'center' per muscle
    muscle_region: tuple[str, ...]  # 'hand', 'arm', 'leg', 'trunk' or 'other' per muscle
    joint_names: tuple[str, ...]
    qpos_names: tuple[str, ...]
    qvel_names: tuple[str, ...]
    key_bodies: tuple[str, ...]
    foot_bodies: dict[str, tuple[str, ...]]  # 'left'/'right' -> bodies
    foot_geoms: dict[str, np.ndarray]  # 'left'/'right' -> geoms that can touch the floor
    total_mass: float  # kg
    locked_joints: tuple[str, ...] = ()  # removed by load_model(lock_fingers=True)
    removed_muscles: tuple[str, ...] = ()
    phantom_bodies: tuple[str, ...] = ()  # inertia shrunk by load_model (see PHANTOM_GYRATION_M)

    @property
    def n_muscles(self) -> int:
        return len(self.muscle_names)

    def group(self, side: str | None = None, region: str | None = None) -> tuple[str, ...]:
        """Muscle names on a side ('r', 'l', 'center') and/or in a region ('leg', 'arm', ...)."""
        return tuple(
            n
            for n, s, r in zip(self.muscle_names, self.muscle_side, self.muscle_region, strict=True)
            if (side is None or s == side) and (region is None or r == region)
        )


_REGION_ORDER = ("hand", "arm", "leg", "trunk", "other")  # most distal first


def _muscle_groups(model: mujoco.MjModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Side and region per muscle: the side in its name, else that of the bodies it crosses;
    the most distal region among the joints it crosses (at the reference pose)."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    crosses = np.abs(muscle_moment_arms(model, data)) > 1e-9
    dof_region = np.array(body_regions(model))[model.dof_bodyid]
    dof_side = np.array([body_side(model.body(int(b)).name) for b in model.dof_bodyid])
    sides, regions = [], []
    for name, row in zip(muscle_names(model), crosses, strict=True):
        body_sides = set(dof_side[row]) - {"center"}
        side = body_side(name)
        sides.append(str(body_sides.pop()) if side == "center" and len(body_sides) == 1 else side)
        found = set(dof_region[row])
        regions.append(next((r for r in _REGION_ORDER if r in found), "other"))
    return tuple(sides), tuple(regions)


def _has_floor(model: mujoco.MjModel) -> bool:
    planes = (model.geom_type == int(mujoco.mjtGeom.mjGEOM_PLANE)) & (model.geom_bodyid == 0)
    return bool(planes.any())


def _feet(model: mujoco.MjModel) -> dict[str, tuple[str, ...]]:
    """Foot bodies: from the packaged correspondence file, else the lowest colliding bodies."""
    try:
        feet = load_correspondence(default_correspondence_path(model)).feet
        return {side: tuple(feet[side]) for side in ("left", "right")}
    except CorrespondenceError:
        pass
    # No file: bodies whose floor-colliding geoms reach within 5 cm of the lowest one at qpos0.
    if not _has_floor(model):
        return {"left": (), "right": ()}
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    floor = floor_geom(model)
    geoms = np.flatnonzero(collides_with(model, floor) & (model.geom_bodyid > 0))
    bottom = data.geom_xpos[geoms, 2] - model.geom_rbound[geoms]
    low = geoms[bottom < bottom.min() + 0.05] if geoms.size else geoms
    feet: dict[str, list[str]] = {"left": [], "right": []}
    for g in low:
        body = model.body(int(model.geom_bodyid[g])).name
        side = {"l": "left", "r": "right"}.get(body_side(body))
        if side and body not in feet[side]:
            feet[side].append(body)
    return {side: tuple(bodies) for side, bodies in feet.items()}


def describe_model(model: mujoco.MjModel) -> ModelInfo:
    """Muscles (F_max, side, region), joints, key bodies, feet and mass of a model."""
    names = muscle_names(model)
    sides, regions = _muscle_groups(model)
    feet = _feet(model)
    try:
        cset = load_correspondence(default_correspondence_path(model))
        key = tuple(dict.fromkeys(e.body for e in cset.entries))
    except CorrespondenceError:  # no file: the root body and the feet
        key = (model.body(1).name, *feet["left"], *feet["right"]) if model.nbody > 1 else ()
    has_floor = _has_floor(model)
    locked = locked_parts(model)
    return ModelInfo(
        name=model_name(model),
        sha256=model_sha256(model),
        timestep=float(model.opt.timestep),
        muscle_names=tuple(names),
        muscle_actuators=muscle_actuators(model),
        fmax=muscle_fmax(model),
        muscle_side=sides,
        muscle_region=regions,
        joint_names=tuple(model.joint(j).name for j in range(model.njnt)),
        qpos_names=qpos_names(model),
        qvel_names=qvel_names(model),
        key_bodies=key,
        foot_bodies=feet,
        foot_geoms={
            side: foot_contact_geoms(model, bodies) if has_floor and bodies else np.zeros(0, int)
            for side, bodies in feet.items()
        },
        total_mass=float(mujoco.mj_getTotalmass(model)),
        locked_joints=locked[0],
        removed_muscles=locked[1],
        phantom_bodies=phantom_bodies(model),
    )
