"""Correspondences as data: which model frame follows which SMPL joint, with weights and offsets.

A correspondence file (JSON) lists, per model, entries mapping an SMPL body joint to a model body
or site, a calibration pose that puts the model in SMPL's rest pose (a T-pose facing -y in a z-up
world), and the bodies of each foot. Offsets may be "auto": the point is then placed where the
other side's point lies when the source rest skeleton is laid over the calibrated model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from msconvert.datasets.kinematics import Skeleton
from msconvert.datasets.motion import BODY_JOINT_NAMES
from msconvert.emulator.model import foot_contact_geoms, model_name
from msconvert.emulator.retarget.coordinates import JointSpace, build_joint_space
from msconvert.emulator.retarget.exceptions import CorrespondenceError
from msconvert.emulator.retarget.rotations import matrix_to_quat, quat_conj, quat_mul

AUTO = "auto"
FEET = ("left", "right")
# SMPL's rest skeleton is y-up, facing +z; this rotation (+90° about x) stands it in the z-up world.
SOURCE_REST_ROTATION = Rotation.from_rotvec([np.pi / 2, 0.0, 0.0]).as_matrix()
_FACING_TOLERANCE_DEG = 30.0


@dataclass(frozen=True)
class Correspondence:
    """One SMPL joint followed by one model frame."""

    name: str
    source: str  # SMPL body joint name
    body: str  # model body name (a site entry is resolved to its body at load time)
    site: str | None
    offset: tuple[float, float, float] | None  # in the body (or site) frame, metres; None = auto
    source_offset: tuple[float, float, float] | None  # in the SMPL joint frame; None = auto
    position_weight: float
    orientation_weight: float


@dataclass(frozen=True)
class CorrespondenceSet:
    """A whole correspondence file."""

    model: str
    path: str
    entries: tuple[Correspondence, ...]
    calibration_pose: Mapping[str, float]  # joint name -> value putting the model in SMPL's rest
    feet: Mapping[str, tuple[str, ...]]  # 'left'/'right' -> the foot's bodies


def packaged_correspondences() -> dict[str, Path]:
    """The correspondence files shipped with msconvert, by model key."""
    root = resources.files("msconvert.emulator").joinpath("data")
    out = {}
    for item in root.iterdir():
        m = re.fullmatch(r"retarget_(.+)\.json", item.name)
        if m:
            out[m.group(1)] = Path(str(item))
    return out


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def default_correspondence_path(model: mujoco.MjModel) -> Path:
    """The packaged file for this model: the longest model key found in its file or MJCF name."""
    names = {_key(model_name(model)), _key(model.names[: model.names.index(b"\0")].decode())}
    packaged = packaged_correspondences()
    keys = sorted((k for k in packaged if any(k in n for n in names)), key=len)
    if not keys:
        raise CorrespondenceError(
            f"no packaged correspondence file for model '{model_name(model)}' "
            f"(have: {', '.join(sorted(packaged))}); pass one explicitly"
        )
    return packaged[keys[-1]]


def _vector(value: object, where: str) -> tuple[float, float, float] | None:
    if value == AUTO:
        return None
    arr = np.asarray(value, dtype=float)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise CorrespondenceError(f'{where}: expected 3 finite numbers or "auto"')
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _weight(value: object, where: str) -> float:
    w = float(value)  # type: ignore[arg-type]
    if not np.isfinite(w) or w < 0:
        raise CorrespondenceError(f"{where}: weight must be a finite number >= 0")
    return w


def load_correspondence(path: str | Path) -> CorrespondenceSet:
    """Read and check a correspondence file (structure only; `bind` checks it against a model)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CorrespondenceError(f"{path}: cannot read correspondence file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("correspondences"), list):
        raise CorrespondenceError(f"{path}: expected an object with a 'correspondences' list")
    entries = []
    seen = set()
    for i, e in enumerate(doc["correspondences"]):
        where = f"{path.name}: correspondence {i}"
        if not isinstance(e, dict):
            raise CorrespondenceError(f"{where}: expected an object")
        unknown = set(e) - {
            "name",
            "source",
            "body",
            "site",
            "offset",
            "source_offset",
            "position_weight",
            "orientation_weight",
        }
        if unknown:
            raise CorrespondenceError(f"{where}: unknown keys {sorted(unknown)}")
        name = str(e.get("name", ""))
        where = f"{path.name}: correspondence '{name}'"
        if not name or name in seen:
            raise CorrespondenceError(f"{where}: names must be present and unique")
        seen.add(name)
        if e.get("source") not in BODY_JOINT_NAMES:
            raise CorrespondenceError(f"{where}: source must be an SMPL body joint name")
        if ("body" in e) == ("site" in e):
            raise CorrespondenceError(f"{where}: give exactly one of 'body' or 'site'")
        offset = _vector(e.get("offset", [0.0, 0.0, 0.0]), f"{where} offset")
        source_offset = _vector(e.get("source_offset", [0.0, 0.0, 0.0]), f"{where} source_offset")
        if offset is None and source_offset is None:
            raise CorrespondenceError(f"{where}: offset and source_offset cannot both be auto")
        pw = _weight(e.get("position_weight", 1.0), where)
        ow = _weight(e.get("orientation_weight", 0.0), where)
        if pw == 0 and ow == 0:
            raise CorrespondenceError(f"{where}: position and orientation weights are both 0")
        entries.append(
            Correspondence(
                name=name,
                source=e["source"],
                body=str(e.get("body", "")),
                site=str(e["site"]) if "site" in e else None,
                offset=offset,
                source_offset=source_offset,
                position_weight=pw,
                orientation_weight=ow,
            )
        )
    if not entries:
        raise CorrespondenceError(f"{path}: no correspondences")
    if sum(e.source == BODY_JOINT_NAMES[0] for e in entries) == 0:
        raise CorrespondenceError(f"{path}: no correspondence follows the SMPL root (pelvis)")
    pose = doc.get("calibration_pose", {})
    feet = doc.get("feet", {})
    if not isinstance(pose, dict) or not all(isinstance(v, (int, float)) for v in pose.values()):
        raise CorrespondenceError(f"{path}: calibration_pose must map joint names to numbers")
    if not isinstance(feet, dict) or set(feet) != set(FEET):
        raise CorrespondenceError(f"{path}: feet must list the bodies of 'left' and 'right'")
    return CorrespondenceSet(
        model=str(doc.get("model", path.stem)),
        path=str(path),
        entries=tuple(entries),
        calibration_pose={str(k): float(v) for k, v in pose.items()},
        feet={side: tuple(str(b) for b in feet[side]) for side in FEET},
    )


@dataclass(frozen=True, eq=False)
class Binding:
    """A correspondence set resolved against one model and one source skeleton."""

    names: tuple[str, ...]
    source_joint: np.ndarray  # (C,) SMPL joint index
    source_offset: np.ndarray  # (C, 3) in the SMPL joint frame
    body: np.ndarray  # (C,) model body id
    offset: np.ndarray  # (C, 3) in the body frame
    position_weight: np.ndarray  # (C,)
    orientation_weight: np.ndarray  # (C,)
    rotation_offset: np.ndarray  # (C, 4) body orientation = source joint orientation ⊗ this
    parent: np.ndarray  # (C,) the correspondence one segment up the SMPL tree, -1 for the root
    model_rest: np.ndarray  # (C, 3) model points in the calibration pose
    source_rest: np.ndarray  # (C, 3) source points at rest, stood in the z-up world, unscaled
    segment_scale: np.ndarray  # (C,) model length / source length of the segment to the parent
    uniform_scale: float  # least-squares model/source ratio over joint-centre segments
    foot_geoms: tuple[np.ndarray, ...]  # per foot (left, right): floor-contact geom ids
    foot_points: tuple[np.ndarray, ...]  # per foot: correspondences on the foot's bodies
    calibration_qpos: np.ndarray  # (nq,)
    space: JointSpace


def _parents(entries: tuple[Correspondence, ...], skeleton: Skeleton) -> np.ndarray:
    """Each entry's nearest entry up the SMPL tree (first its own joint's entry, if offset)."""
    joint = [BODY_JOINT_NAMES.index(e.source) for e in entries]
    at_joint = {}
    for i, e in enumerate(entries):
        if e.source_offset == (0.0, 0.0, 0.0) and joint[i] not in at_joint:
            at_joint[joint[i]] = i
    parent = np.full(len(entries), -1)
    for i in range(len(entries)):
        j = joint[i]
        if at_joint.get(j, i) != i:  # a point offset from a joint hangs off that joint's entry
            parent[i] = at_joint[j]
            continue
        j = int(skeleton.parents[j])
        while j >= 0 and j not in at_joint:
            j = int(skeleton.parents[j])
        parent[i] = at_joint[j] if j >= 0 else -1
    roots = np.flatnonzero(parent < 0)
    if roots.size != 1:
        names = ", ".join(entries[i].name for i in roots)
        raise CorrespondenceError(f"correspondences must form one tree; roots: {names}")
    return parent


def _idw_shift(points: np.ndarray, at: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Inverse-square-distance blend of per-point shifts, evaluated at `at`."""
    w = 1.0 / (np.sum((points - at) ** 2, axis=1) + 0.03**2)
    return (w[:, None] * shifts).sum(0) / w.sum()


def bind(cset: CorrespondenceSet, model: mujoco.MjModel, skeleton: Skeleton) -> Binding:
    """Resolve names, build the IK's joint space, calibrate offsets and segment scales."""
    where = Path(cset.path).name

    def obj_id(kind: mujoco.mjtObj, name: str) -> int:
        i = mujoco.mj_name2id(model, kind, name)
        if i < 0:
            raise CorrespondenceError(f"{where}: model has no {kind.name[6:].lower()} '{name}'")
        return i

    n = len(cset.entries)
    body = np.zeros(n, dtype=int)
    offset: list[np.ndarray | None] = []
    for i, e in enumerate(cset.entries):
        if e.site is not None:
            s = obj_id(mujoco.mjtObj.mjOBJ_SITE, e.site)
            body[i] = model.site_bodyid[s]
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, model.site_quat[s])
            o = None if e.offset is None else model.site_pos[s] + rot.reshape(3, 3) @ e.offset
        else:
            body[i] = obj_id(mujoco.mjtObj.mjOBJ_BODY, e.body)
            o = None if e.offset is None else np.asarray(e.offset)
        offset.append(o)

    try:
        space = build_joint_space(model, body.tolist())
    except ValueError as exc:
        raise CorrespondenceError(f"{where}: {exc}") from exc

    # The calibration pose: neutral plus the file's joint values, couplings applied.
    qpos = space.neutral.copy()
    for name, value in cset.calibration_pose.items():
        j = obj_id(mujoco.mjtObj.mjOBJ_JOINT, name)
        if model.jnt_type[j] not in (
            int(mujoco.mjtJoint.mjJNT_HINGE),
            int(mujoco.mjtJoint.mjJNT_SLIDE),
        ):
            raise CorrespondenceError(f"{where}: calibration joint '{name}' is not a hinge/slide")
        qpos[model.jnt_qposadr[j]] = value
    space.couplings.apply(qpos)
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    xpos, xmat = data.xpos[body], data.xmat[body].reshape(n, 3, 3)

    joint = np.array([BODY_JOINT_NAMES.index(e.source) for e in cset.entries])
    parent = _parents(cset.entries, skeleton)
    src_off = np.array([e.source_offset or (0.0, 0.0, 0.0) for e in cset.entries], dtype=float)
    source_rest = (skeleton.rest_joints[joint] + src_off) @ SOURCE_REST_ROTATION.T
    model_rest = np.array(
        [xpos[i] + xmat[i] @ o if o is not None else np.zeros(3) for i, o in enumerate(offset)]
    )

    # Uniform scale: least squares over segments whose both ends are fixed on both sides.
    explicit = np.array(
        [
            o is not None and e.source_offset is not None
            for e, o in zip(cset.entries, offset, strict=True)
        ]
    )
    seg = np.flatnonzero((parent >= 0) & explicit & explicit[np.maximum(parent, 0)])
    ls = np.linalg.norm(source_rest[seg] - source_rest[parent[seg]], axis=1)
    lm = np.linalg.norm(model_rest[seg] - model_rest[parent[seg]], axis=1)
    if seg.size == 0 or ls @ ls < 1e-8:
        raise CorrespondenceError(f"{where}: no segment with fixed offsets at both ends to scale")
    scale = float(lm @ ls / (ls @ ls))

    # Facing check: the calibrated model and the standing source must agree on directions.
    e_idx = np.flatnonzero(explicit)
    a = source_rest[e_idx] - source_rest[e_idx].mean(0)
    b = model_rest[e_idx] - model_rest[e_idx].mean(0)
    rot, _ = Rotation.align_vectors(b, a)
    if np.degrees(rot.magnitude()) > _FACING_TOLERANCE_DEG:
        raise CorrespondenceError(
            f"{where}: the calibration pose is {np.degrees(rot.magnitude()):.0f}° away from SMPL's "
            "rest pose (a T-pose facing -y, z up); fix calibration_pose"
        )

    # Auto offsets: lay the scaled source over the model, aligned locally at the fixed points.
    shifts = model_rest[e_idx] - scale * source_rest[e_idx]
    body_offset = np.zeros((n, 3))
    for i, e in enumerate(cset.entries):
        if offset[i] is None:
            model_rest[i] = scale * source_rest[i] + _idw_shift(
                source_rest[e_idx], source_rest[i], shifts
            )
            body_offset[i] = xmat[i].T @ (model_rest[i] - xpos[i])
        else:
            body_offset[i] = offset[i]
        if e.source_offset is None:
            world = (model_rest[i] - _idw_shift(model_rest[e_idx], model_rest[i], shifts)) / scale
            source_rest[i] = world
            src_off[i] = SOURCE_REST_ROTATION.T @ world - skeleton.rest_joints[joint[i]]

    ls_all = np.linalg.norm(source_rest - source_rest[np.maximum(parent, 0)], axis=1)
    lm_all = np.linalg.norm(model_rest - model_rest[np.maximum(parent, 0)], axis=1)
    segment_scale = np.where(
        (parent >= 0) & (ls_all > 1e-6), lm_all / np.maximum(ls_all, 1e-6), scale
    )

    q_rest = matrix_to_quat(SOURCE_REST_ROTATION)
    rotation_offset = quat_mul(quat_conj(q_rest)[None], data.xquat[body])

    foot_geoms, foot_points = [], []
    for side in FEET:
        bodies = cset.feet[side]
        ids = [obj_id(mujoco.mjtObj.mjOBJ_BODY, b) for b in bodies]
        geoms = foot_contact_geoms(model, bodies)
        if geoms.size == 0:
            raise CorrespondenceError(
                f"{where}: the {side} foot has no geom that touches the floor"
            )
        foot_geoms.append(geoms)
        foot_points.append(np.flatnonzero(np.isin(body, ids)))
        if foot_points[-1].size == 0:
            raise CorrespondenceError(f"{where}: no correspondence on the {side} foot's bodies")

    return Binding(
        names=tuple(e.name for e in cset.entries),
        source_joint=joint,
        source_offset=src_off,
        body=body,
        offset=body_offset,
        position_weight=np.array([e.position_weight for e in cset.entries]),
        orientation_weight=np.array([e.orientation_weight for e in cset.entries]),
        rotation_offset=rotation_offset,
        parent=parent,
        model_rest=model_rest,
        source_rest=source_rest,
        segment_scale=segment_scale,
        uniform_scale=scale,
        foot_geoms=tuple(foot_geoms),
        foot_points=tuple(foot_points),
        calibration_qpos=qpos,
        space=space,
    )
