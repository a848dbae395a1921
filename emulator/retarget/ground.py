"""Feet and floor: stance detection, lowest points of foot geoms, and the vertical root shift."""

from __future__ import annotations

import mujoco
import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d


def detect_stance(
    points: np.ndarray, fps: float, max_speed: float, max_height: float
) -> np.ndarray:
    """(T,) True where any of a foot's points (T, k, 3) is slow and near its lowest level."""
    speed = np.linalg.norm(np.gradient(points, 1.0 / fps, axis=0), axis=-1)  # T >= 2 frames
    low = np.percentile(points[..., 2], 5, axis=0)
    return np.any((speed < max_speed) & (points[..., 2] < low + max_height), axis=1)


def lowest_points(
    model: mujoco.MjModel, geoms: np.ndarray, pos: np.ndarray, mat: np.ndarray
) -> np.ndarray:
    """(T, G) world height of each geom's lowest point, given poses (T, G, 3) and (T, G, 3, 3)."""
    down = mat[..., 2, :]  # row z of each rotation: the z-components of the geom's axes
    size = model.geom_size[geoms]
    out = np.empty(pos.shape[:2])
    types = model.geom_type[geoms]
    for k, (g, kind) in enumerate(zip(geoms, types, strict=True)):
        z, a, s = pos[:, k, 2], down[:, k], size[k]
        if kind == int(mujoco.mjtGeom.mjGEOM_SPHERE):
            out[:, k] = z - s[0]
        elif kind == int(mujoco.mjtGeom.mjGEOM_CAPSULE):
            out[:, k] = z - np.abs(a[:, 2]) * s[1] - s[0]
        elif kind == int(mujoco.mjtGeom.mjGEOM_ELLIPSOID):
            out[:, k] = z - np.sqrt(((a * s) ** 2).sum(1))
        elif kind == int(mujoco.mjtGeom.mjGEOM_BOX):
            out[:, k] = z - (np.abs(a) * s).sum(1)
        elif kind == int(mujoco.mjtGeom.mjGEOM_CYLINDER):
            out[:, k] = z - np.abs(a[:, 2]) * s[1] - s[0] * np.sqrt(np.clip(1 - a[:, 2] ** 2, 0, 1))
        elif kind == int(mujoco.mjtGeom.mjGEOM_MESH):
            m = model.geom_dataid[g]
            verts = model.mesh_vert[
                model.mesh_vertadr[m] : model.mesh_vertadr[m] + model.mesh_vertnum[m]
            ]
            out[:, k] = z + (a @ verts.T).min(1)
        else:
            raise ValueError(f"foot geom {g} has a type ({kind}) without a lowest point")
    return out


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
