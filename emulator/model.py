"""Musculoskeletal model loading and the few model facts the stages need (muscles, floor, feet)."""

from __future__ import annotations

import hashlib
import weakref
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


def load_model(path: str | Path | None = None) -> mujoco.MjModel:
    """Compile an MJCF (None: MyoFullBody), adding a floor plane when the model has none."""
    file = default_model_path() if path is None else Path(path)
    # MuJoCo resolves mesh and include paths against the model file only when that path is absolute.
    file = file.expanduser().resolve()
    if not file.is_file():
        raise ModelError(f"{file}: model file not found")
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
        model = spec.compile()
        xml = spec.to_xml()
    except ValueError as exc:
        raise ModelError(f"{file}: cannot compile model ({str(exc).splitlines()[0]})") from exc
    if muscle_actuators(model).size == 0:
        raise ModelError(f"{file}: model has no muscle actuators")
    name = DEFAULT_MODEL if path is None else file.stem
    _LOADED[model] = (name, hashlib.sha256(xml.encode()).hexdigest())
    return model


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
