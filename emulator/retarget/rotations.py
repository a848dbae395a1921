"""Vectorized unit-quaternion helpers (scalar first, w x y z), as MuJoCo stores them."""

from __future__ import annotations

import numpy as np


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b over the leading axes."""
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        axis=-1,
    )


_CONJ = np.array([1.0, -1.0, -1.0, -1.0])


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse of a unit quaternion)."""
    return q * _CONJ


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis times angle in [0, π]) of unit quaternions."""
    q = np.where(q[..., :1] < 0, -q, q)  # the short way round
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(s, q[..., 0])
    # angle / sin(angle / 2) tends to 2 as the rotation vanishes
    k = np.where(s > 1e-12, angle / np.maximum(s, 1e-12), 2.0)
    return v * k[..., None]


def quat_angle(q: np.ndarray) -> np.ndarray:
    """Rotation angle in [0, π] of unit quaternions."""
    return 2.0 * np.arctan2(np.linalg.norm(q[..., 1:], axis=-1), np.abs(q[..., 0]))


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Unit quaternions (w >= 0) of rotation matrices (..., 3, 3)."""
    from scipy.spatial.transform import Rotation

    shape = r.shape[:-2]
    q = Rotation.from_matrix(r.reshape(-1, 3, 3)).as_quat(scalar_first=True)
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(*shape, 4)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of unit quaternions (..., 4)."""
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        (
            np.stack((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)), -1),
            np.stack((2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)), -1),
            np.stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), -1),
        ),
        axis=-2,
    )
