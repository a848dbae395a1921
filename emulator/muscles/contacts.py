"""Ground contact predicted from stance: candidate points on the feet (and, for floor work, the
hands, knees and pelvis) whose floor forces become unknowns of the muscle problem.

A point is a candidate while the *reference* holds it near the floor and slow (thresholds on
height and speed, with hysteresis), not only while MuJoCo's collision margin says so: retargeted
feet hover millimetres above the floor at heel strike and toe-off, where a collision test finds
nothing. Each foot carries several fixed points (the bottoms of its collision geoms: heel,
lateral and medial forefoot lines, toes), so the centre of pressure can travel from heel to toe.
Other bodies use the lowest point of each of their own collision geoms, frame by frame.
See docs/method.md#ground-contact.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from msconvert.emulator.model import ModelError, floor_geom, foot_contact_geoms

# Floor-work bodies, by the source joint their correspondence names (hands, knees, pelvis).
FLOOR_WORK_JOINTS = ("left_wrist", "right_wrist", "left_knee", "right_knee", "pelvis")
_CAPSULE = int(mujoco.mjtGeom.mjGEOM_CAPSULE)
_SPHERE = int(mujoco.mjtGeom.mjGEOM_SPHERE)
_ELLIPSOID = int(mujoco.mjtGeom.mjGEOM_ELLIPSOID)
_BOX = int(mujoco.mjtGeom.mjGEOM_BOX)


class ContactError(ValueError):
    """Contact settings or a model that cannot give contact candidates; one line."""


@dataclass(frozen=True)
class StanceRule:
    """When a point is a contact candidate: on below both thresholds, off above either of the
    (larger) off thresholds; heights are above the floor, speeds of the reference's point."""

    height_on_m: float = 0.06
    height_off_m: float = 0.08
    speed_on_ms: float = 2.0
    speed_off_ms: float = 3.0

    def __post_init__(self) -> None:
        for name in ("height_on_m", "height_off_m", "speed_on_ms", "speed_off_ms"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
                raise ContactError(f"stance rule {name} must be a positive number, not {value!r}")
        if self.height_off_m < self.height_on_m or self.speed_off_ms < self.speed_on_ms:
            raise ContactError("stance rule: the off thresholds must not be below the on ones")


@dataclass(frozen=True)
class ContactPoints:
    """The candidate points of a model: fixed points on the feet, and the floor-colliding geoms
    of other bodies (whose lowest point is taken frame by frame)."""

    floor: int
    floor_z: float
    friction: float
    foot_names: tuple[str, ...]
    body: np.ndarray  # (P,) body of each fixed point
    local: np.ndarray  # (P, 3) the centre of its rounding in the body frame
    radius: np.ndarray  # (P,) the rounding: the point is the bottom of this sphere (capsule ends)
    foot: np.ndarray  # (P,) the foot it belongs to
    geoms: np.ndarray  # (G,) floor-work geoms (lowest point per frame)
    geom_body_names: tuple[str, ...]

    @property
    def n(self) -> int:
        """Candidates per frame: fixed points, then one per floor-work geom."""
        return int(self.body.size + self.geoms.size)

    def world(self, model: mujoco.MjModel, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate's world position (n, 3) and body (n,), at data's kinematics."""
        pos = data.xpos[self.body] + np.einsum(
            "pij,pj->pi", data.xmat[self.body].reshape(-1, 3, 3), self.local
        )
        pos[:, 2] -= self.radius  # a capsule's end rolls: its lowest point moves on the foot
        if self.geoms.size:
            low = np.stack([_lowest_point(model, data, int(g)) for g in self.geoms])
            pos = np.concatenate([pos, low])
        return pos, np.concatenate([self.body, model.geom_bodyid[self.geoms]])


def contact_points(
    model: mujoco.MjModel,
    feet: Mapping[str, Sequence[str]],
    floor_work: Sequence[str] = (),
) -> ContactPoints:
    """Candidate points: the bottoms of each foot's collision geoms at the model's default
    pose, and the own collision geoms of the `floor_work` bodies."""
    try:
        floor = floor_geom(model)
    except ModelError as exc:
        raise ContactError(str(exc)) from exc
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    bodies, local, radius, foot = [], [], [], []
    for i, (side, names) in enumerate(feet.items()):
        try:
            geoms = foot_contact_geoms(model, list(names))
        except ModelError as exc:
            raise ContactError(str(exc)) from exc
        if geoms.size == 0:
            raise ContactError(f"foot {side!r} ({', '.join(names)}) has no floor-colliding geom")
        for g in geoms:
            b = int(model.geom_bodyid[g])
            rot = data.xmat[b].reshape(3, 3)
            for p, r in _bottom_points(model, data, int(g)):
                bodies.append(b)
                local.append(rot.T @ (p + [0.0, 0.0, r] - data.xpos[b]))
                radius.append(r)
                foot.append(i)
    extra = []
    for name in floor_work:
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if b < 0:
            raise ContactError(f"model has no body {name!r} for floor-work contact")
        own = foot_contact_geoms(model, [name])
        extra.extend(int(g) for g in own if model.geom_bodyid[g] == b)
    return ContactPoints(
        floor=floor,
        floor_z=float(data.geom_xpos[floor, 2]),
        friction=float(model.geom_friction[floor, 0]),
        foot_names=tuple(feet),
        body=np.asarray(bodies, int),
        local=np.asarray(local, float).reshape(-1, 3),
        radius=np.asarray(radius, float),
        foot=np.asarray(foot, int),
        geoms=np.asarray(extra, int),
        geom_body_names=tuple(
            dict.fromkeys(model.body(int(model.geom_bodyid[g])).name for g in extra)
        ),
    )


def floor_work_bodies(correspondence: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The hands', knees' and pelvis's bodies, from (source joint, body) correspondences."""
    found = dict(correspondence)
    return tuple(dict.fromkeys(found[j] for j in FLOOR_WORK_JOINTS if j in found))


def stance(
    model: mujoco.MjModel,
    points: ContactPoints,
    qpos: np.ndarray,
    fps: float,
    rule: StanceRule,
) -> np.ndarray:
    """(T, n) candidate mask of every point over a reference, with hysteresis."""
    data = mujoco.MjData(model)
    t = qpos.shape[0]
    pos = np.empty((t, points.n, 3))
    for k in range(t):
        data.qpos[:] = qpos[k]
        mujoco.mj_kinematics(model, data)
        pos[k] = points.world(model, data)[0]
    height = pos[..., 2] - points.floor_z
    speed = np.linalg.norm(np.gradient(pos, 1.0 / fps, axis=0), axis=-1) if t > 1 else 0 * height
    on = (height < rule.height_on_m) & (speed < rule.speed_on_ms)
    off = (height > rule.height_off_m) | (speed > rule.speed_off_ms)
    mask = np.zeros((t, points.n), bool)
    state = on[0]
    for k in range(t):
        state = (state | on[k]) & ~off[k]
        mask[k] = state
    return mask


def _bottom_points(
    model: mujoco.MjModel, data: mujoco.MjData, g: int
) -> list[tuple[np.ndarray, float]]:
    """A geom's lowest surface points at the current pose, each with the radius of the sphere it
    is the bottom of (a capsule: both ends; 0 for a fixed point)."""
    c, rot, size = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3), model.geom_size[g]
    down = np.array([0.0, 0.0, -1.0])
    kind = int(model.geom_type[g])
    if kind == _CAPSULE:
        axis = rot[:, 2] * size[1]
        r = float(size[0])
        return [(c + axis + r * down, r), (c - axis + r * down, r)]
    if kind == _SPHERE:
        return [(c + size[0] * down, float(size[0]))]
    if kind == _BOX:  # the four lowest corners
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
        corners = c + (signs * size) @ rot.T
        return [(p, 0.0) for p in corners[np.argsort(corners[:, 2])[:4]]]
    return [(_lowest_point(model, data, g), 0.0)]


def _lowest_point(model: mujoco.MjModel, data: mujoco.MjData, g: int) -> np.ndarray:
    """The lowest point of a geom's surface at the current pose."""
    c, rot, size = data.geom_xpos[g], data.geom_xmat[g].reshape(3, 3), model.geom_size[g]
    kind = int(model.geom_type[g])
    down = np.array([0.0, 0.0, -1.0])
    if kind == _SPHERE:
        return c + size[0] * down
    if kind == _CAPSULE:
        axis = rot[:, 2] * size[1]
        end = c + axis if axis[2] < 0 else c - axis
        return end + size[0] * down
    if kind == _ELLIPSOID:
        u = rot.T @ down  # the support point of an ellipsoid in direction u
        s2u = size**2 * u
        return c + rot @ (s2u / np.sqrt(max(float(u @ s2u), 1e-300)))
    return c + float(model.geom_rbound[g]) * down  # other shapes: their bounding sphere
