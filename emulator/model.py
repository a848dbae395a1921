"""Musculoskeletal model loading and the few model facts the stages need (muscles, floor, feet)."""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

DEFAULT_MODEL = "myofullbody"

# Name and XML digest of every model made by `load_model`; a compiled MjModel has no room for them.
_LOADED: weakref.WeakKeyDictionary[mujoco.MjModel, tuple[str, str]] = weakref.WeakKeyDictionary()


class ModelError(ValueError):
    """A model file cannot be used; the message is one line naming the file and the problem."""


def default_model_path() -> Path:
    """The MJCF of MyoFullBody from the `musclemimic-models` package."""
    import musclemimic_models

    return Path(musclemimic_models.get_xml_path(DEFAULT_MODEL))


def load_model(
    path: str | Path | None = None,
    *,
    timestep: float | None = None,
    lock_fingers: bool = False,
    keep_phantom_inertia: bool = False,
) -> mujoco.MjModel:
    """Compile an MJCF (None: MyoFullBody), adding a floor plane when the model has none.

    `timestep` overrides the physics step (s); `lock_fingers` removes the finger joints (fingers
    stay rigid at their reference pose) and the muscles crossing them (see `describe_model`).
    Bodies whose inertia no body of their mass can have (radius of gyration above
    `PHANTOM_GYRATION_M`) get a negligible one unless `keep_phantom_inertia`: MyoFullBody's eight
    massless shoulder "phantom" bodies (1 g) carry 1 kg·m² each, which puts 2 kg·m² of inertia
    that no arm has on each shoulder's plane-of-elevation DoF (a walk's arm swing then asks
    ~60 N·m there, beyond its muscles). The bodies are listed by `describe_model`.
    """
    file = default_model_path() if path is None else Path(path)
    # MuJoCo resolves mesh and include paths against the model file only when that path is absolute.
    file = file.expanduser().resolve()
    if not file.is_file():
        raise ModelError(f"{file}: model file not found")
    if timestep is not None and not (np.isfinite(timestep) and 0 < timestep <= 0.05):
        raise ModelError(f"{file}: timestep {timestep} s is not in (0, 0.05]")
    try:
        spec = mujoco.MjSpec.from_file(str(file))
        if not any(g.type == mujoco.mjtGeom.mjGEOM_PLANE for g in spec.worldbody.geoms):
            spec.worldbody.add_geom(
                name="msconvert_floor",
                type=mujoco.mjtGeom.mjGEOM_PLANE,
                size=[0.0, 0.0, 0.05],
                contype=1,
                conaffinity=1,
            )
        if timestep is not None:
            spec.option.timestep = timestep
        locked = _lock_fingers(spec) if lock_fingers else ((), ())
        phantoms = () if keep_phantom_inertia else _shrink_phantom_inertia(spec)
        name = DEFAULT_MODEL if path is None else file.stem
        model = compile_spec(spec, name)
    except ValueError as exc:
        raise ModelError(f"{file}: cannot compile model ({str(exc).splitlines()[0]})") from exc
    if muscle_actuators(model).size == 0:
        raise ModelError(f"{file}: model has no muscle actuators")
    if lock_fingers:
        _LOCKED[model] = locked
    if phantoms:
        _PHANTOMS[model] = phantoms
    return model


PHANTOM_GYRATION_M = 1.0  # a body segment's radius of gyration is centimetres, never a metre
_PHANTOM_GYRATION_SET_M = 0.05  # what such a body gets instead


def _shrink_phantom_inertia(spec: mujoco.MjSpec) -> tuple[str, ...]:
    """Give bodies with an impossible radius of gyration a negligible inertia; their names."""
    model = spec.compile()
    mass, inertia = model.body_mass, model.body_inertia
    with np.errstate(divide="ignore", invalid="ignore"):
        gyration = np.sqrt(inertia.max(axis=1) / mass)
    bodies = np.flatnonzero((mass > 0) & (gyration > PHANTOM_GYRATION_M))
    names = tuple(model.body(int(b)).name for b in bodies)
    for b, name in zip(bodies, names, strict=True):
        body = spec.body(name)
        body.explicitinertial = True
        body.mass = float(mass[b])
        body.ipos = model.body_ipos[b].copy()
        body.iquat = model.body_iquat[b].copy()
        body.inertia = np.full(3, float(mass[b]) * _PHANTOM_GYRATION_SET_M**2)
        body.fullinertia = np.full(6, np.nan)  # (set: it would override the diagonal)
    return names


def model_name(model: mujoco.MjModel) -> str:
    """The name `load_model` gave the model (file stem, or 'myofullbody'), else the MJCF's name."""
    if model in _LOADED:
        return _LOADED[model][0]
    return model.names[: model.names.index(b"\0")].decode() or "model"  # the MJCF's model name


