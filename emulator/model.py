"""Musculoskeletal model loading and the few model facts the stages need (muscles, floor, feet)."""

from __future__ import annotations

import hashlib
import re
import weakref
from pathlib import Path

import mujoco
import numpy as np

DEFAULT_MODEL = "myofullbody"

# Name of every model made by `load_model`; a compiled MjModel has no room for it.
_LOADED: weakref.WeakKeyDictionary[mujoco.MjModel, str] = weakref.WeakKeyDictionary()


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
    stay rigid at their reference pose) and the muscles crossing them
    (see `model_info.describe_model`).
    Bodies whose inertia no body of their mass can have (radius of gyration above
    `PHANTOM_GYRATION_M`) get a negligible one unless `keep_phantom_inertia`: MyoFullBody's eight
    massless shoulder "phantom" bodies (1 g) carry 1 kg·m² each, which puts 2 kg·m² of inertia
    that no arm has on each shoulder's plane-of-elevation DoF (a walk's arm swing then asks
    ~60 N·m there, beyond its muscles). The bodies are listed by `model_info.describe_model`.
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
        return _LOADED[model]
    return model.names[: model.names.index(b"\0")].decode() or "model"  # the MJCF's model name


# Model identity (`model_sha256`): what the compiled model computes with, never where its files
# were. Left out: the asset file paths (`paths`, `*_pathadr`, and `nbuffer`/`npaths`, which grow
# with them), and what only renders (textures, materials, lights, cameras, skins, colours, texture
# coordinates, the `vis` settings), and the bounding-volume hierarchies (`bvh_*`, derived from the
# geometry, which is in; 30 of MyoFullBody's 60 MB). In: every other numeric array of the compiled
# model, its names, its sizes (as the arrays' shapes) and the `opt` and `stat` structs (the solver
# reads stat.meaninertia). MyoFullBody: ~14 MB hashed, ~15 ms.
_IDENTITY_SCHEME = b"msconvert-model-identity-v1"
_IDENTITY_SKIP_PREFIXES = ("tex_", "mat_", "light_", "cam_", "skin_", "bvh_")
_IDENTITY_SKIP = frozenset(
    {"paths", "mesh_texcoord", "mesh_facetexcoord", "mesh_texcoordadr", "mesh_texcoordnum"}
)


def _identity_field(name: str) -> bool:
    return not (
        name in _IDENTITY_SKIP
        or name.endswith(("_pathadr", "_rgba"))
        or name.startswith(_IDENTITY_SKIP_PREFIXES)
    )


def model_sha256(model: mujoco.MjModel) -> str:
    """The model's identity: SHA-256 of what defines its physics (the compiled model's numeric
    arrays, names, `opt` and `stat`), never of file paths, so the same model installed in two
    folders, or on two machines, hashes the same. Any change to the physics changes it."""
    digest = hashlib.sha256(_IDENTITY_SCHEME)

    def add(key: str, value: object) -> None:
        array = np.ascontiguousarray(value)
        digest.update(f"\0{key}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(array.tobytes())

    for name in sorted(dir(model)):
        if name.startswith("_") or not _identity_field(name):
            continue
        value = getattr(model, name)
        if isinstance(value, np.ndarray):
            add(name, value)
    add("names", np.frombuffer(model.names, dtype=np.uint8))
    for struct in ("opt", "stat"):
        fields = getattr(model, struct)
        for name in sorted(dir(fields)):
            value = getattr(fields, name)
            if not name.startswith("_") and isinstance(value, int | float | np.ndarray):
                add(f"{struct}.{name}", value)
    return digest.hexdigest()


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
    return np.flatnonzero(in_subtree[model.geom_bodyid] & collides_with(model, floor))


def collides_with(model: mujoco.MjModel, geom: int) -> np.ndarray:
    """(ngeom,) bool: which geoms MuJoCo's contype/conaffinity filter lets touch `geom`."""
    mask = (model.geom_contype & model.geom_conaffinity[geom]) | (
        model.geom_conaffinity & model.geom_contype[geom]
    )
    return mask != 0


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
    """Compile a spec and remember its name and spec (for `model_spec`); its identity is
    `model_sha256`, of the compiled arrays."""
    model = spec.compile()
    _LOADED[model] = name
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


def locked_parts(model: mujoco.MjModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The finger joints and muscles `load_model(lock_fingers=True)` removed (else empty)."""
    return _LOCKED.get(model, ((), ()))


def phantom_bodies(model: mujoco.MjModel) -> tuple[str, ...]:
    """Bodies whose implausible inertia `load_model` shrank (else empty)."""
    return _PHANTOMS.get(model, ())


def body_side(name: str) -> str:
    """'l', 'r' or 'center' from a body or muscle name's side suffix or prefix."""
    return _side(name)
