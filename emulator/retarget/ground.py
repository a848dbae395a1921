"""Feet and floor: stance detection, lowest points of foot geoms, the floor under the targets,
the IK's floor contacts, and the vertical root shift.

The floor is part of the fit, not only a shift afterwards: a root shift alone cannot put a
stance foot down when the other foot's toes dip below it (the model's toes follow the source's
pitched foot at push-off): it lifts the whole body and the landing foot floats 2-3 cm. So the
IK holds each stance foot's lowest point on the floor estimated from the targets and keeps
every foot geom above it; the shift after the IK only absorbs what is left.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import mujoco
import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

_EZ = np.array([0.0, 0.0, 1.0])
_SPHERE, _CAPSULE, _ELLIPSOID, _BOX, _CYLINDER, _MESH = (
    int(t)
    for t in (
        mujoco.mjtGeom.mjGEOM_SPHERE,
        mujoco.mjtGeom.mjGEOM_CAPSULE,
        mujoco.mjtGeom.mjGEOM_ELLIPSOID,
        mujoco.mjtGeom.mjGEOM_BOX,
        mujoco.mjtGeom.mjGEOM_CYLINDER,
        mujoco.mjtGeom.mjGEOM_MESH,
    )
)


def detect_stance(
    points: np.ndarray, fps: float, max_speed: float, max_height: float
) -> np.ndarray:
    """(T,) True where any of a foot's points (T, k, 3) is slow and near its lowest level."""
    speed = np.linalg.norm(np.gradient(points, 1.0 / fps, axis=0), axis=-1)  # T >= 2 frames
    low = np.percentile(points[..., 2], 5, axis=0)
    return np.any((speed < max_speed) & (points[..., 2] < low + max_height), axis=1)