def model_sha256(model: mujoco.MjModel) -> str:
    """SHA-256 of the compiled model's XML; models not made by `load_model` hash their MJB bytes."""
    if model in _LOADED:
        return _LOADED[model][1]
    buf = np.zeros(mujoco.mj_sizeModel(model), dtype=np.uint8)
    mujoco.mj_saveModel(model, None, buf)
    return hashlib.sha256(buf.tobytes()).hexdigest()


def muscle_actuators(model: mujoco.MjModel) -> np.ndarray:
    """Indices of the actuators that are muscles (muscle activation dynamics or muscle gain)."""
    is_muscle = (model.actuator_dyntype == int(mujoco.mjtDyn.mjDYN_MUSCLE)) | (
        model.actuator_gaintype == int(mujoco.mjtGain.mjGAIN_MUSCLE)
    )
    return np.flatnonzero(is_muscle)


def muscle_names(model: mujoco.MjModel) -> list[str]:
    """Names of the muscle actuators, in actuator order."""
    return [model.actuator(int(i)).name for i in muscle_actuators(model)]


def floor_geom(model: mujoco.MjModel) -> int:
    """Index of the floor: the lowest plane geom attached to the world body."""
    planes = np.flatnonzero(
        (model.geom_type == int(mujoco.mjtGeom.mjGEOM_PLANE)) & (model.geom_bodyid == 0)
    )
    if planes.size == 0:
        raise ModelError("model has no floor plane (load it with load_model)")
    return int(planes[np.argmin(model.geom_pos[planes, 2])])


def floor_height(model: mujoco.MjModel) -> float:
    """Height of the floor plane, which must face straight up."""
    g = floor_geom(model)
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    if data.geom_xmat[g, 8] < 1 - 1e-9:  # the plane's normal is its frame's z axis
        raise ModelError("the floor plane is tilted; retargeting assumes a level floor")
    return float(data.geom_xpos[g, 2])


def foot_contact_geoms(model: mujoco.MjModel, bodies: list[str] | tuple[str, ...]) -> np.ndarray:
    """Geoms on these bodies (and their descendants) that can collide with the floor."""
    floor = floor_geom(model)
    ids = []
    for name in bodies:
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if b < 0:
            raise ModelError(f"model has no body '{name}'")
        ids.append(b)
    in_subtree = np.zeros(model.nbody, dtype=bool)
    in_subtree[ids] = True
    for b in range(1, model.nbody):  # parents precede children in MuJoCo's body order
        in_subtree[b] |= in_subtree[model.body_parentid[b]]
    collides = (model.geom_contype & model.geom_conaffinity[floor]) | (
        model.geom_conaffinity & model.geom_contype[floor]
    )
    return np.flatnonzero(in_subtree[model.geom_bodyid] & (collides != 0))


_QPOS_SUFFIX = {
    int(mujoco.mjtJoint.mjJNT_FREE): ("x", "y", "z", "qw", "qx", "qy", "qz"),
    int(mujoco.mjtJoint.mjJNT_BALL): ("qw", "qx", "qy", "qz"),
}
_QVEL_SUFFIX = {
    int(mujoco.mjtJoint.mjJNT_FREE): ("vx", "vy", "vz", "wx", "wy", "wz"),
    int(mujoco.mjtJoint.mjJNT_BALL): ("wx", "wy", "wz"),
}


def _labels(model: mujoco.MjModel, suffixes: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    out: list[str] = []
    for j in range(model.njnt):
        name = model.joint(j).name or f"joint{j}"
        parts = suffixes.get(int(model.jnt_type[j]))
        out.extend([f"{name}:{s}" for s in parts] if parts else [name])
    return tuple(out)


def qpos_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """A label per qpos column: joint names, with ':x'... ':qz' suffixes for free/ball joints."""
    return _labels(model, _QPOS_SUFFIX)


def qvel_names(model: mujoco.MjModel) -> tuple[str, ...]:
    """A label per qvel column: joint names, with ':vx'... ':wz' suffixes for free/ball joints."""
    return _labels(model, _QVEL_SUFFIX)


# --- model description, spec registry and load options (simulation backends) -------------------

# The MjSpec each model was compiled from: the backends recompile it with recording sensors.
_SPECS: weakref.WeakKeyDictionary[mujoco.MjModel, mujoco.MjSpec] = weakref.WeakKeyDictionary()
# The bodies whose impossible inertia `load_model` shrank (see PHANTOM_GYRATION_M).
_PHANTOMS: weakref.WeakKeyDictionary[mujoco.MjModel, tuple[str, ...]] = weakref.WeakKeyDictionary()
# The finger joints and muscles `load_model(lock_fingers=True)` removed.
_LOCKED: weakref.WeakKeyDictionary[mujoco.MjModel, tuple[tuple[str, ...], tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def compile_spec(spec: mujoco.MjSpec, name: str) -> mujoco.MjModel:
    """Compile a spec and remember its name, XML digest and spec (for `model_spec`)."""
    model = spec.compile()
    _LOADED[model] = (name, hashlib.sha256(spec.to_xml().encode()).hexdigest())
    _SPECS[model] = spec
    return model


def model_spec(model: mujoco.MjModel) -> mujoco.MjSpec:
    """A copy of the spec a model was compiled from (models from `load_model`/`compile_spec`)."""
    if model not in _SPECS:
        raise ModelError("model has no known spec; build it with load_model or compile_spec")
    return _SPECS[model].copy()


def muscle_moment_arms(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """(n_muscles, nv) moment arms d(length)/dq of the muscles at the state of `data` (after
    `mj_forward`); qfrc_actuator = moment_arms.T @ actuator_force over muscles."""
    dense = np.zeros((model.nu, model.nv))
    for i in range(model.nu):  # MuJoCo stores actuator_moment in compressed sparse rows
        adr, nnz = data.moment_rowadr[i], data.moment_rownnz[i]
        dense[i, data.moment_colind[adr : adr + nnz]] = data.actuator_moment[adr : adr + nnz]
    return dense[muscle_actuators(model)]


def muscle_fmax(model: mujoco.MjModel) -> np.ndarray:
    """Peak isometric force (N) per muscle, resolving MuJoCo's automatic force (scale / acc0)."""
    ids = muscle_actuators(model)
    force = model.actuator_gainprm[ids, 2].copy()
    auto = force < 0  # MuJoCo then uses gainprm[3] / actuator_acc0 at run time
    force[auto] = model.actuator_gainprm[ids[auto], 3] / model.actuator_acc0[ids[auto]]
    return force


def control_frame_skip(model: mujoco.MjModel, control_hz: float) -> int:
    """Physics steps per control step for a control rate; it must divide the physics rate (1 %)."""
    dt = float(model.opt.timestep)
    if not np.isfinite(control_hz) or control_hz <= 0 or control_hz > 1.0 / dt * 1.0001:
        raise ModelError(f"control rate {control_hz} Hz is not in (0, {1.0 / dt:g}] Hz")
    skip = max(1, round(1.0 / (dt * control_hz)))
    actual = 1.0 / (dt * skip)
    if abs(actual - control_hz) > 0.01 * control_hz:
        raise ModelError(
            f"control rate {control_hz} Hz does not divide the physics rate {1.0 / dt:g} Hz "
            f"(nearest: {actual:g} Hz with {skip} physics steps)"
        )
    return skip


def _side(name: str) -> str:
    """'r' or 'l' from a first or last name token ('r', 'right', 'l', 'left'), else 'center'."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    ends = {tokens[0], tokens[-1]} if tokens else set()
    if ends & {"r", "right"}:
        return "r"
    if ends & {"l", "left"}:
        return "l"
    return "center"


# Body-name keywords per region, most distal first: a name token that starts or ends with one
# selects the region; a body without one inherits its parent's region.
_REGIONS = (
    ("hand", ("hand", "lunate", "scaphoid", "pisiform", "triquetrum", "capitate", "trapez",
              "hamate", "mc", "ph", "thumb", "finger", "carp", "palm")),
    ("arm", ("hum", "ulna", "radius", "scap", "clav", "arm", "shoulder", "elbow", "wrist")),
    ("leg", ("femur", "tibia", "fibula", "talus", "calc", "toe", "patella", "foot", "leg",
             "thigh", "shank", "knee", "ankle", "hip")),
    ("trunk", ("pelvis", "sacrum", "lumbar", "abdomen", "torso", "thorax", "spine", "cervical",
               "neck", "head", "chest", "trunk", "root")),
)  # fmt: skip


def _region(name: str) -> str | None:
    tokens = [t for t in re.split(r"[^a-z]+", name.lower()) if t]
    for region, keys in _REGIONS:
        if any(t.startswith(k) or t.endswith(k) for t in tokens for k in keys):
            return region
    return None


def body_regions(model: mujoco.MjModel) -> tuple[str, ...]:
    """A region per body ('hand', 'arm', 'leg', 'trunk', else 'other') from body-name keywords."""
    out: list[str] = []
    for b in range(model.nbody):
        region = _region(model.body(b).name)
        out.append(region or (out[model.body_parentid[b]] if b > 0 else "other"))
    return tuple(out)


def hand_joints(model: mujoco.MjModel) -> np.ndarray:
    """Finger joints: those below a body that branches into four or more digit chains (palm)."""
    parent = model.body_parentid
    has_child = np.zeros(model.nbody, dtype=bool)
    has_child[parent[1:]] = True
    chains = np.zeros(model.nbody, dtype=int)  # children that have children of their own
    np.add.at(chains, parent[1:][has_child[1:]], 1)
    # The trunk may branch too (legs, arms, head); the palm is the branching body below an arm.
    regions = body_regions(model)
    palm = np.array([chains[b] >= 4 and regions[b] in ("hand", "arm") for b in range(model.nbody)])
    below = np.zeros(model.nbody, dtype=bool)
    for b in range(1, model.nbody):  # parents precede children
        below[b] = below[parent[b]] or palm[parent[b]]
    return np.flatnonzero(below[model.jnt_bodyid])


def _lock_fingers(spec: mujoco.MjSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Remove the finger joints and every muscle crossing them; returns both name lists."""
    model = spec.compile()
    joints = hand_joints(model)
    if joints.size == 0:
        return (), ()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    finger_dof = np.zeros(model.nv, dtype=bool)
    finger_dof[model.jnt_dofadr[joints]] = True  # hinge and slide joints: one DoF each
    # Extrinsic finger muscles also cross the wrist; with the fingers rigid they would act as
    # extra wrist muscles, so they go too (MyoFullBody: 62 muscles, leaving 354).
    crosses = (np.abs(muscle_moment_arms(model, data)) > 1e-9)[:, finger_dof].any(axis=1)
    muscles = tuple(model.actuator(int(i)).name for i in muscle_actuators(model)[crosses])
    names = tuple(model.joint(int(j)).name for j in joints)
    for eq in list(spec.equalities):
        if eq.type == mujoco.mjtEq.mjEQ_JOINT and (eq.name1 in names or eq.name2 in names):
            spec.delete(eq)
    for name in names:
        spec.delete(spec.joint(name))
    tendons = set()
    for name in muscles:
        act = spec.actuator(name)
        if act.trntype == mujoco.mjtTrn.mjTRN_TENDON:
            tendons.add(act.target)
        spec.delete(act)
    used = {a.target for a in spec.actuators} | {s.objname for s in spec.sensors}
    for name in tendons - used:
        spec.delete(spec.tendon(name))
    return names, muscles


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
    dof_side = np.array([_side(model.body(int(b)).name) for b in model.dof_bodyid])
    sides, regions = [], []
    for name, row in zip(muscle_names(model), crosses, strict=True):
        body_sides = set(dof_side[row]) - {"center"}
        side = _side(name)
        sides.append(str(body_sides.pop()) if side == "center" and len(body_sides) == 1 else side)
        found = set(dof_region[row])
        regions.append(next((r for r in _REGION_ORDER if r in found), "other"))
    return tuple(sides), tuple(regions)


def _has_floor(model: mujoco.MjModel) -> bool:
    planes = (model.geom_type == int(mujoco.mjtGeom.mjGEOM_PLANE)) & (model.geom_bodyid == 0)
    return bool(planes.any())


def _feet(model: mujoco.MjModel) -> dict[str, tuple[str, ...]]:
    """Foot bodies: from the packaged correspondence file, else the lowest colliding bodies."""
    from msconvert.emulator.retarget.correspondence import (  # retarget imports this module
        CorrespondenceError,
        default_correspondence_path,
        load_correspondence,
    )

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
    collides = (model.geom_contype & model.geom_conaffinity[floor]) | (
        model.geom_conaffinity & model.geom_contype[floor]
    )
    geoms = np.flatnonzero((collides != 0) & (model.geom_bodyid > 0))
    bottom = data.geom_xpos[geoms, 2] - model.geom_rbound[geoms]
    low = geoms[bottom < bottom.min() + 0.05] if geoms.size else geoms
    feet: dict[str, list[str]] = {"left": [], "right": []}
    for g in low:
        body = model.body(int(model.geom_bodyid[g])).name
        side = {"l": "left", "r": "right"}.get(_side(body))
        if side and body not in feet[side]:
            feet[side].append(body)
    return {side: tuple(bodies) for side, bodies in feet.items()}


def describe_model(model: mujoco.MjModel) -> ModelInfo:
    """Muscles (F_max, side, region), joints, key bodies, feet and mass of a model."""
    from msconvert.emulator.retarget.correspondence import (
        CorrespondenceError,
        default_correspondence_path,
        load_correspondence,
    )

    names = muscle_names(model)
    sides, regions = _muscle_groups(model)
    feet = _feet(model)
    try:
        cset = load_correspondence(default_correspondence_path(model))
        key = tuple(dict.fromkeys(e.body for e in cset.entries))
    except CorrespondenceError:  # no file: the root body and the feet
        key = (model.body(1).name, *feet["left"], *feet["right"]) if model.nbody > 1 else ()
    has_floor = _has_floor(model)
    locked = _LOCKED.get(model, ((), ()))
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
        phantom_bodies=_PHANTOMS.get(model, ()),
    )