def _type_groups(model: mujoco.MjModel, geoms: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(geom type, positions in `geoms`) of each type present."""
    types = model.geom_type[geoms]
    return [(int(kind), np.flatnonzero(types == kind)) for kind in np.unique(types)]


def _lowest_local(
    model: mujoco.MjModel, geoms: np.ndarray, kind: int, k: np.ndarray, down: np.ndarray
) -> np.ndarray:
    """The lowest surface points, in their geoms' frames, of geoms[k] (all of type `kind`),
    given world -z in each geom's frame, `down` (..., len(k), 3)."""
    s = model.geom_size[geoms[k]]
    end = np.where(down[..., 2:] >= 0, 1.0, -1.0) * _EZ  # the end of the axis that points down
    if kind == _SPHERE:
        return s[:, :1] * down
    if kind == _CAPSULE:
        return s[:, :1] * down + s[:, 1:2] * end
    if kind == _ELLIPSOID:
        sd = s * down
        return s * sd / np.linalg.norm(sd, axis=-1, keepdims=True)
    if kind == _BOX:
        return s * np.where(down >= 0, 1.0, -1.0)
    if kind == _CYLINDER:
        radial = down * [1.0, 1.0, 0.0]
        norm = np.linalg.norm(radial, axis=-1, keepdims=True)
        return s[:, :1] * radial / np.maximum(norm, 1e-12) + s[:, 1:2] * end
    if kind == _MESH:
        out = np.empty(down.shape)
        for i, g in enumerate(geoms[k]):
            m = model.geom_dataid[g]
            adr = model.mesh_vertadr[m]
            verts = model.mesh_vert[adr : adr + model.mesh_vertnum[m]]
            out[..., i, :] = verts[np.argmax(down[..., i, :] @ verts.T, axis=-1)]
        return out
    raise ValueError(f"foot geom {geoms[k[0]]} has a type ({kind}) without a lowest point")


def lowest_surface_points(
    model: mujoco.MjModel,
    geoms: np.ndarray,
    pos: np.ndarray,
    mat: np.ndarray,
    groups: list[tuple[int, np.ndarray]] | None = None,
) -> np.ndarray:
    """(..., G, 3) world position of each geom's lowest surface point, given its poses
    (..., G, 3) and (..., G, 3, 3). A convex geom's lowest height moves with q as that point
    does, fixed to its body: its Jacobian is the floor contact's."""
    down = -mat[..., 2, :]  # world -z in each geom's frame
    local = np.empty(pos.shape)
    for kind, k in groups if groups is not None else _type_groups(model, geoms):
        local[..., k, :] = _lowest_local(model, geoms, kind, k, down[..., k, :])
    return pos + np.einsum("...ij,...j->...i", mat, local)


def lowest_points(
    model: mujoco.MjModel, geoms: np.ndarray, pos: np.ndarray, mat: np.ndarray
) -> np.ndarray:
    """(T, G) world height of each geom's lowest point, given poses (T, G, 3) and (T, G, 3, 3)."""
    return lowest_surface_points(model, geoms, pos, mat)[..., 2]


def sole_depths(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    bodies: np.ndarray,
    offsets: np.ndarray,
    points: tuple[np.ndarray, ...],
    geoms: tuple[np.ndarray, ...],
) -> np.ndarray:
    """Per foot point, how far below it the foot's sole lies with the foot flat (at qpos, the
    calibration pose); 0 for points not on a foot. bodies/offsets: the correspondences'."""
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    depth = np.zeros(bodies.size)
    for idx, gs in zip(points, geoms, strict=True):
        sole = lowest_points(
            model, gs, data.geom_xpos[gs][None], data.geom_xmat[gs].reshape(1, -1, 3, 3)
        )
        z = data.xpos[bodies[idx], 2] + np.einsum(
            "cj,cj->c", data.xmat[bodies[idx]].reshape(-1, 3, 3)[:, 2], offsets[idx]
        )
        depth[idx] = sole.min() - z
    return depth


def floor_estimate(
    points: np.ndarray,
    stance: np.ndarray,
    foot_points: tuple[np.ndarray, ...],
    depth: np.ndarray,
    fps: float,
    smooth_s: float,
) -> np.ndarray:
    """(T,) the floor's height under the targets: where the model's sole would be, were each
    stance foot's points (T, C, 3) reached, its lowest point taken; smooth, and carried across
    frames with no foot in stance (flight) by interpolation."""
    t = points.shape[0]
    sole = np.full((t, len(foot_points)), np.inf)
    for f, idx in enumerate(foot_points):
        sole[:, f] = np.where(stance[:, f], (points[:, idx, 2] + depth[idx]).min(1), np.inf)
    level = sole.min(1)
    contact = np.isfinite(level)
    if not contact.any():  # airborne throughout: the lowest sole seen is the floor
        return np.full(
            t,
            (points[:, np.concatenate(foot_points), 2] + depth[np.concatenate(foot_points)]).min(),
        )
    frames = np.arange(t)
    level = np.interp(frames, frames[contact], level[contact])
    return gaussian_filter1d(level, sigma=max(smooth_s * fps, 1e-6), mode="nearest")


@dataclass(frozen=True, eq=False)
class FloorContact:
    """The floor as the IK sees it: each stance foot's lowest point on it, no foot geom below.

    height (T,) is the floor in the targets' frame; stance (T, 2) says which feet carry weight.
    """

    geoms: tuple[np.ndarray, ...]  # per foot (left, right): floor-contact geom ids
    height: np.ndarray
    stance: np.ndarray
    weight: float = 10.0
    _groups: list[tuple[int, np.ndarray]] | None = field(default=None, repr=False)

    def rows(
        self, model: mujoco.MjModel, data: mujoco.MjData, t: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The contact rows at frame t for the kinematics in data: residuals (K,) in metres, and
        for each row its geom's body and the world point whose height is the residual."""
        gs, floor = self.all_geoms, self.height[t]
        low = lowest_surface_points(
            model,
            gs,
            data.geom_xpos[gs],
            data.geom_xmat[gs].reshape(-1, 3, 3),
            self.groups(model),
        )
        rows = low[:, 2] < floor
        for f, (a, b) in enumerate(self.bounds):
            if self.stance[t, f]:  # on the floor, from above as from below
                rows[a + np.argmin(low[a:b, 2])] = True
        return low[rows, 2] - floor, model.geom_bodyid[gs[rows]], low[rows]

    def groups(self, model: mujoco.MjModel) -> list[tuple[int, np.ndarray]]:
        if self._groups is None:
            object.__setattr__(self, "_groups", _type_groups(model, self.all_geoms))
        return self._groups

    @functools.cached_property
    def all_geoms(self) -> np.ndarray:
        return np.concatenate(self.geoms)

    @functools.cached_property
    def bounds(self) -> list[tuple[int, int]]:
        edges = np.cumsum([0] + [g.size for g in self.geoms])
        return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def ground_shift(
    lowest: np.ndarray, contact: np.ndarray, fps: float, tolerance: float, smooth_s: float
) -> np.ndarray:
    """(T,) smooth vertical root shift: lowest foot on the floor in contact frames, none too deep.

    lowest (T,): the lowest foot point's height above the floor; contact (T,): a foot in stance.
    """
    t = lowest.shape[0]
    if contact.any():
        frames = np.arange(t)
        wanted = np.interp(frames, frames[contact], -lowest[contact])
    else:  # never in stance (e.g. a clip that is airborne throughout): lowest point on the floor
        wanted = np.full(t, -lowest.min())
    sigma = max(smooth_s * fps, 1e-6)
    shift = gaussian_filter1d(wanted, sigma=sigma, mode="nearest")
    margin = 0.5 * tolerance
    width = 2 * int(round(2 * sigma)) + 1
    for _ in range(20):  # lift smoothly wherever a foot still goes too deep
        deficit = np.maximum(-(lowest + shift) - margin, 0.0)
        if not deficit.any():
            break
        bump = gaussian_filter1d(maximum_filter1d(deficit, width), sigma, mode="nearest")
        shift += np.maximum(bump, 0.5 * deficit)
    return np.maximum(shift, -lowest - margin)  # guaranteed; by now rarely active


def vertical_direction(model: mujoco.MjModel, qpos: np.ndarray) -> np.ndarray:
    """A qvel vector that, integrated for 1, lifts the whole model by 1 m (root translation dofs).

    Constant for a free root, or for root slides listed before the root's hinges (as models do).
    """
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    root = int(model.jnt_bodyid[0]) if model.njnt else 0
    if root == 0 or model.body_parentid[root] != 0:
        raise ValueError("the model has no root joint to lift it with")
    jacp = np.zeros((3, model.nv))
    mujoco.mj_jacBody(model, data, jacp, None, root)
    trans = np.zeros(model.nv, dtype=bool)
    for j in np.flatnonzero(model.jnt_bodyid == root):
        adr = model.jnt_dofadr[j]
        if model.jnt_type[j] == int(mujoco.mjtJoint.mjJNT_FREE):
            trans[adr : adr + 3] = True
        elif model.jnt_type[j] == int(mujoco.mjtJoint.mjJNT_SLIDE):
            trans[adr] = True
    sol, *_ = np.linalg.lstsq(jacp[:, trans], np.array([0.0, 0.0, 1.0]), rcond=None)
    if np.linalg.norm(jacp[:, trans] @ sol - [0, 0, 1]) > 1e-9:
        raise ValueError("the model's root cannot translate vertically")
    out = np.zeros(model.nv)
    out[trans] = sol
    return out
